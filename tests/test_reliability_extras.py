"""The "also fix" items of the reliability review that are settled: clear words for odd inputs."""

from __future__ import annotations

import os

import pytest

from zeroseg.bench import head_bench
from zeroseg.classes import parse_class_names, read_class_file
from zeroseg.data.images import open_rgb
from zeroseg.errors import ZerosegError


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


def test_class_files_accept_both_synonym_separators(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("background\nsofa, couch\ntv|monitor | screen\n", encoding="utf-8")
    assert read_class_file(path) == [["background"], ["sofa", "couch"], ["tv", "monitor", "screen"]]
    assert parse_class_names("cat|kitty; dog") == [["cat", "kitty"], ["dog"]]


def test_bench_head_help_gives_the_out_default(capsys):
    with pytest.raises(SystemExit):
        head_bench.parse_args(["--help"])
    assert "default bench-results/head.json" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", ["onnx", "aoti", "trt"])
def test_every_exporter_takes_bundled_as_a_checkpoint(export_cli, tmp_path, command):
    """`bundled` names the bundled checkpoint for every exporter (the bad short side is refused
    after the name resolved, before any export work)."""
    res = export_cli(
        command,
        "bundled",
        "--out",
        tmp_path / "x",
        *(("--short-side", "30") if command != "trt" else ("--min-shape", "1,30,30")),
    )
    assert res.code == 2 and "not found" not in res.err, res.err
    assert not (tmp_path / "x").exists()
