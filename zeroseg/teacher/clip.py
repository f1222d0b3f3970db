"""The frozen CLIP image teacher: loading, multi-scale grid views, batched view encoding.

Training distils CLIP's image embeddings of 30 views per image (the full image and the cells of
2x2, 3x3 and 4x4 grids, each resized to the teacher's input size; paper section 2) into the student.
Features are L2-normalised: CLIP features are only ever compared by cosine (at inference the segment
tokens are named by cosine with text embeddings), so normalising makes the paper's L1 targets
independent of the arbitrary scale of each view's raw embedding. The paper does not say either way.

Teachers are named by a spec string (see `load_teacher`); `Teacher.fingerprint` identifies the
weights for the feature cache.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zeroseg.clip_arch import ConfigNotInferable, build_clip, infer_model_cfg
from zeroseg.errors import ZerosegError
from zeroseg.preprocess import CLIP_MEAN, CLIP_STD, resize_tensor
from zeroseg.teacher.views import check_grids, grid_boxes, grid_views, num_views, view_boxes
from zeroseg.text import SIMPLE_TOKENIZER, TextEncoder, text_state_from_clip
from zeroseg.utils.atomic import atomic_torch_save

__all__ = [
    "Teacher",
    "check_grids",
    "grid_boxes",
    "grid_views",
    "load_teacher",
    "num_views",
    "save_teacher",
    "view_boxes",
]

TEACHER_FORMAT = "zeroseg-teacher"
TEACHER_VERSION = 1
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt")
_EXAMPLE_MODELS = ("ViT-L-14", "ViT-L-14-336", "ViT-B-16", "ViT-B-32")


def weights_fingerprint(label: str, state_dict: dict[str, torch.Tensor], extra: dict) -> str:
    """`label@hash`: sha256 over `extra` (JSON) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return f"{label}@{h.hexdigest()[:16]}"


