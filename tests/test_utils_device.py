"""`zeroseg.utils.device`: one `--device` resolver for every command, so an unavailable or unknown
device is the same one-line error in `segment` (both methods), `eval` and `demo`."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_one_line_error, write_image

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("device", ["cuda", "tpu"])
def test_unavailable_or_unknown_device_is_one_line_in_every_command(cli, world, small_voc, tmp_path, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present: --device cuda is valid here")
    image = write_image(tmp_path / "x.png")
    common = ("--device", device)
    assert_one_line_error(cli("segment", world.checkpoint, image, "--labels", "red", *common), "--device")
    result = cli("segment", image, "--method", "maskclip", "--teacher", world.root / "teacher.pt",
                 "--labels", "red", "--out", tmp_path / "m", *common)  # fmt: skip
    assert_one_line_error(result, "--device")
    assert_one_line_error(cli("eval", world.checkpoint, "--dataset", small_voc, "-q", *common), "--device")
    assert_one_line_error(cli("demo", "--out", tmp_path / "d", *common), "--device")
