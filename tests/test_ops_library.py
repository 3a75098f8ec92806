"""The operator library: loading, build identity checks and the thread policy."""
import os
import subprocess
import sys
import textwrap

import pytest

import ssdkit
from ssdkit import _build, ops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, env_overrides):
    """Run `code` in a fresh interpreter with the thread variables cleared, then `env_overrides`."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS")}
    env.update(env_overrides)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


_THREADS_PROBE = """
    import os, mxnet as mx, ssdkit
    from ssdkit import ops
    # A map large enough that the parallel region really starts.
    mx.nd.MultiBoxPrior(mx.nd.zeros((1, 1, 64, 64)), sizes=(0.1, 0.2), ratios=(1, 2)).wait_to_read()
    print(ops.num_threads(), ops.threads_used(), len(os.sched_getaffinity(0)))
"""


def test_uses_all_cores_by_default():
    configured, used, cores = (int(v) for v in _python(_THREADS_PROBE, {}).split())
    assert configured == cores
    assert used == cores


@pytest.mark.parametrize("env, expected", [
    ({"OMP_NUM_THREADS": "1"}, 1),
    ({"MXNET_OMP_MAX_THREADS": "1"}, 1),
    ({"OMP_NUM_THREADS": "3", "MXNET_OMP_MAX_THREADS": "2"}, 2),
    ({"OMP_NUM_THREADS": "3"}, 3),
])
def test_respects_explicit_thread_settings(env, expected):
    configured, used, _ = (int(v) for v in _python(_THREADS_PROBE, env).split())
    assert configured == expected
    assert used == expected


def test_set_num_threads_changes_the_kernels():
    out = _python("""
        import mxnet as mx, ssdkit
        from ssdkit import ops
        ops.set_num_threads(1)
        mx.nd.MultiBoxPrior(mx.nd.zeros((1, 1, 64, 64)), sizes=(0.1,)).wait_to_read()
        print(ops.threads_used())
    """, {"OMP_NUM_THREADS": "2"})
    assert out == "1"
    with pytest.raises(ValueError):
        ops.set_num_threads(0)


def test_loaded_library_identity():
    path = ops.load_library()
    assert os.path.isabs(path) and path.endswith(_build.CPU_LIBRARY)
    assert not ops.built_with_cuda()
    assert ssdkit.ops.load_library() == path  # loading twice is a no-op


def test_missing_library_names_the_rebuild_command(tmp_path):
    with pytest.raises(ops.OperatorLibraryError, match="pip install --no-build-isolation -e"):
        ops.check_library(str(tmp_path / "libssdkit_ops.so"))


def _fake_library(tmp_path, version, source_hash):
    src = tmp_path / "fake.c"
    src.write_text('const char* ssdkit_mxnet_version(void) { return "%s"; }\n'
                   'const char* ssdkit_source_hash(void) { return "%s"; }\n' % (version, source_hash))
    lib = tmp_path / "libfake.so"
    subprocess.run(["gcc", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    return str(lib)


def test_library_built_for_another_mxnet_is_refused(tmp_path):
    lib = _fake_library(tmp_path, "1.8.0", "0" * 16)
    with pytest.raises(ops.OperatorLibraryError, match="built against MXNet 1.8.0.*Rebuild"):
        ops.check_library(lib, source_dir=None)


def test_stale_library_is_refused(tmp_path):
    sources = tmp_path / "operators"
    (sources / "op").mkdir(parents=True)
    (sources / "op" / "op.cc").write_text("int x;\n")
    good_hash = _build.source_hash(str(sources))
    import mxnet as mx
    lib = _fake_library(tmp_path, mx.__version__, good_hash)
    ops.check_library(lib, source_dir=str(sources))   # matches: no error
    (sources / "op" / "op.cc").write_text("int y;\n")
    with pytest.raises(ops.OperatorLibraryError, match="stale"):
        ops.check_library(lib, source_dir=str(sources))


def test_not_a_library_is_refused(tmp_path):
    bogus = tmp_path / "libssdkit_ops.so"
    bogus.write_bytes(b"not an ELF file")
    with pytest.raises(ops.OperatorLibraryError, match="not a usable"):
        ops.check_library(str(bogus))


def test_cpu_library_never_needs_cuda():
    proc = subprocess.run(["readelf", "-d", ops.library_path(cuda=False)], stdout=subprocess.PIPE, text=True,
                          check=True)
    needed = [line for line in proc.stdout.splitlines() if "NEEDED" in line]
    assert any("libgomp" in line for line in needed)        # the check sees real dependencies
    assert not any("cuda" in line for line in needed), needed
