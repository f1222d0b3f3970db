"""Loading and saving CLIP teachers: open_clip specs, local weights, and zeroseg teacher files.

A teacher is named by a spec string (`load_teacher`): `MODEL:TAG` (open_clip's pretrained weights),
`MODEL:/path/to/weights`, or a teacher file written by `save_teacher`, which stores the weights with
the open_clip config they rebuild into (checked by rebuilding and comparing outputs on save).
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from zeroseg.clip_arch import ConfigNotInferable, build_clip, infer_model_cfg
from zeroseg.errors import ZerosegError
from zeroseg.preprocess import CLIP_MEAN, CLIP_STD
from zeroseg.teacher.clip import Teacher, weights_fingerprint
from zeroseg.text import SIMPLE_TOKENIZER
from zeroseg.utils.atomic import atomic_torch_save

TEACHER_FORMAT = "zeroseg-teacher"
TEACHER_VERSION = 1
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt")
_EXAMPLE_MODELS = ("ViT-L-14", "ViT-L-14-336", "ViT-B-16", "ViT-B-32")


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
            "or a file written by zeroseg.teacher.load.save_teacher"
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
