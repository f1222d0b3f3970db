"""Image sources for the teacher cache and for training: a folder of images or .tar shards.

An `ImageSource` gives every image a stable string key (sorted order), a cheap signature that
changes when the file changes (so a cache can tell it is stale), and `load(i)`, which returns None
for a corrupt or non-image file instead of raising: one bad JPEG in a million must not stop a run.

Tar shards (webdataset style, uncompressed) are indexed once with `tarfile`; members are then read
by offset through plain file handles opened lazily in each process, so DataLoader workers work.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from zeroseg.data.images import (
    IMAGE_SUFFIXES,
    center_crop_square,
    decode_rgb,
    list_images,
    open_rgb,
    to_unit_tensor,
)
from zeroseg.data.tars import TAR_SEP, index_tar
from zeroseg.errors import ZerosegError

_GLOB_CHARS = set("*?[")


class ImageSource:
    """Images from a folder (recursive) or .tar shards; build with `open`, `from_folder` or `from_tars`."""

    def __init__(
        self, *, kind: str, root: Path | None, keys: list[str], entries: list, shards: list | None = None
    ):
        self.kind = kind
        self.root = root
        self.keys = keys
        self._entries = entries  # folder: relative paths; tars: (shard index, offset, size)
        self._shards = shards or []  # tars: (path, size, mtime_ns)
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()
        self.unreadable = 0  # loads that returned None in this process

    # construction -------------------------------------------------------------------------------
    @classmethod
    def open(cls, spec: str | os.PathLike | Sequence) -> ImageSource:
        """Open training images from wherever they are.

        Args:
            spec: a folder of images (recursive; wins over .tar files in it), a folder of .tar
                shards, a .tar file, a glob of .tar files, or a list of .tar files.

        Returns:
            The `ImageSource` (kind "folder" or "tar"), with stable, sorted keys.

        Raises:
            ZerosegError: nothing matches the glob, a file that is not a .tar, a missing folder or
                shard, or no images found.
        """
        if isinstance(spec, (list, tuple)):
            return cls.from_tars(spec)
        text = str(spec)
        if _GLOB_CHARS & set(text) and not Path(text).exists():
            matches = sorted(glob.glob(os.path.expanduser(text)))
            if not matches:
                raise ZerosegError(f"no files match {text} (check the pattern)")
            return cls.from_tars(matches)
        path = Path(text).expanduser()
        if path.is_file():
            if path.suffix.lower() != ".tar":
                raise ZerosegError(f"data must be a folder of images or .tar shards, got the file {path}")
            return cls.from_tars([path])
        if not path.is_dir():
            raise ZerosegError(f"data folder not found: {path} (pass a folder of images or .tar shards)")
        files = list_images(path)
        if files:
            return cls._from_files(path, files)
        tars = sorted(path.rglob("*.tar"), key=lambda p: p.relative_to(path).as_posix())
        if tars:
            return cls.from_tars(tars, root=path)
        raise ZerosegError(f"no images ({', '.join(IMAGE_SUFFIXES)}) or .tar shards found under {path}")

    @classmethod
    def from_folder(cls, root: str | os.PathLike) -> ImageSource:
        """Every image file under `root`, recursively; keys are POSIX paths relative to root."""
        root = Path(root).expanduser()
        files = list_images(root)
        if not files:
            raise ZerosegError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
        return cls._from_files(root, files)

    @classmethod
    def _from_files(cls, root: Path, files: list[Path]) -> ImageSource:
        rel = [p.relative_to(root).as_posix() for p in files]
        return cls(kind="folder", root=root, keys=rel, entries=rel)

    @classmethod
    def from_tars(cls, paths: Sequence[str | os.PathLike], *, root: Path | None = None) -> ImageSource:
        """Image members of the given uncompressed tar shards; keys are 'shard.tar::member/path.jpg'.

        Shards are named relative to `root` when given, else by file name (which must then be unique).
        """
        shard_paths = [Path(p).expanduser() for p in paths]
        if not shard_paths:
            raise ZerosegError("no .tar shards given")
        names = []
        for p in shard_paths:
            if not p.is_file():
                raise ZerosegError(f"tar shard not found: {p}")
            names.append(p.relative_to(root).as_posix() if root is not None else p.name)
        if len(set(names)) != len(names):
            raise ZerosegError("tar shards must have distinct file names (pass their common folder instead)")
        order = sorted(range(len(shard_paths)), key=lambda i: names[i])
        shards, rows = [], []
        for new_index, i in enumerate(order):
            st = shard_paths[i].stat()
            shards.append((str(shard_paths[i]), st.st_size, st.st_mtime_ns))
            for member, offset, size in index_tar(shard_paths[i]):
                rows.append((f"{names[i]}{TAR_SEP}{member}", (new_index, offset, size)))
        if not rows:
            raise ZerosegError(f"no image members found in {len(shards)} tar shard(s)")
        rows.sort(key=lambda r: r[0])
        return cls(
            kind="tar", root=root, keys=[k for k, _ in rows], entries=[e for _, e in rows], shards=shards
        )

    # access ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.keys)

    def describe(self) -> str:
        where = self.root if self.root is not None else f"{len(self._shards)} tar shard(s)"
        return f"{len(self)} images ({self.kind}) from {where}"

    def signature(self, i: int) -> str:
        """Changes when the image's file changes: 'size:mtime_ns' or 'shard size:mtime_ns:member size'."""
        if self.kind == "folder":
            try:
                st = (self.root / self._entries[i]).stat()
            except OSError:
                return "missing"
            return f"{st.st_size}:{st.st_mtime_ns}"
        shard, _, size = self._entries[i]
        _, shard_size, shard_mtime = self._shards[shard]
        return f"{shard_size}:{shard_mtime}:{size}"

    def signatures(self) -> list[str]:
        return [self.signature(i) for i in range(len(self))]

    def _read_member(self, shard: int, offset: int, size: int) -> bytes:
        if self._pid != os.getpid():  # forked into a worker: never share file offsets with the parent
            self._handles, self._pid = {}, os.getpid()
        fh = self._handles.get(shard)
        if fh is None:
            fh = self._handles[shard] = open(self._shards[shard][0], "rb")  # noqa: SIM115 (kept open)
        fh.seek(offset)
        data = fh.read(size)
        if len(data) != size:
            raise OSError("tar member truncated")
        return data

    def load(self, i: int) -> Image.Image | None:
        """Image i as upright RGB, or None when it is unreadable (counted in `unreadable`)."""
        try:
            if self.kind == "folder":
                return open_rgb(self.root / self._entries[i])
            shard, offset, size = self._entries[i]
            return decode_rgb(self._read_member(shard, offset, size), self.keys[i])
        except (ZerosegError, OSError):
            self.unreadable += 1
            return None

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state