class Teacher:
    """A frozen open_clip CLIP (eval mode, no gradients) and what the cache and checkpoints need.

    Built by `load_teacher`; the constructor puts `model` in eval mode and freezes it.

    Args:
        model: the open_clip `CLIP` module.
        spec: the spec string it was loaded from (see `load_teacher`).
        name: a label for fingerprints and messages.
        model_cfg: the kwargs of `open_clip.model.CLIP(**model_cfg)` (saved with the text tower).
        mean: per-channel pixel mean the model was trained with.
        std: per-channel pixel std the model was trained with.
        tokenizer_name: the tokenizer of the text tower (an open_clip model name or `SIMPLE_TOKENIZER`).
        context_length: the text tower's token context length.
        fingerprint: `label@hash` of the weights (`weights_fingerprint`); the feature cache checks it.
        token_subset: the original CLIP BPE ids of a pruned text vocabulary, if any.

    Attributes:
        image_size: the (square) input side of the image tower.
        embed_dim: the dimension E of the image and text embeddings.
        logit_scale: CLIP's learned multiplier of cosine similarities (already exponentiated).

    Raises:
        ZerosegError: the image tower takes non-square input.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        spec: str,
        name: str,
        model_cfg: dict,
        mean: Sequence[float],
        std: Sequence[float],
        tokenizer_name: str,
        context_length: int,
        fingerprint: str,
        token_subset: Sequence[int] | None = None,
    ):
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.spec = spec
        self.name = name
        self.model_cfg = model_cfg
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.tokenizer_name = tokenizer_name
        self.context_length = int(context_length)
        self.token_subset = list(token_subset) if token_subset else None
        self.fingerprint = fingerprint
        size = getattr(model.visual, "image_size", None) or model_cfg["vision_cfg"].get("image_size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        if size[0] != size[1]:
            raise ZerosegError(
                f"teacher {spec} takes non-square {size[0]}x{size[1]} input; use a square model"
            )
        self.image_size = int(size[0])
        self.embed_dim = int(model_cfg["embed_dim"])
        self.logit_scale = float(model.logit_scale.detach().float().exp().reshape(-1)[0])

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> Teacher:
        """Move the model to `device` (in place); returns self."""
        self.model.to(device)
        return self

    def text_state(self) -> dict:
        """The text tower as {"config", "state_dict"} for checkpoints (see `zeroseg.text`).

        Returns:
            The dict `save_checkpoint(text=...)` and `TextEncoder.from_state` take (tensors on the CPU).
        """
        return text_state_from_clip(
            self.model,
            model_cfg=self.model_cfg,
            tokenizer_name=self.tokenizer_name,
            context_length=self.context_length,
            token_subset=self.token_subset,
        )

    def text_encoder(self) -> TextEncoder:
        """A standalone text encoder equal to this teacher's `encode_text`.

        Returns:
            A `TextEncoder` on the CPU, rebuilt from `text_state`.
        """
        return TextEncoder.from_state(self.text_state())

    @torch.no_grad()
    def encode_images(
        self, images01: torch.Tensor, *, max_batch: int | None = None, amp: bool = False
    ) -> torch.Tensor:
        """L2-normalised CLIP image features of whole images.

        Args:
            images01: (N, 3, H, W) images in [0, 1]; resized to `image_size` if H, W differ.
            max_batch: at most this many images per forward (default: all at once).
            amp: run the forward under CUDA float16 autocast (ignored on the CPU).

        Returns:
            (N, E) float32 unit-norm features, on the teacher's device.
        """
        x = images01.to(self.device, torch.float32)
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = resize_tensor(x, (self.image_size, self.image_size))
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        step = max(1, int(max_batch)) if max_batch else max(1, x.shape[0])
        use_amp = amp and x.device.type == "cuda"
        outs = []
        for start in range(0, x.shape[0], step):
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                feats = self.model.encode_image(x[start : start + step])
            outs.append(F.normalize(feats.float(), dim=-1))
        return torch.cat(outs) if outs else torch.empty(0, self.embed_dim, device=x.device)

    @torch.no_grad()
    def encode_views(
        self,
        images01: torch.Tensor,
        grids: Sequence[int] = (1, 2, 3, 4),
        *,
        max_batch: int | None = None,
        amp: bool = False,
    ) -> torch.Tensor:
        """Unit-norm teacher features of every grid view of each image (the training targets).

        All B*V views go through the teacher in one batched forward, or in chunks (images are cut
        into views chunk by chunk, so memory stays bounded).

        Args:
            images01: (B, 3, S, S) images in [0, 1].
            grids: the grid sizes; 1 is the full image (see `check_grids`).
            max_batch: at most this many views per forward (default: all B*V at once).
            amp: run the forward under CUDA float16 autocast (ignored on the CPU).

        Returns:
            (B, V, E) float32 features, views in `view_boxes` order, on the teacher's device.

        Raises:
            ZerosegError: `grids` is invalid.
        """
        grids = check_grids(grids)
        views = num_views(grids)
        b = images01.shape[0]
        per_chunk = max(1, int(max_batch) // views) if max_batch else max(1, b)
        outs = []
        for start in range(0, b, per_chunk):
            chunk = images01[start : start + per_chunk].to(self.device, torch.float32)
            v = grid_views(chunk, grids, self.image_size)
            feats = self.encode_images(v.flatten(0, 1), max_batch=max_batch, amp=amp)
            outs.append(feats.view(chunk.shape[0], views, -1))
        if not outs:
            return torch.empty(0, views, self.embed_dim, device=self.device)
        return torch.cat(outs)


def _state_of(clip_model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu") for k, v in clip_model.state_dict().items()}


def _check_rebuild(clip_model: nn.Module, model_cfg: dict) -> None:
    rebuilt = build_clip(model_cfg).eval()
    rebuilt.load_state_dict(_state_of(clip_model), strict=True)
    frozen = {p.requires_grad for p in clip_model.parameters()} == {False}
    rebuilt.requires_grad_(not frozen)
    size = rebuilt.visual.image_size
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, *size, generator=generator)
    tokens = torch.randint(1, 400, (2, model_cfg["text_cfg"].get("context_length", 77)), generator=generator)
    device = next(clip_model.parameters()).device
    was_training = clip_model.training
    clip_model.eval()
    with torch.no_grad():
        pairs = [
            (rebuilt.encode_image(image), clip_model.encode_image(image.to(device)).cpu()),
            (rebuilt.encode_text(tokens), clip_model.encode_text(tokens.to(device)).cpu()),
        ]
    clip_model.train(was_training)
    for got, want in pairs:
        if not torch.allclose(
            got.float(), want.float(), rtol=1e-4, atol=1e-4 * float(want.abs().max()) + 1e-6
        ):
            raise ZerosegError("could not rebuild this CLIP from its modules: pass model_cfg to save_teacher")


def save_teacher(
    path: str | Path,
    clip_model: nn.Module,
    *,
    tokenizer_name: str = SIMPLE_TOKENIZER,
    context_length: int | None = None,
    model_cfg: dict | None = None,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    name: str = "teacher",
    token_subset: Sequence[int] | None = None,
) -> None:
    """Write a zeroseg teacher file (atomic; loadable with torch.load(weights_only=True)).

    Args:
        path: the file to write; `load_teacher(path)` reads it back.
        clip_model: the open_clip `CLIP` module to save (its full state dict is stored).
        tokenizer_name: the tokenizer of its text tower (an open_clip model name or `SIMPLE_TOKENIZER`).
        context_length: the text context length (default: the one in `model_cfg`, else 77).
        model_cfg: the kwargs of `open_clip.model.CLIP(**model_cfg)` the model was built with; if None
            it is read off the modules and verified by rebuilding the model.
        mean: per-channel pixel mean the model was trained with.
        std: per-channel pixel std the model was trained with.
        name: a label for fingerprints and messages.
        token_subset: the original CLIP BPE ids of a pruned text vocabulary
            (`zeroseg.text.SubsetTokenizer`), if any.

    Raises:
        ZerosegError: `model_cfg` is None and cannot be read off the modules, or the rebuilt model
            does not reproduce `clip_model`.
    """
    if model_cfg is None:
        try:
            model_cfg = infer_model_cfg(clip_model)
        except ConfigNotInferable as exc:
            raise ZerosegError(
                f"cannot read this CLIP's config off its modules ({exc}): pass model_cfg"
            ) from None
        _check_rebuild(clip_model, model_cfg)
    model_cfg = json.loads(json.dumps(model_cfg))  # plain JSON data (tuples -> lists)
    ctx = int(context_length or model_cfg["text_cfg"].get("context_length", 77))
    payload = {
        "format": TEACHER_FORMAT,
        "version": TEACHER_VERSION,
        "name": str(name),
        "model_cfg": model_cfg,
        "tokenizer": str(tokenizer_name),
        "context_length": ctx,
        "token_subset": sorted(int(t) for t in token_subset) if token_subset else None,
        "preprocess": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "state_dict": _state_of(clip_model),
    }
    atomic_torch_save(path, payload)


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _load_teacher_file(path: Path, spec: str, device) -> Teacher:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ZerosegError(
            f"cannot read teacher file {path} ({_first_line(exc)}): re-save it with save_teacher"
        ) from None
    if not isinstance(data, dict) or data.get("format") != TEACHER_FORMAT:
        raise ZerosegError(
            f"{path} is not a zeroseg teacher file: pass MODEL:TAG, MODEL:/path/to/open_clip_weights, "
            "or a file written by zeroseg.teacher.clip.save_teacher"
        )
    if int(data.get("version", 0)) > TEACHER_VERSION:
        raise ZerosegError(f"teacher file {path} has format version {data['version']}: upgrade zeroseg")
    try:
        model = build_clip(data["model_cfg"])
        model.load_state_dict(data["state_dict"], strict=True)
    except Exception as exc:
        raise ZerosegError(f"teacher file {path} is damaged ({_first_line(exc)}): re-save it") from None
    pre = data.get("preprocess", {})
    label = str(data.get("name", "teacher"))
    mean, std = pre.get("mean", CLIP_MEAN), pre.get("std", CLIP_STD)
    fingerprint = weights_fingerprint(
        label, data["state_dict"], {"cfg": data["model_cfg"], "mean": mean, "std": std}
    )
    return Teacher(
        model.to(device),
        spec=spec,
        name=label,
        model_cfg=data["model_cfg"],
        mean=mean,
        std=std,
        tokenizer_name=str(data.get("tokenizer", SIMPLE_TOKENIZER)),
        token_subset=data.get("token_subset"),
        context_length=int(
            data.get("context_length", data["model_cfg"]["text_cfg"].get("context_length", 77))
        ),
        fingerprint=fingerprint,
    )


def _suggest_models(name: str) -> str:
    import open_clip

    close = difflib.get_close_matches(name, open_clip.list_models(), n=3, cutoff=0.5)
    return ", ".join(dict.fromkeys([*close, *_EXAMPLE_MODELS]))


def _looks_like_path(text: str) -> bool:
    return (
        "/" in text or "\\" in text or text.startswith(("~", ".")) or text.lower().endswith(_WEIGHT_SUFFIXES)
    )


def _common_tag_stats(name: str) -> tuple[tuple, tuple] | None:
    """mean/std shared by every pretrained tag of `name` (used for weights given as a file)."""
    import open_clip

    stats = set()
    for tag in open_clip.list_pretrained_tags_by_model(name):
        cfg = open_clip.get_pretrained_cfg(name, tag)
        stats.add((tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD))))
    return stats.pop() if len(stats) == 1 else None


def _load_open_clip(spec: str, name: str, weights: str | None, device) -> Teacher:
    import copy

    import open_clip

    tag_cfg = (
        {} if weights is None or _looks_like_path(weights) else open_clip.get_pretrained_cfg(name, weights)
    )
    model_cfg = copy.deepcopy(open_clip.get_model_config(name) or {})
    quick_gelu = bool(tag_cfg.get("quick_gelu", False)) and not model_cfg.get("quick_gelu", False)
    if quick_gelu:
        model_cfg["quick_gelu"] = True
    try:
        model = open_clip.create_model(name, pretrained=weights, force_quick_gelu=quick_gelu, device="cpu")
    except Exception as exc:
        if tag_cfg:
            source = tag_cfg.get("hf_hub") or tag_cfg.get("url") or "the open_clip pretrained list"
            raise ZerosegError(
                f"cannot get the weights of {name}:{weights} ({_first_line(exc, 100)}): on a machine with "
                f"network download them from {source}, copy the file here and pass {name}:/path/to/file"
            ) from None
        raise ZerosegError(
            f"cannot load teacher {spec} ({_first_line(exc)}): check the file and model name"
        ) from None
    pre = open_clip.get_model_preprocess_cfg(model)
    mean, std = pre.get("mean", CLIP_MEAN), pre.get("std", CLIP_STD)
    if weights is not None and _looks_like_path(weights):
        mean, std = _common_tag_stats(name) or (mean, std)
    if not model_cfg:
        raise ZerosegError(f"cannot find the config of {name}")
    fingerprint = weights_fingerprint(name, model.state_dict(), {"cfg": model_cfg, "mean": mean, "std": std})
    ctx = int(model_cfg.get("text_cfg", {}).get("context_length", 77))
    return Teacher(
        model.to(device),
        spec=spec,
        name=name,
        model_cfg=model_cfg,
        mean=mean,
        std=std,
        tokenizer_name=name,
        context_length=ctx,
        fingerprint=fingerprint,
    )


def load_teacher(spec: str, device: str | torch.device = "cpu") -> Teacher:
    """Load the frozen CLIP teacher named by `spec`.

    Args:
        spec: `MODEL:TAG` (open_clip pretrained tag; needs network or a warm Hugging Face cache),
            `MODEL:/path/to/weights` (a local open_clip/OpenAI state dict, offline; for OpenAI
            weights use the `-quickgelu` model name), a zeroseg teacher file (`save_teacher`), or
            `hf-hub:`/`local-dir:` names as open_clip understands them.
        device: where to put the model.

    Returns:
        The frozen `Teacher`, with its weights' fingerprint.

    Raises:
        ZerosegError: every failure (empty spec, unknown model or tag, missing or damaged file,
            weights that cannot be downloaded), as one line.
    """
    import open_clip

    spec = str(spec).strip()
    if not spec:
        raise ZerosegError("no teacher given: pass MODEL:TAG (e.g. ViT-L-14:openai) or a teacher file")
    path = Path(spec).expanduser()
    if path.is_file():
        return _load_teacher_file(path, spec, device)
    if spec.startswith(("hf-hub:", "local-dir:")):
        return _load_open_clip(spec, spec, None, device)
    name, sep, rest = spec.partition(":")
    if name not in open_clip.list_models():
        if not sep and _looks_like_path(spec):
            raise ZerosegError(f"teacher file not found: {spec}")
        raise ZerosegError(
            f"unknown teacher model {name!r}: use one of open_clip's models, e.g. {_suggest_models(name)}"
        )
    if not sep or not rest:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)[:5]) or "none known"
        raise ZerosegError(
            f"teacher {name} needs weights: pass {name}:TAG (tags: {tags}) or {name}:/path/to/weights"
        )
    if _looks_like_path(rest):
        weights = Path(rest).expanduser()
        if not weights.is_file():
            raise ZerosegError(f"teacher weights not found: {weights} (check the path after '{name}:')")
        return _load_open_clip(spec, name, str(weights), device)
    tags = open_clip.list_pretrained_tags_by_model(name)
    if rest.lower() not in tags:
        hint = ", ".join(tags[:6]) or "none; pass a weights file"
        raise ZerosegError(f"unknown pretrained tag {rest!r} for {name}: known tags: {hint}")
    logging.getLogger(__name__).info("loading %s (downloads unless in the HF cache)", spec)
    return _load_open_clip(spec, name, rest.lower(), device)
