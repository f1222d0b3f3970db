"""Image sources (folder and .tar shards), reading one image (`open_rgb`), centre-crop dataset and the
skip-unreadable collate."""

from __future__ import annotations

import os
import tarfile

import numpy as np
import pytest
import torch
from tiny_clip import write_images

from zeroseg.data.images import open_rgb
from zeroseg.data.sources import CropDataset, ImageSource, collate_skip_none
from zeroseg.errors import ZerosegError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A folder of 9 images + 1 corrupt file, and the same files packed into two tar shards."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "images"
    keys = write_images(folder, 9, corrupt=("sub/broken.jpg",))
    shards = root / "shards"
    shards.mkdir()
    for s, part in enumerate((keys[:5], keys[5:])):
        with tarfile.open(shards / f"shard-{s}.tar", "w") as tf:
            for key in part:
                tf.add(folder / key, arcname=key)
            readme = folder.parent / "README.txt"
            readme.write_text("not an image")
            tf.add(readme, arcname="README.txt")  # non-image members are ignored
    return folder, shards, keys


def test_folder_source(dataset):
    folder, _, keys = dataset
    src = ImageSource.open(folder)
    assert src.kind == "folder" and src.keys == keys and len(src) == 10
    broken = keys.index("sub/broken.jpg")
    assert src.load(broken) is None and src.unreadable == 1
    img = src.load(0)
    assert img.mode == "RGB"
    assert ImageSource.from_folder(folder).keys == keys


def test_tar_source_matches_folder(dataset):
    folder, shards, keys = dataset
    by_folder = ImageSource.open(folder)
    by_tars = ImageSource.open(shards)
    assert by_tars.kind == "tar"
    assert [k.split("::", 1)[1] for k in by_tars.keys] == keys
    assert by_tars.keys[0] == f"shard-0.tar::{keys[0]}"
    for i in range(len(keys)):
        a, b = by_folder.load(i), by_tars.load(i)
        assert (a is None) == (b is None)
        if a is not None:
            assert np.array_equal(np.asarray(a), np.asarray(b))
    glob_src = ImageSource.open(str(shards / "shard-*.tar"))
    list_src = ImageSource.open([shards / "shard-1.tar", shards / "shard-0.tar"])
    assert glob_src.keys == list_src.keys == by_tars.keys
    assert len(ImageSource.open(shards / "shard-1.tar")) == 5


def test_signatures_follow_file_changes(dataset, tmp_path):
    folder, shards, _ = dataset
    src = ImageSource.open(folder)
    sigs = src.signatures()
    assert len(set(sigs)) > 1 and src.signatures() == sigs
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "a.png").write_bytes((folder / "001.jpg").read_bytes())
    one = ImageSource.open(copy)
    before = one.signature(0)
    os.utime(copy / "a.png", ns=(1, 1))
    assert one.signature(0) != before
    assert ImageSource.open(shards).signature(0).count(":") == 2


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(ZerosegError, match="not found"):
        ImageSource.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ZerosegError, match="no images"):
        ImageSource.open(tmp_path / "empty")
    with pytest.raises(ZerosegError, match="no files match"):
        ImageSource.open(str(tmp_path / "*.tar"))
    (tmp_path / "fake.tar").write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(ZerosegError, match="cannot index tar shard"):
        ImageSource.open(tmp_path / "fake.tar")
    with pytest.raises(ZerosegError, match="folder of images"):
        ImageSource.open(tmp_path / "empty" / "notes.txt")


def test_a_folder_given_as_an_image_says_so(tmp_path):
    with pytest.raises(ZerosegError, match="is a folder, not an image"):
        open_rgb(tmp_path)


def test_a_broken_or_looping_link_says_so(tmp_path):
    loop = tmp_path / "loop.png"
    os.symlink(loop, loop)
    dangling = tmp_path / "gone.png"
    os.symlink(tmp_path / "missing.png", dangling)
    for link in (loop, dangling):
        with pytest.raises(ZerosegError, match="broken or looping symbolic link"):
            open_rgb(link)
    with pytest.raises(ZerosegError, match="image not found"):
        open_rgb(tmp_path / "nothing.png")


def test_crop_dataset_and_collate(dataset):
    folder, _, keys = dataset
    ds = CropDataset(ImageSource.open(folder), size=32)
    i, img = ds[0]
    assert i == 0 and img.shape == (3, 32, 32) and 0 <= img.min() and img.max() <= 1
    broken = keys.index("sub/broken.jpg")
    assert ds[broken] == (broken, None)
    batch = collate_skip_none([ds[0], ds[broken], ds[2], None])
    assert batch["index"].tolist() == [0, 2] and batch["image"].shape == (2, 3, 32, 32)
    assert batch["skipped"] == 2 and batch["skipped_index"].tolist() == [broken]
    empty = collate_skip_none([ds[broken]])
    assert empty["index"].numel() == 0 and empty["skipped"] == 1
    with pytest.raises(ZerosegError, match="at least 16"):
        CropDataset(ds.source, size=8)


def test_dataloader_workers_on_tars(dataset):
    _, shards, keys = dataset
    ds = CropDataset(ImageSource.open(shards), size=24)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_skip_none)
    seen, skipped = {}, 0
    for batch in loader:
        skipped += batch["skipped"]
        for i, img in zip(batch["index"].tolist(), batch["image"], strict=True):
            seen[i] = img
    assert skipped == 1 and len(seen) == len(keys) - 1
    for i, img in seen.items():
        assert torch.equal(img, ds[i][1])
