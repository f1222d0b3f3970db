"""Vocabulary files: `vocab.npz` of every bundle (`vocabulary_file`) and `vocab.bin` for the C++ runner.

`vocabulary_file` embeds the `--labels` classes (plus "background") with the PyTorch text tower and
writes them with `zeroseg.export.core.manifest.save_vocabulary`, so a deployment never runs the text
graph. `vocab.bin` is a label space's text embeddings as a plain binary file, for the C++ runner.

The C++ runner has no tokenizer or text tower, so the exporter embeds the `--labels` once, exactly
as `zeroseg.Segmenter` would (the label space of the model's `bg_prompt` default, its prompts
through `zeroseg.text.encode_classes`), and writes the (C, D) matrix the head consumes:

    bytes 0-7    magic b"ZSVOCAB1"
    bytes 8-23   four little-endian int32: rows C, dim D, label_offset, reserved (0)
    then         C x D little-endian float32, row-major (row i names label i + label_offset)

The class names (label value -> name, 0 = background) and the offset are also in the manifest's
`vocab.label_space` entry; the file's sha256 is in `files`.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from zeroseg.errors import ZerosegError
from zeroseg.export.core.manifest import VOCAB_NAME, BundleVocabulary, save_vocabulary
from zeroseg.infer.labels import LabelSpace

VOCAB_BIN = "vocab.bin"
MAGIC = b"ZSVOCAB1"
_HEADER = struct.Struct("<8s4i")


def vocabulary_file(text_encoder, templates, labels: list[list[str]], folder: Path) -> dict:
    """Write vocab.npz: the --labels classes plus "background", embedded by the PyTorch text tower."""
    from zeroseg.text import encode_classes

    entries = [list(e) for e in labels]
    if not any(e[0].strip().lower() == "background" for e in entries):
        entries.append(["background"])
    emb = encode_classes(text_encoder, entries, templates).numpy()
    vocab = BundleVocabulary(tuple(tuple(e) for e in entries), emb, tuple(templates))
    save_vocabulary(folder / VOCAB_NAME, vocab)
    return {"file": VOCAB_NAME, "classes": [list(e) for e in entries], "embed_dim": int(emb.shape[1])}


def check_labels(ckpt, labels: list[list[str]] | None, *, strict: bool = False) -> None:
    """Everything about an export's `--labels` that can fail, checked before any export work: the
    label space (`background` first or absent, a foreground class), the checkpoint's templates, and
    the words (unknown to the tokenizer: warned about, or refused with `strict`, `--strict-vocab`).

    Args:
        ckpt: the loaded checkpoint (its text config names the tokenizer).
        labels: the parsed `--labels` entries, or None.
        strict: refuse unknown words instead of warning.

    Raises:
        ZerosegError: one line naming the problem.
    """
    from zeroseg.classes import check_templates
    from zeroseg.text import check_known_words, make_tokenizer, vocabulary_policy

    if not labels:
        return
    space = LabelSpace.build([list(e) for e in labels], bg_prompt=ckpt.config.bg_prompt)
    check_templates(ckpt.templates)
    config = ckpt.text["config"]
    tokenizer = make_tokenizer(
        str(config["tokenizer"]), int(config["context_length"]), config.get("token_subset")
    )
    with vocabulary_policy(strict=strict):
        check_known_words(tokenizer, [name for names in space.prompts for name in names])


def write_vocab_bin(folder: str | os.PathLike, space: LabelSpace, text: np.ndarray) -> dict:
    """Write `folder/vocab.bin` for a label space and its prompts' embeddings.

    Args:
        folder: the bundle folder.
        space: the label space (names, prompts, label offset).
        text: (len(space.prompts), D) unit-norm float32 embeddings of its prompts, in order.

    Returns:
        The manifest entry: file, names, label_offset, rows, dim, prompts.
    """
    from zeroseg.utils.atomic import atomic_write_bytes

    text = np.ascontiguousarray(text, dtype="<f4")
    if text.ndim != 2 or text.shape[0] != len(space.prompts):
        raise ZerosegError(f"vocab.bin: {len(space.prompts)} prompts but embeddings of shape {text.shape}")
    rows, dim = text.shape
    atomic_write_bytes(
        Path(folder) / VOCAB_BIN, _HEADER.pack(MAGIC, rows, dim, space.label_offset, 0) + text.tobytes()
    )
    return {"file": VOCAB_BIN, "names": list(space.names), "label_offset": space.label_offset, "rows": rows,
            "dim": dim, "prompts": [list(p) for p in space.prompts]}  # fmt: skip


def read_vocab_bin(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a `vocab.bin` back: (C, D) float32 embeddings and the label offset.

    Args:
        path: the file.

    Returns:
        (embeddings, label_offset); a malformed file is a one-line ZerosegError.
    """
    data = Path(path).read_bytes()
    if len(data) < _HEADER.size:
        raise ZerosegError(f"{path} is truncated (no header); re-export the bundle")
    magic, rows, dim, offset, _ = _HEADER.unpack_from(data)
    if magic != MAGIC or rows <= 0 or dim <= 0 or len(data) != _HEADER.size + 4 * rows * dim:
        raise ZerosegError(f"{path} is not a zeroseg vocab.bin (bad header or size); re-export the bundle")
    emb = np.frombuffer(data, dtype="<f4", offset=_HEADER.size).reshape(rows, dim).astype(np.float32)
    return emb, int(offset)