class CropDataset(torch.utils.data.Dataset):
    """(index, (3,S,S) float tensor in [0,1]) per image: shorter side to S, centre crop (paper: 224).

    An unreadable image gives (index, None); batch with `collate_skip_none`.
    """

    def __init__(self, source: ImageSource, size: int = 224):
        if int(size) < 16:
            raise ZerosegError(f"image size must be at least 16 pixels, got {size}")
        self.source = source
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None]:
        img = self.source.load(i)
        if img is None:
            return int(i), None
        return int(i), to_unit_tensor(center_crop_square(img, self.size))


def collate_skip_none(batch: list) -> dict:
    """Batch (index, image) items, dropping unreadable ones.

    Returns {"index": LongTensor (n,), "image": (n,3,S,S) (shape (0,) if n == 0), "skipped": int,
    "skipped_index": LongTensor of the dropped indices (unknown ones, given as bare None, are only counted)}.
    """
    good = [item for item in batch if item is not None and item[1] is not None]
    bad = [item[0] for item in batch if item is not None and item[1] is None]
    skipped = len(batch) - len(good)
    return {
        "index": torch.tensor([i for i, _ in good], dtype=torch.long),
        "image": torch.stack([img for _, img in good]) if good else torch.empty(0),
        "skipped": skipped,
        "skipped_index": torch.tensor(bad, dtype=torch.long),
    }
