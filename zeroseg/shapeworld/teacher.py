"""Pretrain a tiny CLIP on ShapeWorld captions: the teacher that ShapeWorld's ZeroSeg distils.

No CLIP weights can be downloaded on our machines, so ShapeWorld grows its own: an open_clip CLIP
(open_clip's model classes, its contrastive `ClipLoss` and its real BPE tokenizer) trained on
freshly generated captioned single-object images. It learns colours from text quickly; shapes
come much more slowly (see README). Zero-shot accuracy on held-out
images is measured with the same prompt machinery that segmentation uses.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss
from tqdm import tqdm

from zeroseg.classes import SHAPEWORLD_TEMPLATES
from zeroseg.errors import ZerosegError
from zeroseg.preprocess import CLIP_MEAN, CLIP_STD
from zeroseg.shapeworld.write import (
    BACKGROUND_CAPTIONS,
    CAPTION_TEMPLATES,
    COLOURS,
    SHAPES,
    generate_caption_batch,
)
from zeroseg.text import SubsetTokenizer
from zeroseg.train.runtime import warmup_cosine


@dataclass(frozen=True)
class TinyClipConfig:
    """A CLIP small enough to train on a CPU in minutes (defaults from the ShapeWorld prototype)."""

    embed_dim: int = 64
    image_size: int = 64
    patch_size: int = 8
    vision_layers: int = 4
    vision_width: int = 128
    vision_head_width: int = 32
    vision_pool: str = "avg"
    context_length: int = 16
    text_width: int = 128
    text_heads: int = 4
    text_layers: int = 3

    def model_cfg(self) -> dict:
        """open_clip `CLIP(**cfg)` keyword arguments as JSON data."""
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "layers": self.vision_layers,
                "width": self.vision_width,
                "head_width": self.vision_head_width,
                "pool_type": self.vision_pool,
            },
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": 49408,
                "width": self.text_width,
                "heads": self.text_heads,
                "layers": self.text_layers,
            },
        }


@dataclass
class PretrainReport:
    """What pretraining did and how well the teacher names held-out objects (zero-shot)."""

    steps: int
    seconds: float
    final_loss: float
    accuracy: dict[str, float]
    config: dict

    def summary(self) -> str:
        acc = ", ".join(f"{k} {v:.1%}" for k, v in self.accuracy.items())
        return f"{self.steps} steps in {self.seconds:.0f} s, loss {self.final_loss:.3f}; zero-shot: {acc}"


def build_tiny_clip(cfg: TinyClipConfig) -> open_clip.model.CLIP:
    """A randomly initialised open_clip CLIP of the given size."""
    return open_clip.model.CLIP(**cfg.model_cfg())


def _stats() -> tuple[torch.Tensor, torch.Tensor]:
    """open_clip's default (OpenAI) normalisation, which `load_teacher` applies to this model too."""
    return (
        torch.tensor(CLIP_MEAN).view(1, 3, 1, 1),
        torch.tensor(CLIP_STD).view(1, 3, 1, 1),
    )


def _images_to_tensor(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean) / std


@torch.no_grad()
def class_embeddings(
    model: open_clip.model.CLIP, tokenizer, classes: list[list[str]], templates: tuple[str, ...]
) -> torch.Tensor:
    """(C,E) normalised text embeddings: every synonym x template, averaged, re-normalised."""
    out = []
    for synonyms in classes:
        prompts = [t.format(name) for name in synonyms for t in templates]
        emb = model.encode_text(tokenizer(prompts), normalize=True).mean(0)
        out.append(emb / emb.norm())
    return torch.stack(out)


@torch.no_grad()
def zero_shot_accuracy(
    model: open_clip.model.CLIP, tokenizer, *, n: int = 600, seed: int = 12345, size: int = 64
) -> dict[str, float]:
    """Held-out zero-shot accuracy for colour (6-way), shape (8-way) and colour+shape (48-way).

    Colour prompts average over all shapes ("red circle", "red square", ...) and vice versa, the
    synonym mechanism the segmenter uses.
    """
    model.eval()
    images, _, colour_ids, shape_ids = generate_caption_batch(seed, n, size, empty_fraction=0.0)
    mean, std = _stats()
    feats = model.encode_image(_images_to_tensor(images, mean, std), normalize=True)
    sets = {
        "colour": ([[f"{c} {s}" for s in SHAPES] for c in COLOURS], colour_ids),
        "shape": ([[f"{c} {s}" for c in COLOURS] for s in SHAPES], shape_ids),
        "colour+shape": (
            [[f"{c} {s}"] for c in COLOURS for s in SHAPES],
            colour_ids * len(SHAPES) + shape_ids,
        ),
    }
    result = {}
    for name, (classes, target) in sets.items():
        text = class_embeddings(model, tokenizer, classes, SHAPEWORLD_TEMPLATES)
        pred = (feats @ text.T).argmax(-1).numpy()
        result[name] = float((pred == target).mean())
    return result


