"""The images of a data set for `zeroseg segment-dataset`: a folder, tar shards, or a list file.

    folder      every image under it, recursively (ids: POSIX paths relative to the folder)
    tar shards  one or more uncompressed .tar files, or a glob of them (ids: 'shard.tar::member')
    list file   a text file with one image path per line ('#' comments; relative paths are
                relative to the list file; ids: the lines as written)

Each `Item` knows where its outputs go (`out`: a relative path without suffix, subfolders kept), so
two runs over the same source write the same files. Nothing is decoded here: a corrupt image becomes
a failed row when it is read (`read_image`), never an error of the whole run.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from zeroseg.data.images import IMAGE_SUFFIXES, decode_rgb, list_images, open_rgb
from zeroseg.data.tars import TAR_SEP, index_tar
from zeroseg.errors import ZerosegError

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Item:
    """One image of a data set."""

    id: str  # stable key (the index's `id`)
    source: str  # what the outputs name as the image: a file path or 'shard.tar::member'
    path: str  # the file to read (the shard, for a tar member)
    out: str  # output path relative to --out, without suffix (POSIX)
    offset: int = -1  # tar members: data offset and size in the shard
    size: int = -1


def list_items(sources: list[str]) -> list[Item]:
    """The images of `sources`, in a stable (sorted) order.

    Args:
        sources: one folder, one list file, or one or more .tar shards / globs of them.

    Returns:
        The items; their `out` paths are distinct.

    Raises:
        ZerosegError: a missing path, kinds mixed, no image found, or two images whose outputs would
            collide (e.g. a.png and a.jpg in one folder).
    """
    if not sources:
        raise ZerosegError("no SOURCE given: pass a folder of images, .tar shards or a list file")
    expanded: list[Path] = []
    for text in sources:
        if _GLOB_CHARS & set(text) and not Path(text).exists():
            matches = sorted(glob.glob(os.path.expanduser(text)))
            if not matches:
                raise ZerosegError(f"no files match {text} (check the pattern)")
            expanded += [Path(m) for m in matches]
        else:
            expanded.append(Path(text).expanduser())
    for path in expanded:
        if not path.exists():
            raise ZerosegError(f"SOURCE not found: {path} (pass a folder, .tar shards or a list file)")
    tars = [p for p in expanded if p.is_file() and p.suffix.lower() == ".tar"]
    if tars and len(tars) != len(expanded):
        raise ZerosegError("SOURCE mixes .tar shards with other paths: pass shards only, or one folder")
    if tars:
        items = _tar_items(tars)
    elif len(expanded) != 1:
        raise ZerosegError("pass one folder or one list file as SOURCE (several are allowed for .tar shards)")
    elif expanded[0].is_dir():
        items = _folder_items(expanded[0])
    elif expanded[0].suffix.lower() in IMAGE_SUFFIXES:
        raise ZerosegError(
            f"SOURCE {expanded[0]} is an image: use zeroseg segment for single images, or list them in a "
            "text file (one path per line)"
        )
    else:
        items = _list_items(expanded[0])
    if not items:
        raise ZerosegError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {' '.join(sources)}")
    _check_distinct(items)
    return items


def _folder_items(root: Path) -> list[Item]:
    items = []
    for path in list_images(root):
        rel = path.relative_to(root).as_posix()
        items.append(Item(id=rel, source=str(path), path=str(path), out=_strip(rel)))
    return items


def _list_items(listing: Path) -> list[Item]:
    try:
        lines = listing.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ZerosegError(
            f"cannot read the list file {listing} ({type(exc).__name__}): save it as UTF-8"
        ) from None
    entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if len(set(entries)) != len(entries):
        twice = next(e for i, e in enumerate(entries) if e in entries[:i])
        raise ZerosegError(f"{listing} lists {twice} twice: list each image once")
    files = [(e, (listing.parent / Path(e).expanduser()).resolve()) for e in entries]
    if not files:
        return []
    common = Path(os.path.commonpath([str(f.parent) for _, f in files]))
    return [
        Item(id=e, source=str(f), path=str(f), out=_strip(f.relative_to(common).as_posix()))
        for e, f in sorted(files, key=lambda t: t[0])
    ]


def _tar_items(shards: list[Path]) -> list[Item]:
    names = [p.name for p in shards]
    if len(set(names)) != len(names):
        raise ZerosegError("tar shards must have distinct file names (their ids start with the name)")
    items = []
    for shard in shards:
        for member, offset, size in index_tar(shard):
            key = f"{shard.name}{TAR_SEP}{member}"
            out = f"{_strip(shard.name)}/{_strip(member.lstrip('./'))}"
            items.append(
                Item(id=key, source=key, path=str(shard.resolve()), out=out, offset=offset, size=size)
            )
    return sorted(items, key=lambda it: it.id)


def _strip(rel: str) -> str:
    """A relative POSIX path without its suffix; '..' and absolute parts are refused."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts:
        raise ZerosegError(f"{rel}: image paths must stay inside their folder (no '..' or absolute paths)")
    return pure.with_suffix("").as_posix()


def _check_distinct(items: list[Item]) -> None:
    seen: dict[str, str] = {}
    for item in items:
        key = item.out.casefold()
        if key in seen:
            raise ZerosegError(
                f"{seen[key]} and {item.id} would write the same outputs ({item.out}_labels.png); rename one"
            )
        seen[key] = item.id


def read_image(item: Item) -> Image.Image:
    """The item decoded as upright RGB, like `zeroseg segment` decodes a file.

    Raises:
        ZerosegError: unreadable, not an image, empty or over the pixel cap (the message says which).
    """
    if item.offset < 0:
        return open_rgb(item.path)
    try:
        with open(item.path, "rb") as fh:
            fh.seek(item.offset)
            data = fh.read(item.size)
    except OSError as exc:
        raise ZerosegError(f"cannot read {item.id} ({type(exc).__name__})") from None
    if len(data) != item.size:
        raise ZerosegError(f"{item.id}: tar member truncated")
    return decode_rgb(data, item.id)
