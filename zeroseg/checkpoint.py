"""ZeroSeg checkpoints: tensors plus a JSON config, loadable with `torch.load(weights_only=True)`.

A checkpoint is self-contained for inference: the student's weights and config, the teacher's
text tower (weights + open_clip config + tokenizer), the prompt templates, the logit scale and
the preprocessing. Export and benchmarking never need the network or the teacher's image tower.
Training checkpoints add a `train_state` (optimizer, scheduler, step, RNG, data position).

Layout of the saved dict:
    format: "zeroseg-checkpoint", version: int, config_json: str (JSON of `CheckpointConfig`),
    student: state dict, text: {"config": dict, "state_dict": state dict}, train_state: dict | absent,
    checksum: {"algorithm": "sha256", "hex": str, "covers": ["tensors", "config_json"]} over every
    tensor's bytes and the config's JSON text (`payload_checksum`)

Zip archives do not check their CRCs on load, so a flipped byte in a tensor would load silently and
give wrong masks; the checksum is verified on every load. It covers the config too (an edited logit
scale or threshold is refused like a flipped weight); checkpoints written before that (no "covers":
tensors only) or before the checksum existed (no "checksum" key) load without that part of the
check and without a warning. Whatever the checksum covers, every load validates the config's values
(`check_config`): a NaN logit scale is refused by every loader alike.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from zeroseg.errors import ZerosegError
from zeroseg.heads import DEFAULT_HEAD, HEADS
from zeroseg.model.config import StudentConfig
from zeroseg.preprocess import Preprocess
from zeroseg.utils.atomic import atomic_torch_save

CHECKPOINT_FORMAT = "zeroseg-checkpoint"
FORMAT_VERSION = 1
#: First bytes of a torch.save file: a zip archive, or a protocol-2 pickle (legacy format).
_TORCH_MAGIC: tuple[bytes, ...] = (b"PK", b"\x80\x02")
#: torch's weights-only unpickler messages for a damaged byte stream (the others refuse code references).
_GARBLED_PICKLE: tuple[str, ...] = ("Unsupported operand", "String is too long")
#: What the checksum of a new checkpoint covers (older ones: the tensors only).
CHECKSUM_COVERS: tuple[str, ...] = ("tensors", "config_json")
#: Student parts that only training needs (the MAE decoder and the global head that produces z).
TRAINING_ONLY_PREFIXES: tuple[str, ...] = ("decoder.", "global_block.", "global_mlp.")


@dataclass(frozen=True)
class CheckpointConfig:
    """Everything but tensors that a checkpoint needs for inference, plus where it came from.

    The export manifests reuse these fields. Saved as JSON with the keys of `to_dict`.

    student: the architecture. preprocess: normalisation and sizes. templates: prompt templates of
    the class names. logit_scale: multiplier of the cosine similarities. teacher: what the teacher
    was (spec, fingerprint, embed_dim, ...; informational). bg_thresh / bg_prompt: the inference
    defaults tuned for this model (None: `zeroseg.infer.labels.DEFAULT_BG_THRESH`). train: the
    `TrainConfig` of the run, step: its step (both None outside training). head: the head the
    model was tuned for ("paper" or "dense"; None: not recorded, `DEFAULT_HEAD`), the default of
    every segmenter and exporter built from it; left out of the JSON while None, so a checkpoint
    that records no head stays readable by an older zeroseg.
    """

    student: StudentConfig
    preprocess: Preprocess
    templates: tuple[str, ...]
    logit_scale: float
    teacher: dict[str, Any] = field(default_factory=dict)
    bg_thresh: float | None = None
    bg_prompt: bool = False
    train: dict[str, Any] | None = None
    step: int | None = None
    head: str | None = None

    _KEYS = ("student", "preprocess", "teacher", "templates", "logit_scale", "inference", "train", "step")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the layout every checkpoint since format 1 uses)."""
        inference: dict[str, Any] = {"bg_prompt": self.bg_prompt}
        if self.bg_thresh is not None:
            inference["bg_thresh"] = self.bg_thresh
        if self.head is not None:
            inference["head"] = self.head
        data: dict[str, Any] = {
            "student": self.student.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "teacher": dict(self.teacher),
            "templates": list(self.templates),
            "logit_scale": self.logit_scale,
            "inference": inference,
        }
        if self.train is not None:
            data["train"] = self.train
        if self.step is not None:
            data["step"] = self.step
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointConfig:
        """Inverse of `to_dict`; unknown keys (a newer zeroseg) are refused."""
        unknown = set(data) - set(cls._KEYS)
        if unknown:
            raise ZerosegError(f"unknown checkpoint config keys {sorted(unknown)}: upgrade zeroseg")
        inference = dict(data.get("inference") or {})
        unknown = set(inference) - {"bg_thresh", "bg_prompt", "head"}
        if unknown:
            raise ZerosegError(f"unknown inference settings {sorted(unknown)}: upgrade zeroseg")
        bg_thresh = inference.get("bg_thresh")
        return cls(
            student=StudentConfig.from_dict(data["student"]),
            preprocess=Preprocess.from_dict(data["preprocess"]),
            templates=tuple(str(t) for t in data["templates"]),
            logit_scale=float(data["logit_scale"]),
            teacher=dict(data.get("teacher") or {}),
            bg_thresh=None if bg_thresh is None else float(bg_thresh),
            bg_prompt=bool(inference.get("bg_prompt", False)),
            train=data.get("train"),
            step=None if data.get("step") is None else int(data["step"]),
            head=inference.get("head"),
        )

    @property
    def default_head(self) -> str:
        """The head segmenters and exporters use when none is asked for: the recorded one, else
        `DEFAULT_HEAD` (the paper's)."""
        return self.head or DEFAULT_HEAD

    def replace(self, **changes: Any) -> CheckpointConfig:
        """A copy with some fields changed (e.g. tuned inference defaults)."""
        return replace(self, **changes)


