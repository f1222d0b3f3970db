"""ZeroSeg: open-vocabulary semantic segmentation distilled from CLIP without human labels."""

from zeroseg.errors import ZerosegError

__version__ = "0.1.0"
__all__ = ["ZerosegError", "__version__"]
