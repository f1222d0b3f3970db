"""Student architectures as data: a small typed config and named presets.

`base` is the paper's model (ViT-B/16 encoder, 8-layer reconstruction decoder, 5-layer segmentation
head with grouping after layers 2 and 4 into 32 then 8 segment tokens). Widths the paper leaves
unstated follow MAE (decoder 512-d, 16 heads) and GroupViT (grouping head 384-d, 6 heads).
`tiny` is CPU-sized for tests. `shapeworld` is `tiny` with one grouping stage (8 segment tokens
after 2 of 3 head layers) and no masking: in minutes of CPU training on ShapeWorld, the two-stage
head and 60 % masking learned groups slower than the bundled model's budget allows (README,
ShapeWorld findings). A config is saved in every checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from zeroseg.errors import ZerosegError

#: fields `StudentConfig.to_dict` leaves out while unset (newer than the first checkpoint format)
_OPTIONAL = frozenset({"attn_window", "head_window"})


@dataclass(frozen=True)
class StudentConfig:
    """Sizes and training-time behaviour of the ZeroSeg student (defaults: the `base` preset).

    Attributes:
        image_size: training input side (square); a multiple of `patch_size`.
        patch_size: ViT patch side.
        embed_dim: encoder width.
        depth: encoder blocks.
        num_heads: encoder attention heads.
        mlp_ratio: MLP hidden width / block width (encoder, decoder and segmentation head).
        decoder_dim: MAE reconstruction decoder width.
        decoder_depth: decoder blocks.
        decoder_heads: decoder attention heads.
        seg_dim: segmentation head width.
        seg_heads: segmentation head attention heads.
        seg_depth: segmentation head blocks.
        group_after: after which head blocks (1-based, increasing) a grouping stage runs.
        num_groups: group tokens of each grouping stage; the last is the number of segments m.
        out_dim: segment embedding size, equal to the teacher's embedding size E.
        mask_ratio: fraction of patches masked in training, in [0, 1).
        norm_pix_loss: reconstruct per-patch normalised pixels (MAE's option).
        gumbel_tau: temperature of the Gumbel-softmax assignment.
        gumbel: Gumbel noise on the assignment logits in training (GroupViT); False: plain
            straight-through hard argmax, grouping exactly as inference does.
        attn_window: None (full attention) or a window side in patches: the encoder's patch
            tokens attend in windows of that side (`zeroseg.model.window`), the class token
            globally. At the training grid's side it equals full attention on the training input,
            so it is an inference setting of the same weights.
        head_window: the same for the segmentation head's blocks before the first grouping stage
            (the group tokens stay global).
    """

    image_size: int = 224
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    seg_dim: int = 384
    seg_heads: int = 6
    seg_depth: int = 5
    group_after: tuple[int, ...] = (2, 4)
    num_groups: tuple[int, ...] = (32, 8)
    out_dim: int = 768
    mask_ratio: float = 0.6
    norm_pix_loss: bool = False
    gumbel_tau: float = 1.0
    #: Gumbel noise on the assignment logits in training (GroupViT); False = plain straight-through
    #: hard argmax, so training groups exactly as inference does.
    gumbel: bool = True
    attn_window: int | None = None
    head_window: int | None = None

    @property
    def num_segments(self) -> int:
        """Number of final segment tokens (the paper's m = 8)."""
        return self.num_groups[-1]

    def validate(self) -> StudentConfig:
        """Raise ZerosegError on inconsistent sizes; return self for chaining."""
        if self.image_size % self.patch_size:
            raise ZerosegError(
                f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}"
            )
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ZerosegError(f"mask ratio must be in [0, 1), got {self.mask_ratio}")
        if len(self.group_after) != len(self.num_groups) or not self.num_groups:
            raise ZerosegError("group_after and num_groups must have the same, non-zero length")
        if list(self.group_after) != sorted(set(self.group_after)) or not (
            1 <= self.group_after[0] and self.group_after[-1] <= self.seg_depth
        ):
            raise ZerosegError(f"group_after {self.group_after} must increase within 1..{self.seg_depth}")
        for name, window in (("attn_window", self.attn_window), ("head_window", self.head_window)):
            if window is not None and window <= 0:
                raise ZerosegError(f"{name} must be a positive number of patches, got {window}")
        if any(g <= 0 for g in self.num_groups):
            raise ZerosegError(f"num_groups must be positive, got {self.num_groups}")
        for dim, heads, what in (
            (self.embed_dim, self.num_heads, "embed_dim/num_heads"),
            (self.decoder_dim, self.decoder_heads, "decoder_dim/decoder_heads"),
            (self.seg_dim, self.seg_heads, "seg_dim/seg_heads"),
        ):
            if dim % heads:
                raise ZerosegError(f"{what}: {dim} is not divisible by {heads}")
        return self

    def to_dict(self) -> dict:
        """JSON-able form (tuples become lists). Unset windows are left out, so a checkpoint that uses
        none stays readable by a zeroseg from before them."""
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return {k: v for k, v in data.items() if not (k in _OPTIONAL and v is None)}

    @classmethod
    def from_dict(cls, data: dict) -> StudentConfig:
        """Inverse of `to_dict`; unknown keys are refused (they mean a newer format)."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ZerosegError(f"unknown student config keys {sorted(unknown)}: upgrade zeroseg")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values).validate()


PRESETS: dict[str, StudentConfig] = {
    "base": StudentConfig(),
    "tiny": StudentConfig(
        image_size=128,
        patch_size=8,
        embed_dim=128,
        depth=4,
        num_heads=4,
        decoder_dim=64,
        decoder_depth=2,
        decoder_heads=4,
        seg_dim=128,
        seg_heads=4,
        out_dim=64,
    ),
}


PRESETS["shapeworld"] = replace(
    PRESETS["tiny"], seg_depth=3, group_after=(2,), num_groups=(8,), mask_ratio=0.0
)


def student_preset(name: str, **overrides: object) -> StudentConfig:
    """A named preset, optionally with fields replaced (e.g. out_dim to match the teacher).

    Args:
        name: "base", "tiny" or "shapeworld" (the keys of `PRESETS`).
        **overrides: `StudentConfig` fields to replace.

    Returns:
        The validated `StudentConfig`.

    Raises:
        ZerosegError: an unknown preset, or overrides that make the sizes inconsistent.
    """
    if name not in PRESETS:
        raise ZerosegError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides).validate()
