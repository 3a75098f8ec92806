"""Find, check and load ssdkit's compiled MXNet operator library.

Importing this module calls :func:`load_library` (every module that builds graphs or runs models
imports it; ``import ssdkit`` alone does not), after which ``mx.nd.MultiBoxPrior`` and
``mx.sym.MultiBoxPrior`` (and the other ssdkit operators) exist. The CPU library
``ssdkit/lib/libssdkit_ops.so`` is used unless MXNet was built with CUDA and the CUDA library
``libssdkit_ops_cuda.so`` was built (``SSDKIT_WITH_CUDA=1``); the two register the same operators,
so exactly one is loaded.

Threads: MXNet runs OpenMP with one thread inside operators on small machines. Our kernels use
:func:`num_threads` threads instead: the user's ``OMP_NUM_THREADS`` / ``MXNET_OMP_MAX_THREADS`` if
set (the smaller of the two), otherwise every core this process may use.
"""
import ctypes
import os

import mxnet as mx

from ssdkit import _build

LIB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")
_SOURCE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "operators")

_state = {"path": None, "handle": None}


class OperatorLibraryError(RuntimeError):
    """The operator library is missing, stale or built for another MXNet."""


def mxnet_has_cuda():
    """True if the running MXNet was built with CUDA."""
    return bool(mx.runtime.Features().is_enabled("CUDA"))


def library_path(cuda=None):
    """Absolute path of the library to load (``cuda=None``: choose by :func:`mxnet_has_cuda`)."""
    if cuda is None:
        cuda = mxnet_has_cuda() and os.path.exists(os.path.join(LIB_DIR, _build.CUDA_LIBRARY))
    return os.path.join(LIB_DIR, _build.CUDA_LIBRARY if cuda else _build.CPU_LIBRARY)


def check_library(path, source_dir=_SOURCE_DIR, mxnet_version=None):
    """Raise :class:`OperatorLibraryError` unless ``path`` exists, matches this MXNet and the sources.

    Parameters
    ----------
    path : str, the library
    source_dir : str, operator sources to compare with; checked only if the folder exists (a
        development or editable install; an installed wheel carries no sources)
    mxnet_version : str, the MXNet the library must be built for (default: the running one)

    Returns
    -------
    ctypes.CDLL
        A handle to the library, used for its build-identity and thread functions.
    """
    if not os.path.exists(path):
        raise OperatorLibraryError(
            "ssdkit operator library not found at %s. Build it from the ssdkit checkout with: %s"
            % (path, _build.REBUILD_COMMAND))
    try:
        handle = ctypes.CDLL(path)
        handle.ssdkit_mxnet_version.restype = ctypes.c_char_p
    except (OSError, AttributeError) as err:
        raise OperatorLibraryError("%s is not a usable ssdkit operator library (%s). Rebuild it with: %s"
                                   % (path, err, _build.REBUILD_COMMAND)) from err
    handle.ssdkit_source_hash.restype = ctypes.c_char_p
    mxnet_version = mxnet_version or mx.__version__
    built_for = handle.ssdkit_mxnet_version().decode()
    if built_for != mxnet_version:
        raise OperatorLibraryError(
            "%s was built against MXNet %s but MXNet %s is running. Rebuild it with: %s"
            % (path, built_for, mxnet_version, _build.REBUILD_COMMAND))
    if source_dir and os.path.isdir(source_dir):
        built_hash = handle.ssdkit_source_hash().decode()
        current = _build.source_hash(source_dir)
        if built_hash != current:
            raise OperatorLibraryError(
                "%s is stale: src/operators changed since it was built (built %s, sources %s). "
                "Rebuild it with: %s" % (path, built_hash, current, _build.REBUILD_COMMAND))
    return handle


def load_library(path=None):
    """Check and load the operator library once per process; return its absolute path."""
    if _state["path"] is not None:
        return _state["path"]
    path = os.path.abspath(path or library_path())
    handle = check_library(path)
    mx.library.load(path, verbose=False)
    _state["path"], _state["handle"] = path, handle
    return path


def _handle():
    if _state["handle"] is None:
        load_library()
    return _state["handle"]


def num_threads():
    """Threads ssdkit's CPU kernels use."""
    return int(_handle().ssdkit_get_num_threads())


def set_num_threads(n):
    """Set the threads ssdkit's CPU kernels use (``n >= 1``)."""
    n = int(n)
    if n < 1:
        raise ValueError("set_num_threads needs n >= 1, got %d" % n)
    _handle().ssdkit_set_num_threads(ctypes.c_int(n))


def threads_used():
    """Threads the most recent parallel region of an ssdkit CPU kernel really ran with."""
    return int(_handle().ssdkit_threads_used())


def built_with_cuda():
    """True if the loaded library carries CUDA kernels."""
    return bool(_handle().ssdkit_with_cuda())


load_library()      # the operators exist once this module is imported (see the module docstring)
