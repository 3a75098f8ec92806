"""The standalone operator self-test (tests/gpu_selftest, run on a GPU by tools/gpu_selftest.sh) builds,
links and checks itself here.

With nvcc on PATH the program is built as on a GPU machine (every src/operators .cu and .cc with
SSDKIT_WITH_CUDA, linked with cudart; one architecture, sm_80, to keep the build short), which also
proves that every CUDA kernel compiles and links. Without nvcc its CPU half is built with g++ alone.
Either way its CPU half runs here: the CPU kernels, called through lib_api's registry as the program
calls them, must reproduce MXNet's CPU outputs of every case of tests/op_cases.py bit for bit, and a
corrupted expected value must be reported. No GPU exists on the development machines, so the GPU
half has not run here; these tests assert that the program says so (exit status 3).
"""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import op_cases
from ssdkit import _build

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "src", "operators")
SELFTEST_DIR = os.path.join(REPO, "tests", "gpu_selftest")
NVCC = shutil.which("nvcc")


def _gpu_present():
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    proc = subprocess.run([smi, "-L"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc.returncode == 0 and "GPU" in proc.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(program path, case file path, built with CUDA?)."""
    folder = tmp_path_factory.mktemp("selftest")
    cases = str(folder / "cases.txt")
    op_cases.write_case_file(cases)
    program = str(folder / _build.SELFTEST_PROGRAM)
    _build.build_selftest(SRC, SELFTEST_DIR, program, cuda=NVCC is not None, archs=(_build.CUDA_ARCHS[0],),
                          jobs=2, optimize="-O0")
    return program, cases, NVCC is not None


def _run(program, *args):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run([program] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, timeout=300)


def test_cases_cover_every_registered_operator():
    registered = set()
    for path in _build.source_files(SRC, (".cc",)):
        with open(path) as f:
            registered |= set(re.findall(r"REGISTER_OP\((\w+)\)", f.read()))
    assert registered == {c.op for c in op_cases.cases()}


def test_cpu_half_reproduces_mxnet_outputs_bit_for_bit(built):
    program, cases, _ = built
    proc = _run(program, cases, "--cpu-only")
    assert proc.returncode == 0, proc.stdout
    for case in op_cases.cases():
        name = case.name + (" (+grad)" if case.backward else "")
        assert re.search(r"^%s\s+%s\s+ok " % (re.escape(name), case.op), proc.stdout, re.M), proc.stdout
    assert "%d cases, 0 failed" % len(op_cases.cases()) in proc.stdout


def test_a_wrong_expected_value_is_reported(built, tmp_path):
    program, cases, _ = built
    with open(cases) as f:
        lines = f.read().split("\n")
    start = lines.index("case det_peaked MultiBoxDetection -1 1")
    out_at = lines.index("outputs 1", start) + 2  # hex data of the first output
    values = np.frombuffer(bytes.fromhex(lines[out_at]), dtype="<f4").copy()
    values[1] += 0.25  # the first row's score
    lines[out_at] = values.tobytes().hex()
    broken = tmp_path / "broken.txt"
    broken.write_text("\n".join(lines))
    proc = _run(program, str(broken), "--cpu-only", "--case", "det_peaked", "--case", "det_no_nms")
    assert proc.returncode == 1, proc.stdout
    assert re.search(r"^det_peaked\s+MultiBoxDetection\s+MISMATCH", proc.stdout, re.M), proc.stdout
    assert "output 0: 1 of" in proc.stdout
    assert re.search(r"^det_no_nms\s+MultiBoxDetection\s+ok ", proc.stdout, re.M), proc.stdout


def test_bad_case_file_is_a_usage_error(built, tmp_path):
    program, _, _ = built
    bad = tmp_path / "bad.txt"
    bad.write_text("not a case file\n")
    proc = _run(program, str(bad))
    assert proc.returncode == 2 and "not an ssdkit case file" in proc.stdout


def test_gpu_half_runs_only_where_a_gpu_is(built):
    program, cases, with_cuda = built
    proc = _run(program, cases, "--case", "target_mining", "--case", "det_dense_topk")
    if with_cuda and _gpu_present():
        assert proc.returncode == 0, proc.stdout
        assert proc.stdout.startswith("GPU: ")
    else:
        assert proc.returncode == 3, proc.stdout
        reason = "no CUDA device found" if with_cuda else "this build has no CUDA"
        assert "GPU half: NOT RUN: " + reason in proc.stdout


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: the CUDA half of the self-test cannot be built here")
def test_every_cuda_kernel_is_linked_into_the_program(built):
    program, _, with_cuda = built
    assert with_cuda
    symbols = subprocess.run(["nm", "-C", program], stdout=subprocess.PIPE, text=True).stdout
    for launcher in ("MultiBoxTargetForwardGPU", "MultiBoxDetectionForwardGPU", "FillAnchorGridGPU",
                     "RPNTargetForwardGPU", "FPNProposalForwardGPU", "ProposalTargetForwardGPU",
                     "RCNNDetectionForwardGPU", "MultiLevelROIAlignForwardGPU", "MultiLevelROIAlignBackwardGPU",
                     "MaskTargetForwardGPU"):
        assert launcher in symbols, launcher
