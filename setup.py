"""Install ssdkit and build its MXNet operator library.

``pip install .``, ``pip wheel .`` and ``pip install -e .`` compile every C++ source under
``src/operators/`` into ``ssdkit/lib/libssdkit_ops.so`` against the headers of the MXNet that
``pyproject.toml`` names as a build requirement (pip installs it into the isolated build
environment). ``pip install --no-build-isolation -e .`` (what ``tools/setup_env.sh`` does) builds
against the environment's own MXNet instead. With ``SSDKIT_WITH_CUDA=1`` it also builds
``ssdkit/lib/libssdkit_ops_cuda.so`` (nvcc), loaded only by a CUDA-enabled MXNet.

Dependencies come from the requirements files (one pin each): ``requirements.txt`` (what ssdkit
imports), the extras ``gpu`` (``requirements-gpu.txt``), ``gluoncv`` (``requirements-gluoncv.txt``),
``onnx`` (``requirements-onnx.txt``) and ``test`` (``requirements-test.txt``). The version is
``__version__`` in ``ssdkit/__init__.py``.
"""
import importlib.util
import os
import re

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
SRC_DIR = os.path.join(HERE, "src", "operators")


def _load_build_module():
    # ssdkit/__init__ needs the library we are about to build, so load the builder by path.
    spec = importlib.util.spec_from_file_location("ssdkit_build", os.path.join(HERE, "ssdkit", "_build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_build = _load_build_module()


class BuildOperators(build_ext):
    """Builds plain shared libraries (not Python extension modules) with g++ / nvcc."""

    def get_ext_filename(self, fullname):
        return os.path.join(*fullname.split(".")) + ".so"

    def build_extension(self, ext):
        out_path = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        jobs = max(1, os.cpu_count() or 1)
        if ext.name.endswith("_cuda"):
            _build.build_cuda(SRC_DIR, out_path, jobs=jobs)
        else:
            _build.build_cpu(SRC_DIR, out_path, jobs=jobs)


def _extensions():
    sources = [os.path.relpath(p, HERE) for p in _build.source_files(SRC_DIR)]
    exts = [Extension("ssdkit.lib.libssdkit_ops", sources=sources)]
    if os.environ.get("SSDKIT_WITH_CUDA", "0") == "1":
        exts.append(Extension("ssdkit.lib.libssdkit_ops_cuda", sources=sources))
    return exts


def _packages():
    """ssdkit and its subpackages, plus symbol/, dataset/, config/ (installed as ssdkit.symbol, ...)."""
    found = []
    for folder, name in (("ssdkit", ""), ("symbol", "ssdkit."), ("dataset", "ssdkit."), ("config", "ssdkit.")):
        for root, dirs, files in os.walk(os.path.join(HERE, folder)):
            dirs.sort()
            if "__init__.py" in files:
                found.append(name + os.path.relpath(root, HERE).replace(os.sep, "."))
    return found


def _requirements(name):
    """Requirement lines of ``name``, following ``-r other.txt`` includes, in file order."""
    found = []
    with open(os.path.join(HERE, name)) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line.startswith("-r"):
                found += [r for r in _requirements(line[2:].strip()) if r not in found]
            elif line and line not in found:
                found.append(line)
    return found


def _extra(name):
    """An extra: the lines of ``name`` that ``requirements.txt`` does not already require."""
    base = _requirements("requirements.txt")
    return [r for r in _requirements(name) if r not in base]


def _version():
    with open(os.path.join(HERE, "ssdkit", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


setup(
    name="ssdkit",
    version=_version(),
    description="SSD and FPN object detection on Apache MXNet 1.9 with fast C++/CUDA operators",
    python_requires=">=3.11",
    packages=_packages(),
    package_dir={"ssdkit.symbol": "symbol", "ssdkit.dataset": "dataset", "ssdkit.config": "config"},
    package_data={"ssdkit.config": ["presets/*.toml", "networks/*.toml"]},
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildOperators},
    # A CUDA build pairs with mxnet-cu112 (the "gpu" extra) instead of the CPU wheel.
    install_requires=[r for r in _requirements("requirements.txt")
                      if not (r.startswith("mxnet") and os.environ.get("SSDKIT_WITH_CUDA") == "1")],
    extras_require={
        "gpu": _extra("requirements-gpu.txt"),
        "gluoncv": _extra("requirements-gluoncv.txt"),
        "onnx": _extra("requirements-onnx.txt"),
        "test": _extra("requirements-test.txt"),
    },
    zip_safe=False,
)