@dataclass
class Checkpoint:
    """A loaded checkpoint: its typed config and the tensors."""

    config: CheckpointConfig
    student: dict[str, torch.Tensor]
    text: dict[str, Any]
    train_state: dict[str, Any] | None = None
    path: Path | None = field(default=None, compare=False)

    @property
    def student_config(self) -> StudentConfig:
        """The student's architecture."""
        return self.config.student

    @property
    def preprocess(self) -> Preprocess:
        """How images are normalised and sized for this model."""
        return self.config.preprocess

    @property
    def templates(self) -> list[str]:
        """Prompt templates ("a photo of a {}.") used to embed class names."""
        return list(self.config.templates)

    @property
    def logit_scale(self) -> float:
        """Multiplier of the cosine similarities before the softmax over classes."""
        return self.config.logit_scale

    def build_student(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The student network in eval mode with the saved weights."""
        from zeroseg.model.student import ZeroSegStudent

        model = ZeroSegStudent(self.student_config)
        missing, unexpected = model.load_state_dict(self.student, strict=False)
        missing = [k for k in missing if not k.startswith(TRAINING_ONLY_PREFIXES)]
        if missing or unexpected:
            where = self.path or "checkpoint"
            raise ZerosegError(
                f"{where}: student weights do not fit its config (missing {missing[:2]}, unexpected "
                f"{unexpected[:2]}); the file is damaged"
            )
        return model.to(device).eval()

    def build_text_encoder(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The teacher's CLIP text tower, rebuilt from the saved config and weights."""
        from zeroseg.text import TextEncoder

        return TextEncoder.from_state(self.text).to(device).eval()


def save_checkpoint(
    path: str | Path,
    *,
    config: CheckpointConfig,
    student: dict[str, torch.Tensor],
    text: dict[str, Any],
    train_state: dict[str, Any] | None = None,
    inference_only: bool = False,
    dtype: torch.dtype | None = None,
) -> None:
    """Write a checkpoint atomically (temp file, fsync, rename).

    Args:
        path: the .pt file to write.
        config: the model's `CheckpointConfig` (its `train` dict must be JSON-serialisable).
        student: the student's state dict.
        text: the teacher's text tower, `{"config": ..., "state_dict": ...}` (`text_state_from_clip`).
        train_state: optimizer / scheduler / RNG / data position, for `--resume`; None for a model.
        inference_only: leave out the training-only parts of the student (MAE decoder, global head).
        dtype: store floating-point weights in this dtype (e.g. float16 for a small bundled model);
            they are cast back to float32 when the model is built.
    """
    try:
        config_json = json.dumps(config.to_dict())
    except TypeError as exc:
        raise ValueError(f"checkpoint config is not JSON-serialisable: {exc}") from None
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": FORMAT_VERSION,
        "config_json": config_json,
        "student": {
            k: _cast(v, dtype)
            for k, v in student.items()
            if not (inference_only and k.startswith(TRAINING_ONLY_PREFIXES))
        },
        "text": {
            "config": text["config"],
            "state_dict": {k: _cast(v, dtype) for k, v in text["state_dict"].items()},
        },
    }
    if train_state is not None:
        payload["train_state"] = train_state
    digest = payload_checksum(payload, CHECKSUM_COVERS)
    payload["checksum"] = {"algorithm": "sha256", "hex": digest, "covers": list(CHECKSUM_COVERS)}
    atomic_torch_save(path, payload)


