"""``pytest -m gpu``: every case of tests/op_cases.py run on ``mx.gpu()`` against ``mx.cpu()``.

Needs a GPU build of MXNet (``mxnet-cu112``), an NVIDIA GPU and the CUDA operator library
(``SSDKIT_WITH_CUDA=1 pip install --no-build-isolation -e .``); elsewhere every test is skipped with the
reason. The comparison rule (exact outputs, ulp-level tolerances for values through expf / logf, counts for
cases that draw random samples) is op_cases.compare, the one the standalone self-test
(tools/gpu_selftest.sh) applies. The development machines have no GPU: these tests have never run there.
"""
import mxnet as mx
import pytest

import op_cases
from ssdkit import ops


def _skip_reason():
    if not ops.mxnet_has_cuda():
        return "MXNet is a CPU build; the GPU tests need mxnet-cu112 on a machine with an NVIDIA GPU"
    if mx.context.num_gpus() == 0:
        return "MXNet has CUDA but no GPU is visible"
    ops.load_library()
    if not ops.built_with_cuda():
        return "the loaded operator library has no CUDA kernels; build it with SSDKIT_WITH_CUDA=1"
    return None


pytestmark = pytest.mark.gpu
REASON = _skip_reason()


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
@pytest.mark.parametrize("case", op_cases.cases(), ids=lambda c: c.name)
def test_gpu_kernel_matches_cpu_kernel(case):
    if case.backward:
        want, want_grads = op_cases.run_case(case, mx.cpu(), with_grads=True)
        got, got_grads = op_cases.run_case(case, mx.gpu(0), with_grads=True)
        problems = op_cases.compare(case, got_grads, want_grads, tolerances=[op_cases.CLOSE] * len(want_grads))
    else:
        want = op_cases.run_case(case, mx.cpu())
        got = op_cases.run_case(case, mx.gpu(0))
        problems = []
    problems += op_cases.compare(case, got, want)
    assert not problems, "\n".join(problems)
