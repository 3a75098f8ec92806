"""ssdkit: SSD and FPN object detection on Apache MXNet 1.9.

Importing ssdkit loads its compiled operators (``mx.nd.MultiBoxPrior`` and friends).
"""
from ssdkit.ops import load_library

__version__ = "0.1.0"

load_library()

from ssdkit.detector import Detector  # noqa: E402  (needs the operators loaded)

__all__ = ["Detector", "load_library"]
