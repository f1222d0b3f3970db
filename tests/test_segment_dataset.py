"""`zeroseg segment-dataset` in-process (no Ray): the same outputs as `zeroseg segment`, the index,
resuming, tar and list sources, and the one-line refusals of segment-dataset, serve and the load bench."""

from __future__ import annotations

import io
import json
import socket
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error
from PIL import Image

from zeroseg.serve.dataset.run import read_index

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = "cat,dog|puppy,traffic light"
NAMES = ["background", "cat", "dog", "traffic light"]


def make_folder(root: Path) -> list[str]:
    """Images of several modes and sizes (one in a subfolder) and one corrupt file; the good ids."""
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True, exist_ok=True)

    def picture(h: int, w: int) -> Image.Image:
        small = rng.integers(0, 256, (max(1, h // 6), max(1, w // 6), 3), dtype=np.uint8)
        return Image.fromarray(small).resize((w, h), Image.BILINEAR)

    picture(53, 37).save(root / "odd.png")
    picture(40, 97).convert("L").save(root / "grey.png")
    picture(48, 48).save(root / "sub" / "photo.jpg", quality=95)
    picture(45, 60).convert("P", palette=Image.ADAPTIVE, colors=16).save(root / "sub" / "palette.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    return ["grey.png", "odd.png", "sub/palette.png", "sub/photo.jpg"]


def outputs(folder: Path, out: str) -> tuple[bytes, dict]:
    base = folder / out
    return (base.parent / f"{base.name}_labels.png").read_bytes(), json.loads(
        (base.parent / f"{base.name}.json").read_text()
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("dataset") / "images"
    return root, make_folder(root)


@pytest.fixture(scope="module")
def segmented(world, folder, tmp_path_factory) -> Path:
    """`zeroseg segment` over the good images (it refuses a corrupt one), each into its own folder."""
    from typer.testing import CliRunner

    from zeroseg.cli import app

    root, ids = folder
    out = tmp_path_factory.mktemp("segment")
    for rel in ids:  # one run per subfolder, so that outputs land where segment-dataset puts them
        target = (out / rel).parent
        args = ["segment", str(world.checkpoint), str(root / rel), "--labels", LABELS, "--bg-thresh", "0.3"]
        result = CliRunner().invoke(app, [*args, "--out", str(target), "--overwrite"])
        assert result.exit_code == 0, result.output
    return out


def check_equal_to_segment(out: Path, segmented: Path, ids: list[str]) -> None:
    for rel in ids:
        stem = str(Path(rel).with_suffix(""))
        png, info = outputs(out, stem)
        want_png, want_info = outputs(segmented, stem)
        assert png == want_png, rel  # the same label PNG, byte for byte
        assert info == want_info, rel  # the same JSON: image path, size, names, fractions, format, method


def test_local_run_writes_what_zeroseg_segment_writes_and_an_index(cli, world, folder, segmented, tmp_path):
    root, ids = folder
    out = tmp_path / "out"
    args = ["segment-dataset", root, "--out", out, "--checkpoint", world.checkpoint, "--labels", LABELS]
    result = cli(*args, "--bg-thresh", "0.3", "--batch-size", "3")
    assert result.code == 0, result.err
    assert "segmented 5 images" in result.out and "1 failed" in result.out and "warning:" in result.out
    check_equal_to_segment(out, segmented, ids)
    rows = read_index(out / "_zeroseg" / "index.jsonl")
    assert [r["id"] for r in rows] == sorted([*ids, "broken.png"])
    broken = next(r for r in rows if r["id"] == "broken.png")
    assert (
        broken["status"] == "failed" and "not a readable image" in broken["error"] and broken["size"] is None
    )
    for row in rows:
        if row["status"] == "ok":
            _, info = outputs(out, str(Path(row["id"]).with_suffix("")))
            assert (
                row["size"] == info["size"] and row["fractions"] == info["fractions"] and row["error"] is None
            )
    assert not (out / "_zeroseg" / "index.partial.jsonl").exists() and not list(out.rglob(".*tmp*"))
    # a second run into the same folder is refused, a resumed one does nothing new
    assert_one_line_error(cli(*args, "--bg-thresh", "0.3"), "previous run", "--resume")
    assert_one_line_error(cli(*args, "--resume"), "--resume", "other classes")
    again = cli(*args, "--bg-thresh", "0.3", "--resume")
    assert again.code == 0 and "skipped 4 already complete" in again.out and "segmented 1 images" in again.out


def test_resume_redoes_only_incomplete_images(cli, world, folder, tmp_path):
    root, ids = folder
    out = tmp_path / "out"
    args = ["segment-dataset", root, "--out", out, "--checkpoint", world.checkpoint, "--labels", LABELS]
    assert cli(*args).code == 0
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".png", ".json")}
    (out / "sub" / "palette_labels.png").unlink()  # a partial image: JSON without its label PNG
    (out / "odd.json").unlink()  # and one whose JSON never got written
    result = cli(*args, "--resume")
    assert result.code == 0, result.err
    assert "skipped 2 already complete" in result.out  # grey and photo; odd, palette and broken are redone
    for path, mtime in files.items():
        if path.name.startswith(("grey", "photo")):
            assert path.stat().st_mtime_ns == mtime, path  # untouched
    assert (out / "sub" / "palette_labels.png").exists() and (out / "odd.json").exists()
    assert len(read_index(out / "_zeroseg" / "index.jsonl")) == 5


def test_tar_shards_and_list_files_give_the_same_labels(cli, world, folder, tmp_path):
    root, ids = folder
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tf:
        for rel in ids:
            tf.add(root / rel, arcname=rel)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(root / rel) for rel in ids) + "\n")
    common = ["--checkpoint", world.checkpoint, "--labels", LABELS]
    assert cli("segment-dataset", root, "--out", tmp_path / "f", *common).code == 0
    assert cli("segment-dataset", str(tmp_path / "sh*.tar"), "--out", tmp_path / "t", *common).code == 0
    assert cli("segment-dataset", listing, "--out", tmp_path / "l", *common).code == 0
    for rel in ids:
        stem = str(Path(rel).with_suffix(""))
        want, info = outputs(tmp_path / "f", stem)
        assert outputs(tmp_path / "t" / "shard", stem)[0] == want
        got, listed = outputs(tmp_path / "l", stem)
        assert got == want and listed == info
    rows = read_index(tmp_path / "t" / "_zeroseg" / "index.jsonl")
    assert [r["id"] for r in rows] == [f"shard.tar::{rel}" for rel in sorted(ids)]


def test_the_local_path_does_not_import_ray(cli, world, folder, tmp_path, monkeypatch):
    root, _ = folder
    monkeypatch.setitem(sys.modules, "ray", None)  # any `import ray` now fails
    args = ["segment-dataset", root, "--checkpoint", world.checkpoint, "--labels", "cat"]
    result = cli(*args, "--out", tmp_path / "o")
    assert result.code == 0, result.err
    assert len(read_index(tmp_path / "o" / "_zeroseg" / "index.jsonl")) == 5
    assert_one_line_error(
        cli(*args, "--out", tmp_path / "r", "--ray", "local"), "ray is not installed", "pip"
    )


def _shard(path: Path, members: dict[str, Path]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, source in members.items():
            tf.add(source, arcname=name)
    return path


def test_images_named_like_the_runs_own_files_neither_overwrite_them_nor_stop_resume(cli, world, tmp_path):
    """run.jpg, index.jsonl.png, shards index.jsonl.tar / run.json.tar: the run's files are in _zeroseg/."""
    rng = np.random.default_rng(1)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("run.jpg", "index.png", "index.jsonl.png", "index.partial.png", "run.json.png"):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(photos / name)
    shards = [
        _shard(tmp_path / name, {"run.png": photos / "index.png", "a/index.jsonl.png": photos / "run.jpg"})
        for name in ("index.jsonl.tar", "run.json.tar", "index.partial.jsonl.tar")
    ]
    common = ["--checkpoint", world.checkpoint, "--labels", LABELS]
    for sources, out, count in (([photos], tmp_path / "f", 5), (shards, tmp_path / "s", 6)):
        result = cli("segment-dataset", *sources, "--out", out, *common)
        assert result.code == 0, result.err
        rows = read_index(out / "_zeroseg" / "index.jsonl")
        assert len(rows) == count and all(r["status"] == "ok" for r in rows)
        assert json.loads((out / "_zeroseg" / "run.json").read_text())["classes"]
        again = cli("segment-dataset", *sources, "--out", out, *common, "--resume")
        assert again.code == 0 and f"skipped {count} already complete" in again.out, again.err
    assert json.loads((tmp_path / "f" / "run.json").read_text())["image"].endswith("run.jpg")
    assert (tmp_path / "s" / "index.jsonl" / "run_labels.png").is_file()


@pytest.mark.parametrize(
    "layout, fragments",
    [
        ({"_zeroseg/x.png": None}, ["_zeroseg/", "rename"]),
        ({"_ZeroSeg/x.png": None}, ["_ZeroSeg/", "rename"]),
        ({"a.png": None, "a_labels.png/b.png": None}, ["a_labels.png", "needs a folder"]),
        ({"a.png": None, "a.json/b.png": None}, ["a.json", "needs a folder"]),
        ({"s.tar": ["a.png", "a.json/b.png"]}, ["s/a.json", "needs a folder"]),
        ({"_zeroseg.tar": ["a.png"]}, ["_zeroseg/", "rename"]),
    ],
)
def test_sources_whose_outputs_collide_are_refused_before_any_work(cli, world, tmp_path, layout, fragments):
    rng = np.random.default_rng(2)
    picture = tmp_path / "picture.png"
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(picture)
    root = tmp_path / "src"
    sources = [root]
    for name, members in layout.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if members is None:
            (root / name).write_bytes(picture.read_bytes())
        else:
            sources = [_shard(root / name, {m: picture for m in members})]
    result = cli("segment-dataset", *sources, "--out", tmp_path / "o", "--checkpoint", world.checkpoint,
                 "--labels", "cat")  # fmt: skip
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "o").exists()


# ---- refusals -----------------------------------------------------------------------------------


def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


#: A complete segment-dataset command line; the cases below change one thing in it.
GOOD = "{root} --out {tmp}/o --labels cat --checkpoint {ckpt}"
DATASET_REFUSALS = [
    ("", ["no SOURCE"]),
    ("{root} --labels cat --checkpoint {ckpt}", ["--out"]),
    ("{root} --out {tmp}/o --labels cat", ["--checkpoint", "--engine"]),
    (GOOD + " --engine {tmp}", ["one of"]),
    ("{root} --out {tmp}/o --labels cat --checkpoint {tmp}/none.pt", ["checkpoint not found"]),
    ("{root} --out {tmp}/o --labels cat --engine {tmp}/none", ["--engine", "not a folder"]),
    ("{root} --out {tmp}/o --checkpoint {ckpt}", ["--labels"]),
    (GOOD.replace("cat", "cat,cat"), ["more than once"]),
    (GOOD + " --bg-thresh 2", ["[0, 1]"]),
    (GOOD + " --batch-size 0", ["--batch-size"]),
    (GOOD + " --actors 2", ["--ray"]),
    (GOOD + " --ray nowhere", ["--ray"]),
    (GOOD.replace("{root}", "{tmp}/missing"), ["not found"]),
    (GOOD.replace("{tmp}/o", "{root}/sub"), ["inside SOURCE"]),
    (GOOD.replace("{tmp}/o", "{root}/odd.png"), ["is a file"]),
    (GOOD + " --device tpu", ["device"]),
]


@pytest.mark.parametrize("args, fragments", DATASET_REFUSALS)
def test_segment_dataset_refusals_are_one_line(cli, world, folder, tmp_path, args, fragments):
    root, _ = folder
    values = {"root": str(root), "tmp": str(tmp_path), "ckpt": str(world.checkpoint)}
    result = cli("segment-dataset", *args.format(**values).split())
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "o").exists()  # nothing half-written


