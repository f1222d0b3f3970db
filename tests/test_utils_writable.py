"""`zeroseg.utils.writable` through the commands: an unwritable output (a file in the way, a read-only
file system) is one line before any compute."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_one_line_error, write_image
from PIL import Image

import zeroseg.infer.files

pytestmark = pytest.mark.usefixtures("one_thread")

#: a place no process may write (read-only for root too): mkdir there fails
READ_ONLY = Path("/sys/zeroseg-read-only-test")
needs_read_only = pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs a read-only /sys")


def test_unwritable_segment_and_eval_outputs_are_one_line_before_the_compute(
    cli, world, small_voc, tmp_path, monkeypatch
):
    image = write_image(tmp_path / "x.png")
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    built = []
    monkeypatch.setattr(
        zeroseg.infer.files, "open_rgb", lambda p: built.append(p) or Image.open(p).convert("RGB")
    )
    result = cli("segment", world.checkpoint, image, "--labels", "red", "--out", afile / "sub")
    assert_one_line_error(result, "--out", str(afile / "sub"))
    result = cli("eval", world.checkpoint, "--dataset", small_voc, "--json", afile / "x.json", "-q")
    assert_one_line_error(result, "--json")
    if READ_ONLY.parent.is_dir():
        result = cli("segment", world.checkpoint, image, "--labels", "red", "--out", READ_ONLY)
        assert_one_line_error(result, "--out", "not writable")
    assert not built  # nothing was decoded or segmented


@needs_read_only
def test_read_only_out_is_one_line_for_synth_pretrain_and_cache(cli, world, tmp_path):
    assert_one_line_error(cli("synth", "--out", READ_ONLY, "--n", "2", "-q"), "--out", "not writable")
    result = cli("pretrain-teacher", "--out", READ_ONLY / "t.pt", "--steps", "1", "-q")
    assert_one_line_error(result, "--out", "not writable")
    result = cli(
        "cache-teacher", "--data", tmp_path, "--teacher", world.root / "teacher.pt", "--out", READ_ONLY
    )
    assert_one_line_error(result, "--out", "not writable")
