"""Uncompressed .tar shards of images: the one indexer behind every reader of shards.

The training data (`zeroseg.data.sources.ImageSource.from_tars`) and `zeroseg segment-dataset`
(`zeroseg.serve.dataset.sources`) both index shards with `index_tar` and name a member
`<shard name>::<member>` (`TAR_SEP`). Torch-free, so that an ONNX-engine run never loads torch.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import PurePosixPath

from zeroseg.data.images import IMAGE_SUFFIXES
from zeroseg.errors import ZerosegError

#: Separates a shard's file name from a member's name in image keys: 'shard.tar::dir/img.jpg'.
TAR_SEP = "::"


def index_tar(shard: str | os.PathLike) -> list[tuple[str, int, int]]:
    """(member name, data offset, size) of the image members of an uncompressed tar, in tar order.

    A member name that occurs twice keeps its later copy, as tar extraction would. Readers seek to
    the offset and read `size` bytes (no tarfile at read time).

    Raises:
        ZerosegError: the file cannot be read as an uncompressed tar.
    """
    members: dict[str, tuple[int, int]] = {}
    try:
        with tarfile.open(shard, mode="r:") as tf:
            for info in tf:
                if info.isfile() and PurePosixPath(info.name).suffix.lower() in IMAGE_SUFFIXES:
                    members[info.name] = (info.offset_data, info.size)  # a later duplicate wins, as in tar
    except (tarfile.TarError, OSError) as exc:
        raise ZerosegError(
            f"cannot index tar shard {shard} ({type(exc).__name__}: {exc}); re-create or remove it "
            "(only uncompressed .tar is supported)"
        ) from None
    return [(name, off, size) for name, (off, size) in members.items()]
