"""Compile-only check of every CUDA source with nvcc (no GPU is needed, none is used)."""
import os
import shutil
import subprocess

import pytest

from ssdkit import _build

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "src", "operators")
NVCC = shutil.which("nvcc")
CU_FILES = _build.source_files(SRC, (".cu",))


def test_there_are_cuda_sources():
    # The anchor grid kernel (MultiBoxPrior, RPNAnchors) lives in common/anchor_grid.cu.
    assert any(p.endswith(os.path.join("common", "anchor_grid.cu")) for p in CU_FILES)


def test_fpn_target_kernels_are_among_the_compiled_sources():
    for name in ("common/anchor_grid.cu", "rpn_target/rpn_target.cu", "proposal_target/proposal_target.cu"):
        assert os.path.join(SRC, *name.split("/")) in CU_FILES, name


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH; CUDA sources cannot be compiled here")
@pytest.mark.parametrize("cu", CU_FILES, ids=lambda p: os.path.relpath(p, SRC))
def test_nvcc_compiles(cu, tmp_path):
    arch = _build.CUDA_ARCHS[0]
    cmd = [NVCC] + list(_build.NVCC_FLAGS) + ["-Xcompiler", "-fPIC", "-I" + SRC, "-DSSDKIT_WITH_CUDA",
                                               "-gencode", "arch=compute_%s,code=sm_%s" % (arch, arch),
                                               "-c", cu, "-o", str(tmp_path / "k.o")]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout
    assert (tmp_path / "k.o").stat().st_size > 0


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH; CUDA sources cannot be compiled here")
def test_glue_compiles_with_cuda_enabled(tmp_path):
    """The .cc files with SSDKIT_WITH_CUDA defined (their GPU registration paths) compile with g++."""
    mx_version, mx_root = _build.mxnet_root()
    flags = ["-std=c++17", "-fPIC", "-fsyntax-only", "-I" + os.path.join(mx_root, "include"), "-I" + SRC,
             "-DSSDKIT_WITH_CUDA", '-DSSDKIT_MXNET_VERSION="%s"' % mx_version, '-DSSDKIT_SOURCE_HASH="x"',
             "-fopenmp"]
    for cc in _build.source_files(SRC, (".cc",)):
        proc = subprocess.run(["g++"] + flags + [cc], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=600)
        assert proc.returncode == 0, cc + "\n" + proc.stdout


def test_two_stage_cuda_sources_are_compiled():
    """FPNProposal and RCNNDetection have CUDA kernels, compiled above (never run here: no GPU)."""
    for rel in (os.path.join("fpn_proposal", "fpn_proposal.cu"), os.path.join("rcnn_detection", "rcnn_detection.cu")):
        assert os.path.join(SRC, rel) in CU_FILES
