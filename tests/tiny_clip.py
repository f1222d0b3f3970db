"""Tiny randomly initialised open_clip CLIPs and small images for the teacher/text/data/cache tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

TINY_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def tiny_clip(seed: int = 0, **overrides) -> open_clip.model.CLIP:
    """A tiny CLIP in eval mode; overrides replace top-level config entries (e.g. vision_cfg=...)."""
    torch.manual_seed(seed)
    cfg = {**TINY_CFG, **overrides}
    return open_clip.model.CLIP(**cfg).eval()


def write_images(folder: Path, count: int, *, seed: int = 0, corrupt: tuple[str, ...] = ()) -> list[str]:
    """Random RGB images of varied sizes and formats under `folder` (some in a sub-folder); returns keys."""
    rng = np.random.default_rng(seed)
    keys = []
    for i in range(count):
        rel = f"sub/{i:03d}.png" if i % 3 == 0 else f"{i:03d}.jpg" if i % 3 == 1 else f"{i:03d}.webp"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (30 + 3 * i, 40 + 2 * (i % 5), 3), dtype=np.uint8)
        Image.fromarray(arr).save(path, **({"quality": 95} if rel.endswith(".jpg") else {}))
        keys.append(rel)
    for rel in corrupt:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"\xff\xd8 definitely not a jpeg")
        keys.append(rel)
    return sorted(keys)


def last_block_input(visual, x: torch.Tensor) -> torch.Tensor:
    """The tokens entering an open_clip tower's last block on input x (a forward pre-hook)."""
    seen = []
    handle = visual.transformer.resblocks[-1].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    try:
        visual(x)
    finally:
        handle.remove()
    return seen[0]
