"""Install ssdkit and build its MXNet operator library.

``pip install --no-build-isolation -e .`` (or ``.``) compiles every C++ source under
``src/operators/`` into ``ssdkit/lib/libssdkit_ops.so``. With ``SSDKIT_WITH_CUDA=1`` it also builds
``ssdkit/lib/libssdkit_ops_cuda.so`` (nvcc), loaded only by a CUDA-enabled MXNet.
"""
import importlib.util
import os

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
    """ssdkit, plus symbol/, dataset/, config/ (installed as ssdkit.symbol, ...) and their subfolders."""
    found = ["ssdkit", "ssdkit.lib"]
    for folder in ("symbol", "dataset", "config"):
        for root, _dirs, files in os.walk(os.path.join(HERE, folder)):
            if "__init__.py" in files:
                rel = os.path.relpath(root, HERE).replace(os.sep, ".")
                found.append("ssdkit." + rel)
    return found


def _requirements(name):
    with open(os.path.join(HERE, name)) as f:
        return [line.split("#")[0].strip() for line in f
                if line.split("#")[0].strip() and not line.startswith("-r")]


setup(
    name="ssdkit",
    version="0.1.0",
    description="SSD and FPN object detection on Apache MXNet 1.9 with fast C++/CUDA operators",
    python_requires=">=3.11",
    packages=_packages(),
    package_dir={"ssdkit.symbol": "symbol", "ssdkit.dataset": "dataset", "ssdkit.config": "config"},
    package_data={"ssdkit.config": ["presets/*.toml"]},
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildOperators},
    # A CUDA build pairs with mxnet-cu112 (the "gpu" extra) instead of the CPU wheel.
    install_requires=[r for r in _requirements("requirements.txt")
                      if not (r.startswith("mxnet") and os.environ.get("SSDKIT_WITH_CUDA") == "1")],
    extras_require={
        "gpu": ["mxnet-cu112==1.9.1"],
        "test": ["pytest==9.2.0"],
    },
    zip_safe=False,
)
