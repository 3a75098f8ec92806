"""The CUDA sources that are compiled. Compiling and linking them all (every .cu by nvcc, every .cc with
SSDKIT_WITH_CUDA by g++, into one program with cudart) is done by tests/test_gpu_selftest.py, which builds
the standalone self-test; no GPU is needed for that, and none is used."""
import os

from ssdkit import _build

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(REPO, "src", "operators")
CU_FILES = _build.source_files(SRC, (".cu",))


def test_there_are_cuda_sources():
    # The anchor grid kernel (MultiBoxPrior, RPNAnchors) lives in common/anchor_grid.cu.
    assert any(p.endswith(os.path.join("common", "anchor_grid.cu")) for p in CU_FILES)


def test_fpn_target_kernels_are_among_the_compiled_sources():
    for name in ("common/anchor_grid.cu", "rpn_target/rpn_target.cu", "proposal_target/proposal_target.cu"):
        assert os.path.join(SRC, *name.split("/")) in CU_FILES, name


def test_two_stage_cuda_sources_are_compiled():
    """FPNProposal and RCNNDetection have CUDA kernels (compiled by test_gpu_selftest; never run here: no GPU)."""
    for rel in (os.path.join("fpn_proposal", "fpn_proposal.cu"), os.path.join("rcnn_detection", "rcnn_detection.cu")):
        assert os.path.join(SRC, rel) in CU_FILES
