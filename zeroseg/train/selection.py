"""Label-free model selection: the region loss of a trained model on held-out unlabeled images.

Runs of one recipe that differ only in their seed can settle in groupings of different quality
(ShapeWorld: one seed in five ends 8 to 12 mIoU points below the others). The region loss (every
grid cell's teacher feature against the segment tokens mixed by the share of the cell each one
owns, `zeroseg.train.losses.region_loss`) is the term that ties the patch assignment to the names;
on images no run trained on, with the teacher's features and no label, it ranks such runs as their
mIoU does. `heldout_loss` computes it for a model, so a recipe can train K restarts and keep the
lowest (`python -m zeroseg.shapeworld.proof --restarts K`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from zeroseg.checkpoint import load_checkpoint
from zeroseg.preprocess import normalize
from zeroseg.teacher.views import view_patch_weights
from zeroseg.train.config import TrainConfig
from zeroseg.train.losses import region_loss, seen_view_weights
from zeroseg.train.targets import open_training_data


@torch.no_grad()
def heldout_loss(
    checkpoint: str | Path, images: str | Path, cache: str | Path, *, batch_size: int = 50
) -> float:
    """Mean region loss of a model over every image of a teacher cache (no labels involved).

    Args:
        checkpoint: the model (`zeroseg train`'s model.pt); its hard eval-mode assignments are used,
            as at inference.
        images: the held-out images (a folder or shards, as `zeroseg train --data` takes them).
        cache: their teacher cache (`zeroseg cache-teacher`) made with the model's teacher and grids.
        batch_size: images per forward pass (only memory depends on it).

    Returns:
        The region loss averaged over the images (lower is better).

    Raises:
        ZerosegError: the cache does not fit the images, or the model was not trained on the cache's
            image size and grids.
    """
    ckpt = load_checkpoint(checkpoint, with_train_state=False)
    train = ckpt.config.train or {}
    grids = tuple(train.get("grids") or (1, 2, 3, 4))
    cfg = TrainConfig(data=str(images), out=str(images), teacher_cache=str(cache), grids=grids)
    data = open_training_data(cfg, torch.device("cpu"), ckpt.student_config.image_size)
    model = ckpt.build_student()
    weights = view_patch_weights(data.image_size, ckpt.student_config.patch_size, grids)
    total, count = 0.0, 0
    for start in range(0, len(data.dataset), batch_size):
        batch = data.collate(
            [data.dataset[i] for i in range(start, min(start + batch_size, len(data.dataset)))]
        )
        images01 = batch["image"]
        out = model(normalize(images01, ckpt.preprocess), mask_ratio=0.0)
        views = data.targets(batch, images01)
        loss = region_loss(
            out.segments, out.assignment, seen_view_weights(weights, None, len(images01)), views
        )
        total += float(loss) * len(images01)
        count += len(images01)
    return total / max(count, 1)
