"""Recover an open_clip model config (plain JSON data) from a built `open_clip.model.CLIP`.

open_clip models do not keep the config they were built from, but checkpoints and teacher files
must rebuild the towers from data (`zeroseg.checkpoint`: tensors + JSON, no pickled classes).
For the standard ViT CLIP
(open_clip's `VisionTransformer` + causal text transformer, default or layer-scale blocks, GELU or
QuickGELU) every field that changes the computation can be read off the modules. Anything else
(ResNet or timm towers, attentional pooling, custom attention blocks, HF text towers) raises
`ConfigNotInferable`; the caller then has to pass the config it built the model from. Callers verify
an inferred config by rebuilding and comparing outputs (`zeroseg.teacher.load.save_teacher`,
`zeroseg.teacher.text_state.text_state_from_clip`).
"""

from __future__ import annotations

import torch
from open_clip.transformer import LayerScale, QuickGELU, ResidualAttentionBlock
from torch import nn

DEFAULT_LN_EPS = 1e-5


class ConfigNotInferable(ValueError):
    """The module is not a standard open_clip ViT CLIP; its config must be given explicitly."""


def _norm_kwargs(norm: nn.Module) -> dict | None:
    eps = getattr(norm, "eps", DEFAULT_LN_EPS)
    return None if eps == DEFAULT_LN_EPS else {"eps": float(eps)}


def _activation(block: nn.Module) -> tuple[bool, dict | None]:
    """(quick_gelu, act_kwargs) of a residual block's MLP activation."""
    act = block.mlp.gelu
    if isinstance(act, QuickGELU):
        return True, None
    if isinstance(act, nn.GELU):
        return False, None if act.approximate == "none" else {"approximate": act.approximate}
    raise ConfigNotInferable(f"unsupported activation {type(act).__name__}")


def _transformer_cfg(transformer: nn.Module, width: int) -> tuple[dict, bool]:
    """Fields shared by both towers' transformers, and whether they use QuickGELU."""
    blocks = list(transformer.resblocks)
    if not blocks:
        raise ConfigNotInferable("transformer has no blocks")
    block = blocks[0]
    if type(block) is not ResidualAttentionBlock:
        raise ConfigNotInferable(f"custom attention block {type(block).__name__}")
    quick_gelu, act_kwargs = _activation(block)
    cfg = {
        "layers": len(blocks),
        "mlp_ratio": block.mlp.c_fc.out_features / width,
        "ls_init_value": 1e-5 if isinstance(block.ls_1, LayerScale) else None,
        "act_kwargs": act_kwargs,
        "norm_kwargs": _norm_kwargs(block.ln_1),
    }
    return cfg, quick_gelu


def infer_text_cfg(model: nn.Module) -> tuple[dict, bool]:
    """(open_clip CLIPTextCfg as a dict, quick_gelu) for the text side of a standard CLIP."""
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    if not all(hasattr(model, name) for name in needed):
        raise ConfigNotInferable(f"{type(model).__name__} has no open_clip CLIP text tower")
    width = model.token_embedding.embedding_dim
    cfg, quick_gelu = _transformer_cfg(model.transformer, width)
    projection = model.text_projection
    if projection is None:
        proj = {"proj_type": "none", "proj_bias": False}
    elif isinstance(projection, nn.Linear):
        proj = {"proj_type": "linear", "proj_bias": projection.bias is not None}
        if projection.bias is None:
            raise ConfigNotInferable("bias-free nn.Linear text projection")
    else:
        proj = {"proj_type": "linear", "proj_bias": False}
    cfg.update(
        context_length=int(model.positional_embedding.shape[0]),
        vocab_size=int(model.token_embedding.num_embeddings),
        width=width,
        heads=int(model.transformer.resblocks[0].attn.num_heads),
        no_causal_mask=getattr(model, "attn_mask", None) is None,
        pool_type=str(getattr(model, "text_pool_type", getattr(model, "pool_type", "argmax"))),
        eos_id=int(getattr(model, "text_eos_id", getattr(model, "eos_id", 2))),
        **proj,
    )
    if _norm_kwargs(model.ln_final) != cfg["norm_kwargs"]:
        raise ConfigNotInferable("ln_final and block norms differ")
    return cfg, quick_gelu


def infer_vision_cfg(visual: nn.Module) -> tuple[dict, bool, int]:
    """(open_clip CLIPVisionCfg as a dict, quick_gelu, embed_dim) of an open_clip VisionTransformer."""
    from open_clip.transformer import VisionTransformer

    if type(visual) is not VisionTransformer:
        raise ConfigNotInferable(f"vision tower {type(visual).__name__} is not a plain VisionTransformer")
    if visual.attn_pool is not None:
        raise ConfigNotInferable("attentional pooling")
    if not isinstance(visual.patch_dropout, nn.Identity):
        raise ConfigNotInferable("patch dropout")
    width = visual.conv1.out_channels
    cfg, quick_gelu = _transformer_cfg(visual.transformer, width)
    heads = int(visual.transformer.resblocks[0].attn.num_heads)
    height, wide = visual.image_size
    ph, pw = visual.patch_size
    if ph != pw:
        raise ConfigNotInferable("non-square patches")
    if visual.proj is None:
        raise ConfigNotInferable("vision tower without projection")
    cfg.update(
        image_size=int(height) if height == wide else [int(height), int(wide)],
        patch_size=int(ph),
        width=int(width),
        head_width=int(width // heads),
        no_ln_pre=isinstance(visual.ln_pre, nn.Identity),
        pool_type=str(visual.pool_type),
        final_ln_after_pool=bool(visual.final_ln_after_pool),
    )
    return cfg, quick_gelu, int(visual.proj.shape[1])


def infer_model_cfg(model: nn.Module) -> dict:
    """JSON-able kwargs for `open_clip.model.CLIP(**cfg)` rebuilding `model`'s architecture."""
    vision_cfg, vision_quick, embed_dim = infer_vision_cfg(model.visual)
    text_cfg, text_quick = infer_text_cfg(model)
    if vision_quick != text_quick:
        raise ConfigNotInferable("towers use different activations")
    logit_scale = model.logit_scale
    return {
        "embed_dim": embed_dim,
        "vision_cfg": vision_cfg,
        "text_cfg": text_cfg,
        "quick_gelu": vision_quick,
        "nonscalar_logit_scale": logit_scale.dim() > 0,
        "init_logit_bias": None if getattr(model, "logit_bias", None) is None else 0.0,
    }


def build_clip(model_cfg: dict) -> nn.Module:
    """An (untrained) open_clip CLIP, or CustomTextCLIP when the config says custom_text."""
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = dict(model_cfg)
    custom = bool(cfg.pop("custom_text", False))
    if "multimodal_cfg" in cfg:
        raise ConfigNotInferable("CoCa models (multimodal_cfg) are not supported as teachers")
    with torch.device("cpu"):
        return (CustomTextCLIP if custom else CLIP)(**cfg)
