"""The AOTInductor and ExecuTorch bundles the export tests share, cached across sessions (minutes each).

One bundle of the bundled ShapeWorld model (dynamic shapes, --portable, short side 128, the six
colours as --labels) lives under `$XDG_CACHE_HOME/zeroseg/test-aoti/<key>/`, the key hashing the
checkpoint, the torch version, the head and every Python source that shapes the package (zeroseg/,
kernels/, export/), so any change to them rebuilds it. `cached_bundle("dense")` is the same package
with the dense head inside (`--head dense`), and `cached_executorch_bundle()` the ExecuTorch export
(fp32 + int8), are cached the same way. pytest-xdist workers wait on a
file lock for the one that builds (`zeroseg.utils.cache.build_once`). An empty cache works, just slower.
"""

from __future__ import annotations

from pathlib import Path

import torch

from zeroseg.utils.cache import build_once, cache_dir, source_digest

ROOT = Path(__file__).resolve().parent.parent
LABELS = [["red"], ["green"], ["blue"], ["yellow"], ["magenta"], ["cyan"]]
SHORT_SIDE = 128


def _key(checkpoint: Path, head: str = "paper") -> str:
    """The digest of the torch version, the export settings, the checkpoint and the sources."""
    sources = [
        path for sub in ("zeroseg", "kernels", "export") for path in sorted((ROOT / sub).rglob("*.py"))
    ]
    return source_digest(
        f"{torch.__version__}|{SHORT_SIDE}|{LABELS}" + ("" if head == "paper" else f"|{head}"),
        checkpoint.read_bytes(),
        *sources,
        root=ROOT,
    )


def cached_bundle(head: str = "paper") -> Path:
    """The shared bundle folder with `head` inside ("paper" or "dense"), exported on first use."""
    from zeroseg.bundled import bundled_checkpoint
    from zeroseg.export.aoti.export import AotiSettings, export_aoti

    ckpt = bundled_checkpoint()

    def build(out: Path) -> None:
        settings = AotiSettings(checkpoint=ckpt, out=out, labels=LABELS, short_side=SHORT_SIDE,
                                dynamic=True, portable=True, force=True, progress=False,
                                head=head)  # fmt: skip
        export_aoti(settings, log=lambda *_: None)

    return build_once(cache_dir("test-aoti", _key(ckpt, head), "bundle"), build)


#: The ExecuTorch test bundle's static aspects: the bench's 4:3 images, ShapeWorld's squares and
#: matplotlib's grace_hopper.jpg (512 x 600, a real photograph).
ET_ASPECTS = ((4, 3), (1, 1), (512, 600))


def cached_executorch_bundle() -> Path:
    """The shared ExecuTorch bundle (fp32 + int8, `ET_ASPECTS`, short side 128, the six colours)."""
    from zeroseg.bundled import bundled_checkpoint
    from zeroseg.export.executorch.export import ExecuTorchSettings, export_executorch

    ckpt = bundled_checkpoint()

    def build(out: Path) -> None:
        settings = ExecuTorchSettings(checkpoint=ckpt, out=out, labels=LABELS, short_side=SHORT_SIDE,
                                      int8=True, aspects=ET_ASPECTS, force=True, progress=False)  # fmt: skip
        export_executorch(settings, log=lambda *_: None)

    return build_once(cache_dir("test-executorch", _key(ckpt, f"et{ET_ASPECTS}"), "bundle"), build)
