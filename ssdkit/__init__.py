"""ssdkit: SSD and FPN object detection on Apache MXNet 1.9.

``import ssdkit`` (and its numpy layers: :mod:`ssdkit.boxes`, :mod:`ssdkit.anchors`,
:mod:`ssdkit.config`, :mod:`ssdkit.reference`) does not load the compiled operators. They load on first
use: with :mod:`ssdkit.ops`, which every module that builds graphs or runs models imports
(:mod:`ssdkit.symbol`, :mod:`ssdkit.api`, :class:`ssdkit.Detector`). Before calling ``mx.nd.<op>``
or ``mx.sym.load`` on a graph holding ssdkit's operators yourself, ``import ssdkit.ops`` (or call
:func:`ssdkit.load_library`).
"""

__version__ = "0.1.0"

__all__ = ["Detector", "load_library"]


def load_library(path=None):
    """Check and load the operator library (once per process); see :func:`ssdkit.ops.load_library`."""
    from ssdkit.ops import load_library as load

    return load(path)


def __getattr__(name):
    # ssdkit.Detector without importing MXNet and the operators at ``import ssdkit``
    if name == "Detector":
        from ssdkit.detector import Detector

        return Detector
    raise AttributeError("module 'ssdkit' has no attribute %r" % name)
