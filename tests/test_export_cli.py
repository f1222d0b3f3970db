"""`zeroseg-export`'s command line, common to every exporter (onnx, aoti, trt)."""

from __future__ import annotations

import pytest


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
