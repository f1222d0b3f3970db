"""Multi-scale grid views of a training image (paper section 2), used by zeroseg.teacher.clip.

The image is cut into non-overlapping g x g grids; cell boundaries are the integers nearest to
i*size/g (halves rounded up), so the cells tile the image exactly even when size is not divisible
by g. View order: the full image (1x1) first, then each grid in increasing g, cells row-major.
Each cell is resized (bicubic, antialiased, clamped to [0,1]) to the teacher's input size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from zeroseg.errors import ZerosegError
from zeroseg.preprocess import resize_tensor

PAPER_GRIDS: tuple[int, ...] = (1, 2, 3, 4)


def check_grids(grids: Iterable[int]) -> tuple[int, ...]:
    """Validate grid sizes: positive, distinct, including 1 (v_1, the full image); sorted ascending."""
    try:
        values = [int(g) for g in grids]
    except (TypeError, ValueError):
        raise ZerosegError(f"grids must be integers, got {grids!r}") from None
    if not values or any(g <= 0 for g in values):
        raise ZerosegError(f"grids must be positive integers such as 1,2,3,4; got {values}")
    if len(set(values)) != len(values):
        raise ZerosegError(f"grids must not repeat, got {values}")
    if 1 not in values:
        raise ZerosegError(f"grids must include 1 (the full image, v_1 in the losses), got {values}")
    return tuple(sorted(values))


def num_views(grids: Sequence[int]) -> int:
    """Number of views for `grids`: sum of g*g (30 for the paper's 1,2,3,4)."""
    return sum(int(g) * int(g) for g in grids)


def _boundary(i: int, size: int, grid: int) -> int:
    return (2 * i * size + grid) // (2 * grid)  # round(i*size/grid), halves up, exact in integers


def grid_boxes(size: int, grid: int) -> list[tuple[int, int, int, int]]:
    """Cells (top, left, height, width) of a grid x grid split of a size x size image, row-major."""
    if grid <= 0 or grid > size:
        raise ZerosegError(f"a {grid}x{grid} grid does not fit a {size}-pixel image")
    edges = [_boundary(i, size, grid) for i in range(grid + 1)]
    return [
        (edges[r], edges[c], edges[r + 1] - edges[r], edges[c + 1] - edges[c])
        for r in range(grid)
        for c in range(grid)
    ]


def view_boxes(size: int, grids: Sequence[int] = PAPER_GRIDS) -> list[tuple[int, int, int, int]]:
    """All views' boxes in order: grids as given (check_grids sorts them), each row-major."""
    return [box for g in grids for box in grid_boxes(size, g)]


def grid_views(
    images01: torch.Tensor, grids: Sequence[int] = PAPER_GRIDS, out_size: int = 224
) -> torch.Tensor:
    """(B,3,S,S) images in [0,1] -> (B,V,3,out_size,out_size) views, V = sum(g*g)."""
    if images01.dim() != 4 or images01.shape[1] != 3 or images01.shape[2] != images01.shape[3]:
        raise ZerosegError(f"grid views need square (B,3,S,S) images, got shape {tuple(images01.shape)}")
    grids = check_grids(grids)
    size = images01.shape[-1]
    views = []
    for top, left, h, w in view_boxes(size, grids):
        cell = images01[:, :, top : top + h, left : left + w]
        views.append(resize_tensor(cell, (out_size, out_size)))
    return torch.stack(views, dim=1)


def view_patch_weights(size: int, patch: int, grids: Sequence[int] = PAPER_GRIDS) -> torch.Tensor:
    """(V, N) share of each view's pixels that falls in each patch of a size x size image.

    Row v sums to 1; N = (size/patch)^2 in the patch-embedding's row-major order. A view's teacher
    feature can then be compared with the student's segments mixed by how much of the view each
    segment owns (the region loss). Cells that do not align with the patch grid split a patch's
    weight by pixel overlap, exactly.
    """
    if size % patch:
        raise ZerosegError(f"image size {size} is not a multiple of the patch size {patch}")
    starts = torch.arange(0, size, patch)
    rows = []
    for top, left, h, w in view_boxes(size, check_grids(grids)):
        overlap_y = ((starts + patch).clamp(max=top + h) - starts.clamp(min=top)).clamp(min=0)
        overlap_x = ((starts + patch).clamp(max=left + w) - starts.clamp(min=left)).clamp(min=0)
        rows.append((overlap_y[:, None] * overlap_x[None, :]).reshape(-1).float() / (h * w))
    return torch.stack(rows)