@pytest.mark.parametrize(
    "args, fragments",
    [
        ([], ["--checkpoint", "--engine"]),
        (["--checkpoint", "{tmp}/none.pt"], ["checkpoint not found"]),
        (["--checkpoint", "{ckpt}", "--replicas", "0"], ["--replicas"]),
        (["--checkpoint", "{ckpt}", "--max-batch", "0"], ["--max-batch"]),
        (["--checkpoint", "{ckpt}", "--batch-wait-ms", "-1"], ["--batch-wait-ms"]),
        (["--checkpoint", "{ckpt}", "--port", "0"], ["--port"]),
        (["--checkpoint", "{ckpt}", "--port", "{taken}"], ["--port", "cannot listen"]),
        (["--checkpoint", "{ckpt}", "--max-body-mb", "0"], ["--max-body-mb"]),
        (["--checkpoint", "{ckpt}", "--ray", "head"], ["--ray"]),
        (["--checkpoint", "{broken}"], []),
    ],
)
def test_serve_refusals_are_one_line_before_ray_starts(cli, world, tmp_path, args, fragments):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with _taken_port() as sock:
        values = {"tmp": str(tmp_path), "ckpt": str(world.checkpoint), "taken": str(sock.getsockname()[1])}
        values["broken"] = str(broken)
        result = cli("serve", *[a.format(**values) for a in args])
    assert_one_line_error(result, *fragments)
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--clients", "17"], ["--clients", "1..16"]),
        (["--seconds", "121"], ["--seconds"]),
        (["--seconds", "0"], ["--seconds"]),
        (["--images", "0"], ["--images"]),
        (["--retries", "50"], ["--retries"]),
        (["--malformed-every", "-1"], ["--malformed-every"]),
        (["--url", "ftp://x"], ["--url"]),
        (["--image-size", "big"], ["--image-size"]),
    ],
)
def test_serve_bench_refusals_are_one_line(bench_cli, args, fragments):
    assert_one_line_error(bench_cli("serve", *args), *fragments)


def test_an_unreachable_server_is_one_line(bench_cli, world):
    with _taken_port() as sock:  # listening, never answering HTTP: connect then a closed socket
        port = sock.getsockname()[1]
    result = bench_cli("serve", "--url", f"http://127.0.0.1:{port}", "--checkpoint", world.checkpoint,
                       "--images", "1", "--seconds", "1")  # fmt: skip
    assert_one_line_error(result, "no server answers", "--url")


def test_images_are_encoded_once(tmp_path):
    from zeroseg.bench.serve_load import make_images

    a, b = make_images(2, (20, 30), seed=1), make_images(2, (20, 30), seed=1)
    assert a == b and Image.open(io.BytesIO(a[0])).size == (30, 20)
