"""What a manifest records about the software and files behind an export (torch-free to import)."""

from __future__ import annotations

import platform
from pathlib import Path

from zeroseg.export.core.manifest import MANIFEST_NAME, sha256_file


def versions() -> dict[str, str | None]:
    """Versions of everything that shaped the graphs."""
    import numpy as np
    import onnx
    import onnxruntime
    import torch

    import zeroseg

    try:
        import onnxscript

        onnxscript_version = onnxscript.__version__
    except ImportError:
        onnxscript_version = None
    return {
        "zeroseg": zeroseg.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": onnxscript_version,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file in the bundle folder but the manifest (sub-folders are work files)."""
    return {
        p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_NAME
    }