def _walk_tensors(obj: Any, prefix: str = ""):
    """(path, tensor) for every tensor in nested dicts / lists, in a stable order (sorted keys)."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _walk_tensors(obj[key], f"{prefix}/{key}")
    elif isinstance(obj, list | tuple):
        for i, item in enumerate(obj):
            yield from _walk_tensors(item, f"{prefix}/{i}")


def tensor_checksum(payload: dict[str, Any]) -> str:
    """sha256 (hex) over the student, text and train-state tensors of a checkpoint payload: each
    tensor's path, dtype, shape and raw bytes, in sorted key order (independent of the zip layout)."""
    digest = hashlib.sha256()
    parts = {k: payload[k] for k in ("student", "text", "train_state") if k in payload}
    for name, tensor in _walk_tensors(parts):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}\n".encode())
        if data.numel():
            digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def payload_checksum(payload: dict[str, Any], covers: tuple[str, ...] | list[str] = CHECKSUM_COVERS) -> str:
    """sha256 (hex) of what a checkpoint's checksum covers: `tensor_checksum` alone (`covers` =
    ("tensors",), checkpoints before the config was covered), or with the config's JSON text too.

    Raises:
        ZerosegError: `covers` names something unknown (a newer zeroseg).
    """
    unknown = set(covers) - set(CHECKSUM_COVERS)
    if "tensors" not in covers or unknown:
        raise ZerosegError(f"unknown checksum coverage {sorted(covers)}: upgrade zeroseg")
    if "config_json" not in covers:
        return tensor_checksum(payload)
    digest = hashlib.sha256(tensor_checksum(payload).encode())
    digest.update(b"\nconfig_json\n" + str(payload["config_json"]).encode())
    return digest.hexdigest()


