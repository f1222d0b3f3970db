"""The AOTInductor bundle the export tests share, cached across sessions (compiling takes ~1.5 min).

One bundle of the bundled ShapeWorld model (dynamic shapes, --portable, short side 128, the six
colours as --labels) lives under `$XDG_CACHE_HOME/zeroseg/test-aoti/<key>/`, the key hashing the
checkpoint, the torch version and every Python source that shapes the package (zeroseg/, kernels/,
export/), so any change to them rebuilds it. pytest-xdist workers wait on a file lock for the one
that builds. An empty cache works, just slower.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
LABELS = [["red"], ["green"], ["blue"], ["yellow"], ["magenta"], ["cyan"]]
SHORT_SIDE = 128


def _key(checkpoint: Path) -> str:
    digest = hashlib.sha256(f"{torch.__version__}|{SHORT_SIDE}|{LABELS}".encode())
    digest.update(checkpoint.read_bytes())
    for sub in ("zeroseg", "kernels", "export"):
        for path in sorted((ROOT / sub).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def cached_bundle() -> Path:
    """The shared bundle folder, exported on first use."""
    from zeroseg.export.aoti import AotiSettings, export_aoti
    from zeroseg.shapeworld.bundled import bundled_checkpoint

    ckpt = bundled_checkpoint()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zeroseg" / "test-aoti"
    folder = base / _key(ckpt)
    folder.mkdir(parents=True, exist_ok=True)
    bundle = folder / "bundle"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (bundle / "manifest.json").is_file():
            settings = AotiSettings(checkpoint=ckpt, out=bundle, labels=LABELS, short_side=SHORT_SIDE,
                                    dynamic=True, portable=True, force=True, progress=False)  # fmt: skip
            export_aoti(settings, log=lambda *_: None)
    return bundle
