"""A CLIP's text tower as the self-contained text state a checkpoint carries: `text_state_from_clip`.

The state is `{"config": JSON, "state_dict": tensors}` of an open_clip `CLIP` / `CustomTextCLIP` text
transformer; `zeroseg.text.TextEncoder.from_state` rebuilds it with open_clip's own classes, and the
extraction checks (by default) that the rebuilt tower reproduces `clip_model.encode_text`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zeroseg.clip_arch import ConfigNotInferable, infer_text_cfg
from zeroseg.errors import ZerosegError
from zeroseg.text import SIMPLE_TOKENIZER, TEXT_FORMAT, TEXT_VERSION, TextEncoder

#: Top-level keys of an open_clip `CLIP` that belong to the text tower (same names in TextTransformer).
_CLIP_TEXT_PREFIXES = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
)


def _text_tower_and_prefix(clip_model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the text transformer and the prefix of its keys in the model's state dict."""
    from open_clip.transformer import TextTransformer

    text = getattr(clip_model, "text", None)
    if isinstance(text, TextTransformer):  # CustomTextCLIP
        return text, "text."
    if hasattr(clip_model, "token_embedding"):  # CLIP keeps the text tower's parts at top level
        return clip_model, ""
    raise ZerosegError(
        f"{type(clip_model).__name__} has no open_clip text transformer (HF text towers are not supported)"
    )


def text_state_from_clip(
    clip_model: nn.Module,
    *,
    model_cfg: dict | None = None,
    tokenizer_name: str = SIMPLE_TOKENIZER,
    context_length: int | None = None,
    token_subset: Sequence[int] | None = None,
    verify: bool = True,
) -> dict:
    """Extract {"config": JSON, "state_dict": tensors} of a CLIP's text side (see `TextEncoder`).

    Args:
        clip_model: an open_clip `CLIP` / `CustomTextCLIP` with an open_clip text transformer.
        model_cfg: the open_clip config the model was built from; without it the text config is
            read off the modules (standard towers only).
        tokenizer_name: the tokenizer (`SIMPLE_TOKENIZER` or an open_clip model name).
        context_length: the tokenizer's context length (default: the config's, else the tower's
            positions).
        token_subset: the original CLIP BPE ids of a pruned vocabulary (`SubsetTokenizer`), if any.
        verify: rebuild the tower and check it reproduces `clip_model.encode_text` on a probe
            sentence.

    Returns:
        The text state (CPU tensors) that `TextEncoder.from_state` and `save_checkpoint` take.

    Raises:
        ZerosegError: a Hugging Face text tower, a config that cannot be read off the modules, or
            (with verify) a rebuilt tower that does not reproduce the model.
    """
    tower, prefix = _text_tower_and_prefix(clip_model)
    if model_cfg is not None:
        text_cfg = dict(model_cfg["text_cfg"])
        if text_cfg.get("hf_model_name"):
            raise ZerosegError(
                "Hugging Face text towers are not supported: use an open_clip text transformer"
            )
        embed_dim = int(model_cfg["embed_dim"])
        quick_gelu = bool(model_cfg.get("quick_gelu", False))
    else:
        try:
            text_cfg, quick_gelu = infer_text_cfg(tower)
        except ConfigNotInferable as exc:
            raise ZerosegError(
                f"cannot read the text config off this model ({exc}): pass model_cfg"
            ) from None
        proj = tower.text_projection
        if proj is None:
            embed_dim = text_cfg["width"]
        else:
            embed_dim = proj.out_features if isinstance(proj, nn.Linear) else int(proj.shape[1])
    num_pos = int(tower.positional_embedding.shape[0])
    context_length = int(context_length or text_cfg.get("context_length", num_pos))
    if prefix:
        state = {k[len(prefix) :]: v for k, v in clip_model.state_dict().items() if k.startswith(prefix)}
    else:
        state = {k: v for k, v in clip_model.state_dict().items() if k.startswith(_CLIP_TEXT_PREFIXES)}
    config = {
        "format": TEXT_FORMAT,
        "version": TEXT_VERSION,
        "embed_dim": embed_dim,
        "text_cfg": text_cfg,
        "quick_gelu": quick_gelu,
        "tokenizer": tokenizer_name,
        "context_length": context_length,
        "logit_scale": float(clip_model.logit_scale.detach().float().exp().reshape(-1)[0]),
    }
    if token_subset:
        config["token_subset"] = sorted(int(t) for t in token_subset)
    result = {"config": config, "state_dict": {k: v.detach().to("cpu").clone() for k, v in state.items()}}
    if verify:
        _verify_text_state(clip_model, result)
    return result


@torch.no_grad()
def _verify_text_state(clip_model: nn.Module, state: dict) -> None:
    """Refuse a text state whose rebuilt tower does not reproduce the model's `encode_text`."""
    encoder = TextEncoder.from_state(state)
    device = next(clip_model.parameters()).device
    encoder.to(device)
    tokens = encoder.tokenize(["a photo of a cat.", "zeroseg"])
    want = clip_model.encode_text(tokens).float()
    got = encoder(tokens).float()
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()) + 1e-6):
        raise ZerosegError(
            "the rebuilt text tower does not reproduce this CLIP's encode_text: pass the model_cfg "
            "the model was built from"
        )