def pretrain_teacher(
    *,
    seconds: float | None = 90.0,
    steps: int | None = None,
    batch_size: int = 128,
    lr: float = 5e-4,
    weight_decay: float = 0.1,
    warmup: int = 50,
    seed: int = 0,
    cfg: TinyClipConfig = TinyClipConfig(),
    progress: bool = True,
) -> tuple[open_clip.model.CLIP, PretrainReport]:
    """Train a tiny CLIP contrastively on fresh ShapeWorld caption batches.

    Stops after `steps`, or after `seconds` of wall time when `steps` is None (the schedule then
    assumes the step rate measured over the first 20 steps).

    Args:
        seconds: wall-time budget, used when `steps` is None.
        steps: number of optimizer steps (wins over `seconds`).
        batch_size: captioned images per contrastive batch (at least 2).
        lr: AdamW peak learning rate (warmup, then cosine decay).
        weight_decay: AdamW weight decay.
        warmup: warmup steps.
        seed: seeds torch and the caption generator.
        cfg: the model's size.
        progress: show a progress bar.

    Returns:
        The trained model (eval mode) and a `PretrainReport` with held-out zero-shot accuracies.

    Raises:
        ZerosegError: neither `steps` nor a positive `seconds`, or batch_size < 2.
    """
    if steps is None and (seconds is None or seconds <= 0):
        raise ZerosegError("give --steps or a positive --seconds budget")
    if batch_size < 2:
        raise ZerosegError(f"contrastive training needs --batch-size >= 2, got {batch_size}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_tiny_clip(cfg)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=cfg.context_length)
    mean, std = _stats()
    loss_fn = ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    planned = steps or 10**9
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, planned, warmup, 0.1))
    start = time.perf_counter()
    bar = tqdm(total=steps, disable=not progress, desc="pretrain-teacher", unit="step")
    step, loss_value = 0, float("nan")
    model.train()
    while True:
        images, captions, _, _ = generate_caption_batch(rng, batch_size, cfg.image_size)
        image_f, text_f, scale = model(_images_to_tensor(images, mean, std), tokenizer(captions))
        loss = loss_fn(image_f, text_f, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        step += 1
        loss_value = loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}")
        elapsed = time.perf_counter() - start
        if steps is None and step == 20:
            planned = max(21, int(seconds / (elapsed / 20)))
            bar.total = planned
        if step >= planned:
            break
    bar.close()
    accuracy = zero_shot_accuracy(model, tokenizer, size=cfg.image_size)
    report = PretrainReport(step, time.perf_counter() - start, loss_value, accuracy, asdict(cfg))
    return model.eval(), report


def caption_corpus() -> list[str]:
    """Every caption the generator can write: the only text the ShapeWorld teacher ever learns from."""
    captions = [t.format(colour=c, shape=s) for t in CAPTION_TEMPLATES for c in COLOURS for s in SHAPES]
    return captions + list(BACKGROUND_CAPTIONS)


@torch.no_grad()
def prune_text_vocabulary(
    model: open_clip.model.CLIP, cfg: TinyClipConfig, corpus: list[str]
) -> tuple[open_clip.model.CLIP, dict, list[int]]:
    """Keep only the token-embedding rows of tokens that occur in `corpus` (see `SubsetTokenizer`).

    Returns the pruned CLIP, its model config and the kept original token ids. Texts made of
    corpus tokens embed exactly as before; other tokens become one "unknown" token whose embedding
    is the mean of the kept ones. The 49,408-row table of a 128-wide tower is 6.3 M parameters;
    ShapeWorld's captions use about a hundred tokens.
    """
    base = open_clip.tokenizer.SimpleTokenizer(context_length=cfg.context_length)
    subset = sorted((set(base(corpus).unique().tolist()) | {base.sot_token_id, base.eot_token_id}) - {0})
    model_cfg = cfg.model_cfg()
    model_cfg["text_cfg"]["vocab_size"] = SubsetTokenizer.vocab_size(subset)
    pruned = open_clip.model.CLIP(**model_cfg)
    state = model.state_dict()
    table = state["token_embedding.weight"]
    kept = table[torch.tensor(subset)]
    state["token_embedding.weight"] = torch.cat([table[:1], kept.mean(0, keepdim=True), kept])
    pruned.load_state_dict(state)
    pruned.eval()
    check = corpus[:: max(1, len(corpus) // 64)]
    want = model.eval().encode_text(base(check))
    got = pruned.encode_text(SubsetTokenizer(base, subset)(check))
    if not torch.allclose(got, want, atol=1e-5, rtol=1e-4):
        raise RuntimeError("pruned text tower does not reproduce the original on its own corpus")
    return pruned, model_cfg, subset


def save_pretrained_teacher(path: str | Path, model: open_clip.model.CLIP, cfg: TinyClipConfig) -> None:
    """Prune the text vocabulary to the caption corpus and save a teacher file for `--teacher PATH`.

    Args:
        path: the teacher file to write (`zeroseg.teacher.load.save_teacher`).
        model: the CLIP `pretrain_teacher` trained.
        cfg: the config it was built with.
    """
    from zeroseg.teacher.load import save_teacher

    pruned, model_cfg, subset = prune_text_vocabulary(model, cfg, caption_corpus())
    save_teacher(
        path, pruned, model_cfg=model_cfg, context_length=cfg.context_length, token_subset=subset,
        name="shapeworld-tiny-clip",
    )  # fmt: skip
