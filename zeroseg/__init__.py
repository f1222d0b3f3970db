"""ZeroSeg: open-vocabulary semantic segmentation distilled from CLIP without human labels.

The public API is imported lazily (`zeroseg.Segmenter`, ...) so that `import zeroseg` and the CLI's
`--help` stay fast and do not load torch.
"""

import os
from importlib import import_module

# oneMKL (torch's CPU BLAS) returns bit-identical results run to run only in its conditional
# numerical reproducibility mode: without it, two identical runs on one Intel host can differ in the
# last bits (the teacher cache's reproducibility test saw it). The mode is read once, at MKL's first
# call, so it is set here, before anything of zeroseg imports torch; a value the user set is kept.
os.environ.setdefault("MKL_CBWR", "AUTO")

from zeroseg.errors import ZerosegError  # noqa: E402

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_LAZY = {
    "load": "zeroseg.export.loader",
    "Segmenter": "zeroseg.infer.segmenter",
    "MaskCLIPSegmenter": "zeroseg.infer.maskclip",
    "load_checkpoint": "zeroseg.checkpoint",
    "load_teacher": "zeroseg.teacher.load",
    "evaluate": "zeroseg.evaluation.evaluate",
    "VOCDataset": "zeroseg.data.voc",
    "ZeroSegStudent": "zeroseg.model.student",
    "student_preset": "zeroseg.model.config",
    "bundled_checkpoint": "zeroseg.bundled",
}
__all__ = ["ZerosegError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zeroseg' has no attribute {name!r}")
