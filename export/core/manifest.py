"""The bundle manifest (`manifest.json`) and the vocabulary file (`vocab.npz`): write, read, verify.

The manifest says what a bundle holds and how to use it: format version; zeroseg / torch / onnx /
onnxruntime versions; opset and exporter; every graph's tensors (`zeroseg.export.core.specs`);
preprocessing; the text side (tokenizer, context length, templates, logit scale); the student
config and inference defaults (the checkpoint's `CheckpointConfig` minus its training state); the
sha256 of every file and of the source checkpoint; the parity (and int8) figures measured at export;
the head inside the end-to-end graph (`head`: "paper" or "dense"; a bundle without it has the paper's).
Its own sha256 (over its canonical JSON without that field) is stored in it, so an edited manifest
is refused like an edited graph.

Plain Python + numpy: the torch-free runtime reads bundles with it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeroseg.errors import ZerosegError
from zeroseg.export.core.formats import BUNDLE_KINDS, BY_NAME, MANIFEST_NAME

BUNDLE_FORMAT = BY_NAME["onnx"].key
FORMAT_VERSION = 1
VOCAB_NAME = "vocab.npz"
_SELF_KEY = "manifest_sha256"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_sha256(data: dict[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON without its own checksum field."""
    body = {k: v for k, v in data.items() if k != _SELF_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class BundleManifest:
    """What `manifest.json` holds (see the module docstring); `files` maps file name -> sha256."""

    versions: dict[str, str | None]
    exporter: dict[str, Any]
    graphs: dict[str, dict[str, Any]]
    preprocess: dict[str, Any]
    text: dict[str, Any]
    model: dict[str, Any]
    source: dict[str, Any]
    parity: dict[str, Any]
    files: dict[str, str]
    int8: dict[str, Any] | None = None
    vocab: dict[str, Any] | None = None
    head: str = "paper"  # the end-to-end graph's head: "paper" or "dense" (--head at export)
    format: str = BUNDLE_FORMAT
    version: int = FORMAT_VERSION
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (without its own checksum, which `write_manifest` adds)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BundleManifest:
        """Inverse of `to_dict` (the checksum field, if any, is dropped)."""
        known = {f for f in cls.__dataclass_fields__}
        body = {k: v for k, v in data.items() if k != _SELF_KEY}
        unknown = set(body) - known
        if unknown:
            raise ZerosegError(f"unknown manifest keys {sorted(unknown)}: the bundle is from a newer zeroseg")
        return cls(**body)

    @property
    def short_side(self) -> int:
        return int(self.preprocess["short_side"])

    @property
    def patch(self) -> int:
        return int(self.preprocess["patch_multiple"])

    def graph_file(self, name: str, precision: str = "fp32") -> str:
        """File of graph `name` at `precision`; a missing int8 variant is a clear error."""
        graph = self.graphs.get(name)
        if graph is None:
            raise ZerosegError(f"the bundle has no {name} graph")
        if precision == "fp32":
            return str(graph["file"])
        files = graph.get("int8_file")
        if not files:
            raise ZerosegError(
                f"the bundle has no int8 {name} graph: re-export with --int8 dynamic (or static)"
            )
        return str(files)


def write_manifest(folder: str | os.PathLike, manifest: BundleManifest) -> Path:
    """Write `manifest.json` (with its own sha256) into `folder`; returns its path."""
    from zeroseg.utils.atomic import atomic_write_json

    data = manifest.to_dict()
    data[_SELF_KEY] = canonical_sha256(data)
    path = Path(folder) / MANIFEST_NAME
    atomic_write_json(path, data)
    return path


def read_manifest(folder: str | os.PathLike, *, fmt: str = BUNDLE_FORMAT) -> BundleManifest:
    """Read and check a bundle's manifest: present, JSON, our format, not newer, not edited.

    Args:
        folder: the bundle folder (`zeroseg-export onnx --out`).
        fmt: the expected `format` (a key of `formats.BUNDLE_KINDS`; default the ONNX bundle).

    Returns:
        The manifest; every problem is a one-line ZerosegError naming the fix.
    """
    folder = Path(folder)
    kind, command = BUNDLE_KINDS[fmt]
    if not folder.is_dir():
        raise ZerosegError(
            f"bundle folder not found: {folder} (pass the folder zeroseg-export {command} wrote)"
        )
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ZerosegError(f"{folder} has no {MANIFEST_NAME}: not a zeroseg {kind} bundle (re-export it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ZerosegError(
            f"{path} is not readable JSON ({type(exc).__name__}); re-export the bundle"
        ) from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ZerosegError(f"{path} is not a zeroseg {kind} bundle manifest (format != {fmt!r})")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ZerosegError(f"{path} has an invalid format version {version!r}; re-export the bundle")
    if version > FORMAT_VERSION:
        raise ZerosegError(
            f"{folder} is bundle format v{version}, newer than this zeroseg (v{FORMAT_VERSION}); "
            "upgrade zeroseg"
        )
    if data.get(_SELF_KEY) != canonical_sha256(data):
        raise ZerosegError(f"{path} was edited after export (checksum mismatch); re-export the bundle")
    try:
        return BundleManifest.from_dict(data)
    except TypeError as exc:
        raise ZerosegError(f"{path} is incomplete ({exc}); re-export the bundle") from None


def verified_file(folder: str | os.PathLike, manifest: BundleManifest, name: str) -> Path:
    """Path of bundle file `name` after checking its sha256 against the manifest."""
    path = Path(folder) / name
    want = manifest.files.get(name)
    if want is None:
        raise ZerosegError(f"{name} is not listed in the bundle's manifest; re-export the bundle")
    if not path.is_file():
        raise ZerosegError(f"{path} is missing from the bundle; re-export it")
    if sha256_file(path) != want:
        raise ZerosegError(f"{path} does not match its sha256 in the manifest (edited or damaged); re-export")
    return path


# ---- vocab.npz -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleVocabulary:
    """Class entries (synonym tuples) and their averaged template embeddings (C, D) float32."""

    entries: tuple[tuple[str, ...], ...]
    embeddings: np.ndarray
    templates: tuple[str, ...]

    def lookup(self, prompts: Sequence[Sequence[str]]) -> tuple[np.ndarray | None, list[str]]:
        """Embeddings (C, D) of the prompts in order, or None and the names that are missing.

        An entry matches its synonyms exactly, or case-insensitively.
        """
        exact = {e: i for i, e in enumerate(self.entries)}
        folded = {tuple(n.casefold() for n in e): i for i, e in enumerate(self.entries)}
        rows, missing = [], []
        for prompt in prompts:
            key = tuple(prompt)
            i = exact.get(key, folded.get(tuple(n.casefold() for n in key)))
            if i is None:
                missing.append(" | ".join(key))
            else:
                rows.append(i)
        if missing:
            return None, missing
        return self.embeddings[rows], []


def save_vocabulary(path: str | os.PathLike, vocab: BundleVocabulary) -> None:
    """Write `vocab.npz` (no pickled objects: names as one JSON string)."""
    import io

    from zeroseg.utils.atomic import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(
        buf,
        entries=np.array(json.dumps([list(e) for e in vocab.entries])),
        names=np.array([e[0] for e in vocab.entries]),
        embeddings=np.asarray(vocab.embeddings, dtype=np.float32),
        templates=np.array(json.dumps(list(vocab.templates))),
    )
    atomic_write_bytes(path, buf.getvalue())


def load_vocabulary(path: str | os.PathLike) -> BundleVocabulary:
    """Read `vocab.npz` (checksum already verified by the caller)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            entries = tuple(tuple(str(n) for n in e) for e in json.loads(str(data["entries"])))
            embeddings = np.asarray(data["embeddings"], dtype=np.float32)
            templates = tuple(json.loads(str(data["templates"])))
    except (OSError, KeyError, ValueError) as exc:
        raise ZerosegError(f"{path} is not a readable vocabulary ({type(exc).__name__}); re-export") from None
    if embeddings.shape[0] != len(entries):
        raise ZerosegError(f"{path}: {len(entries)} classes but {embeddings.shape[0]} embeddings; re-export")
    return BundleVocabulary(entries, embeddings, templates)
