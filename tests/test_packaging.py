"""Installing ssdkit like a library: the wheel, its requirements, its build requirements.

``test_wheel_in_fresh_venv`` is the slow one (about 2-4 minutes on 2 cores): it copies the checkout's
files to a temporary folder (the in-tree ``ssdkit/lib`` and ``build/`` are left alone), creates a
virtual environment without ssdkit's dependencies, runs a plain ``pip wheel`` there (pip's build
isolation installs the mxnet/numpy that ``pyproject.toml`` names), installs the wheel with its
dependencies from the configured package index, and runs an operator from a folder outside the
checkout. ``pip install .`` is the same PEP 517 build followed by that install.
"""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_FOLDERS = ("ssdkit", "symbol", "dataset", "config")
# requirement name -> the module it provides
IMPORT_NAMES = {"opencv-python": "cv2", "pillow": "PIL", "mxnet-cu112": "mxnet"}
# imported by ssdkit only for an optional feature, and the file that pins it
EXTRA_IMPORTS = {"gluoncv": "requirements-gluoncv.txt", "horovod": "requirements-horovod.txt",
                 "onnx": "requirements-onnx.txt", "onnxruntime": "requirements-onnx.txt"}


def _requirement_lines(name):
    with open(os.path.join(ROOT, name)) as f:
        return [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]


def _pins(name):
    """``{package name (lower case): version}`` of the ``name==version`` lines of a requirements file."""
    pins = {}
    for line in _requirement_lines(name):
        if not line.startswith("-r"):
            package, _, version = line.partition("==")
            assert version, "%s: %r is not pinned with ==" % (name, line)
            pins[package.lower()] = version
    return pins


def _third_party_imports():
    """Top-level modules imported anywhere in the installed packages' sources, except ssdkit's own."""
    found = set()
    for folder in SOURCE_FOLDERS:
        for root, _dirs, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                with open(os.path.join(root, name)) as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        found.update(alias.name.split(".")[0] for alias in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "ssdkit"}


def test_requirements_are_what_ssdkit_imports():
    required = {IMPORT_NAMES.get(p, p) for p in _pins("requirements.txt")}
    imported = _third_party_imports()
    assert required - imported == set(), "required but never imported"
    assert imported - required == set(EXTRA_IMPORTS), "imported but not required (nor an extra)"
    for module, extra_file in EXTRA_IMPORTS.items():
        assert module in _pins(extra_file)


def test_requirement_files_stay_in_the_repository():
    for name in os.listdir(ROOT):
        if name.startswith(("requirements", "constraints")) and name.endswith(".txt"):
            for line in _requirement_lines(name):
                if line.startswith(("-r", "-c")):
                    target = line[2:].strip()
                    assert "/" not in target and os.path.exists(os.path.join(ROOT, target)), (name, line)
            with open(os.path.join(ROOT, name)) as f:
                assert "../" not in f.read(), "%s refers to a file outside the repository" % name


def test_build_requirements_match_the_runtime_pins():
    """The operator library is compiled against the mxnet (and numpy) that requirements.txt installs."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        build = tomllib.load(f)["build-system"]["requires"]
    pins = _pins("requirements.txt")
    build_pins = dict(r.lower().split("==") for r in build if "==" in r)
    assert build_pins == {"mxnet": pins["mxnet"], "numpy": pins["numpy"]}


def test_constraints_do_not_repeat_a_requirement():
    """Every pin is stated once: constraints.txt holds only what requirements*.txt do not name."""
    named = set()
    for name in os.listdir(ROOT):
        if name.startswith("requirements") and name.endswith(".txt"):
            named |= set(_pins(name))
    assert named & set(_pins("constraints.txt")) == set()


def _checkout_files():
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip("not a git checkout (%s); the wheel test copies the checkout's files" % err)
    return [p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(ROOT, p))]


def _run(cmd, cwd, env, timeout):
    tic = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, "%s failed:\n%s" % (" ".join(cmd), proc.stdout[-4000:])
    return proc.stdout, time.time() - tic


OPERATOR_CHECK = r"""
import json, os, sys
import mxnet as mx
import numpy as np
import ssdkit
import ssdkit.ops  # loads the operator library (import ssdkit alone does not)
from ssdkit.config import list_presets
from ssdkit.config.ssd_layout import network_names
from ssdkit.symbol.symbol_builder import get_symbol_train  # noqa: F401  (the mapped package imports)

x = mx.nd.zeros((1, 3, 5, 4))
ours = mx.nd.MultiBoxPrior(x, sizes=(0.5, 0.25), ratios=(1, 2, 0.5), clip=False)
reference = mx.contrib.nd.MultiBoxPrior(x, sizes=(0.5, 0.25), ratios=(1, 2, 0.5), clip=False)
print(json.dumps({"ssdkit": ssdkit.__file__, "library": ssdkit.ops.load_library(),
                  "version": ssdkit.__version__, "shape": list(ours.shape),
                  "max_diff": float(np.abs(ours.asnumpy() - reference.asnumpy()).max()),
                  "presets": list_presets(), "networks": network_names(), "cwd": os.getcwd()}))
"""


@pytest.mark.slow
def test_wheel_in_fresh_venv(tmp_path, record_property):
    src, dist, outside = tmp_path / "src", tmp_path / "dist", tmp_path / "outside"
    for rel in _checkout_files():
        os.makedirs(os.path.dirname(src / rel), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), src / rel)
    outside.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SSDKIT_WITH_CUDA", "VIRTUAL_ENV", "PIP_NO_BUILD_ISOLATION")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", str(tmp_path / "venv")], tmp_path, env, 300)
    python = str(tmp_path / "venv" / "bin" / "python")
    _out, build_s = _run([python, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(src)], src, env, 900)
    wheels = sorted(p.name for p in dist.iterdir())
    assert len(wheels) == 1 and re.match(r"ssdkit-[\w.]+-cp3\d+-cp3\d+-linux_\w+\.whl$", wheels[0]), wheels
    with zipfile.ZipFile(dist / wheels[0]) as whl:
        names = set(whl.namelist())
    assert "ssdkit/lib/libssdkit_ops.so" in names
    assert "ssdkit/lib/libssdkit_ops_cuda.so" not in names          # the CUDA build stays opt-in
    assert "ssdkit/config/presets/tiny_256_synthetic.toml" in names
    assert "ssdkit/config/networks/lite.toml" in names               # the SSD network presets
    assert {"ssdkit/api/train.py", "ssdkit/engine/trainer.py", "ssdkit/symbol/symbol_builder.py",
            "ssdkit/dataset/__init__.py"} <= names
    assert not any(n.startswith(("src/", "tests/", "symbol/", "dataset/", "config/")) for n in names)

    _out, install_s = _run([python, "-m", "pip", "install", str(dist / wheels[0])], outside, env, 900)
    out, _ = _run([python, "-c", OPERATOR_CHECK], outside, env, 300)
    report = json.loads(out.strip().splitlines()[-1])
    site = str(tmp_path / "venv" / "lib")
    assert report["ssdkit"].startswith(site) and report["library"].startswith(site), report
    assert report["library"].endswith("ssdkit/lib/libssdkit_ops.so")
    assert report["version"] in wheels[0]
    assert report["shape"] == [1, 5 * 4 * 4, 4]
    assert report["max_diff"] <= 1e-5
    assert "tiny_256_synthetic" in report["presets"]
    assert "lite" in report["networks"]
    record_property("wheel_build_s", round(build_s, 1))
    record_property("wheel_install_s", round(install_s, 1))
    print("pip wheel: %.0f s, pip install of the wheel and its dependencies: %.0f s" % (build_s, install_s))