def check_config(config: CheckpointConfig) -> None:
    """Refuse config values no model can run with: the one check every checkpoint loader applies.

    The logit scale must be a finite number > 0, a background threshold in [0, 1], the preprocessing
    mean finite and its std finite and > 0 (three of each), its sizes positive, a recorded head one
    of `zeroseg.heads.HEADS`, and the templates valid (`zeroseg.classes.check_templates`).

    Raises:
        ZerosegError: the first bad value, named.
    """
    from zeroseg.classes import check_templates

    def finite(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

    if not finite(config.logit_scale) or config.logit_scale <= 0:
        raise ZerosegError(f"its logit_scale must be a finite number > 0, got {config.logit_scale!r}")
    if config.bg_thresh is not None and not (finite(config.bg_thresh) and 0.0 <= config.bg_thresh <= 1.0):
        raise ZerosegError(f"its background threshold must be in [0, 1], got {config.bg_thresh!r}")
    pre = config.preprocess
    if len(pre.mean) != 3 or not all(finite(v) for v in pre.mean):
        raise ZerosegError(f"its preprocessing mean must be 3 finite numbers, got {list(pre.mean)!r}")
    if len(pre.std) != 3 or not all(finite(v) and v > 0 for v in pre.std):
        raise ZerosegError(f"its preprocessing std must be 3 finite numbers > 0, got {list(pre.std)!r}")
    if pre.train_size <= 0 or pre.test_short_side <= 0:
        raise ZerosegError(
            f"its preprocessing sizes must be positive, got {pre.train_size} and {pre.test_short_side}"
        )
    if config.head is not None and config.head not in HEADS:
        raise ZerosegError(f"its head must be {' or '.join(HEADS)}, got {config.head!r}")
    check_templates(config.templates)


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    tensor = tensor.detach().cpu()
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def load_checkpoint(path: str | Path, *, with_train_state: bool = True) -> Checkpoint:
    """Load and validate a checkpoint; never unpickles code (`torch.load(weights_only=True)`).

    Args:
        path: a .pt file written by `save_checkpoint` (`zeroseg train`).
        with_train_state: keep the optimizer/scheduler state (only `--resume` needs it).

    Returns:
        The `Checkpoint`; every problem (missing, empty, truncated, foreign, newer format, damaged
        config) is a one-line ZerosegError.
    """
    path = Path(path)
    if not path.is_file():
        raise ZerosegError(f"checkpoint not found: {path}")
    with path.open("rb") as fh:
        head = fh.read(2)
    if not head:
        raise ZerosegError(f"{path} is empty (0 bytes); re-copy or re-train it")
    if not head.startswith(_TORCH_MAGIC):
        raise ZerosegError(
            f"{path} is not a zeroseg checkpoint (not a PyTorch file); pass the .pt file zeroseg train wrote"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if any(marker in str(exc) for marker in _GARBLED_PICKLE):
            raise ZerosegError(
                f"{path} is truncated or corrupt (UnpicklingError); re-copy or re-train it"
            ) from None
        # weights_only refused a class or function reference: loading it could run code
        raise ZerosegError(
            f"{path} holds pickled Python objects, not a zeroseg checkpoint; refusing to load it"
        ) from None
    except Exception as exc:  # any decoding failure of a damaged file (RuntimeError, EOFError, KeyError...)
        raise ZerosegError(
            f"{path} is truncated or corrupt ({type(exc).__name__}); re-copy or re-train it"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ZerosegError(f"{path} was not written by zeroseg (no '{CHECKPOINT_FORMAT}' header)")
    version = payload.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ZerosegError(
            f"{path} has an invalid checkpoint format version {version!r}; the file is damaged"
        )
    if version > FORMAT_VERSION:
        raise ZerosegError(
            f"{path} has checkpoint format v{version}, newer than this zeroseg"
            f" (v{FORMAT_VERSION}); upgrade zeroseg"
        )
    try:
        config = json.loads(payload["config_json"])
        if not isinstance(config, dict):
            raise TypeError(f"config is a {type(config).__name__}, not an object")
        ckpt = Checkpoint(
            config=CheckpointConfig.from_dict(config),
            student=payload["student"],
            text=payload["text"],
            train_state=payload.get("train_state") if with_train_state else None,
            path=path,
        )
    except KeyError as exc:
        raise ZerosegError(f"{path} is an incomplete zeroseg checkpoint (missing {exc})") from None
    except (TypeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise ZerosegError(f"{path} is a damaged zeroseg checkpoint ({exc})") from None
    except ZerosegError as exc:  # e.g. a student config from a newer zeroseg
        raise ZerosegError(f"{path}: {exc}") from None
    _verify_checksum(path, payload)
    try:
        check_config(ckpt.config)
    except ZerosegError as exc:
        raise ZerosegError(f"{path} has a damaged config: {exc}; re-copy or re-train it") from None
    return ckpt


def _verify_checksum(path: Path, payload: dict[str, Any]) -> None:
    """Refuse a checkpoint whose tensors do not match their stored checksum (absent: not checked)."""
    stored = payload.get("checksum")
    if stored is None:
        return
    if not isinstance(stored, dict) or stored.get("algorithm") != "sha256" or not stored.get("hex"):
        raise ZerosegError(f"{path} has a damaged checksum entry; re-copy or re-train it")
    covers = stored.get("covers", ["tensors"])
    if not isinstance(covers, list) or not all(isinstance(c, str) for c in covers):
        raise ZerosegError(f"{path} has a damaged checksum entry; re-copy or re-train it")
    try:
        actual = payload_checksum(payload, covers)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ZerosegError(f"{path} is a damaged zeroseg checkpoint ({type(exc).__name__})") from None
    except ZerosegError as exc:
        raise ZerosegError(f"{path}: {exc}") from None
    if actual != stored["hex"]:
        what = "tensor data and config fail" if "config_json" in covers else "tensor data fails"
        raise ZerosegError(
            f"{path} is corrupt (damaged or edited): its {what} the sha256 checksum stored with it; "
            "re-copy or re-train it"
        )
