"""`zeroseg-export`'s command line, common to every exporter (onnx, aoti, trt, triton, cpp-build): the
`--out` checks of `zeroseg.export.core.folders.check_out_folder` included."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, write_image


@pytest.mark.parametrize("command", ["onnx", "aoti", "trt", "executorch"])
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


# ---- --out against the export's inputs, and --force over a folder that cannot be replaced ------------

EXPORTERS = ["onnx", "aoti", "trt", "triton", "cpp-build", "executorch"]
RELATIONS = ["is", "contains", "lies inside"]


@pytest.fixture
def no_export_work(monkeypatch):
    """Every exporter's first real step fails loudly: a refusal must come before any of them."""
    from zeroseg.export.aoti import cpp_build
    from zeroseg.export.aoti import export as aoti_export
    from zeroseg.export.executorch import export as et_export
    from zeroseg.export.onnx import bundle as onnx_bundle
    from zeroseg.export.tensorrt import export as trt_export
    from zeroseg.export.triton_server import repo as triton_repo

    def forbidden(*args, **kwargs):
        raise AssertionError("export work started before the refusal")

    monkeypatch.setattr(onnx_bundle, "build_bundle", forbidden)
    monkeypatch.setattr(aoti_export, "_build", forbidden)
    monkeypatch.setattr(et_export, "_build", forbidden)
    monkeypatch.setattr(trt_export, "_graph", forbidden)
    monkeypatch.setattr(triton_repo, "plan_models", forbidden)
    monkeypatch.setattr(cpp_build, "build_once", forbidden)  # not even its lock file
    monkeypatch.setattr(torch.export, "export", forbidden)  # nor any trace


def _input_path(command: str, tmp_path: Path, world) -> tuple[Path, list]:
    """What the exporter reads (a folder filled like the real thing, or the checkpoint file) and the
    arguments that name it."""
    from helpers import write_image

    from zeroseg.export.aoti.cpp_build import SOURCE_DIR

    if command == "cpp-build":
        return SOURCE_DIR, []
    folder = tmp_path / "inputs" / "given"
    folder.mkdir(parents=True)
    if command in ("onnx", "executorch"):  # the calibration folder
        write_image(folder / "a.png")
        return folder, [
            world.checkpoint,
            "--int8",
            *(["static"] if command == "onnx" else []),
            "--calib",
            folder,
        ]
    if command == "aoti":  # the checkpoint file
        shutil.copy(world.checkpoint, folder / "model.pt")
        return folder / "model.pt", [folder / "model.pt"]
    (folder / "manifest.json").write_text("{}")  # trt, triton: the bundle folder
    (folder / "segmenter.onnx").write_bytes(b"graph")
    return folder, [folder] + (["--onnx-only"] if command == "trt" else [])


@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize("command", EXPORTERS)
def test_out_may_not_be_contain_or_lie_inside_an_input(
    export_cli, world, tmp_path, no_export_work, command, relation
):
    """`zeroseg-export triton B --out B --force` replaced the bundle by the repository; every exporter
    now refuses an --out that is, contains or lies inside what it reads, in one line, before any work,
    and the input is left as it was."""
    given, args = _input_path(command, tmp_path, world)
    before = sorted(p.relative_to(given.parent) for p in given.parent.rglob("*"))
    out = {"is": given, "contains": given.parent, "lies inside": given / "out"}[relation]
    res = export_cli(command, *args, "--out", out, *(["--force"] if command != "cpp-build" else []))
    assert_one_line_error(res, f"--out {out} {relation}", str(given))
    assert sorted(p.relative_to(given.parent) for p in given.parent.rglob("*")) == before


@pytest.mark.parametrize("flag", ["--labels-file", "--checkpoint"])
def test_out_that_holds_an_input_file_is_refused(export_cli, world, tmp_path, no_export_work, flag):
    """Files count too: the checkpoint or the labels file inside --out (which --force would delete)."""
    folder = tmp_path / "work"
    folder.mkdir()
    ckpt = shutil.copy(world.checkpoint, folder / "model.pt") if flag == "--checkpoint" else world.checkpoint
    labels = folder / "classes.txt"
    labels.write_text("red\ngreen\n")
    res = export_cli("onnx", ckpt, "--labels-file", labels, "--out", folder, "--force")
    assert_one_line_error(res, f"--out {folder} contains")
    assert labels.is_file() and Path(ckpt).is_file()


def _immutable(path: Path) -> bool:
    """`chattr +i path`; False where the file system or the container does not allow it."""
    chattr = shutil.which("chattr")
    return (
        chattr is not None and subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode == 0
    )


@pytest.mark.parametrize("blocker", ["immutable", "mount point", "another user's, sticky folder"])
def test_force_over_a_folder_that_cannot_be_replaced_is_refused_first(
    export_cli, tmp_path, monkeypatch, no_export_work, blocker
):
    """`--force` over a folder it cannot move aside failed with PermissionError after the export
    (~58 s). Now `check_out_folder` asks `replace_blocker` first and refuses in one line.

    The tests run as root, for whom permission bits do not stop a rename, so each case is made
    real where it can be and simulated where root cannot be stopped: an immutable folder with
    `chattr +i` (skipped where chattr is refused), a mount point by making `os.path.ismount` say so
    (mounting needs privileges a test must not use), and a folder of another user in a sticky
    folder (`/tmp`'s rule) by `chown`ing it and making `os.geteuid` return an ordinary user's id.
    """
    parent = tmp_path / "shared"
    parent.mkdir()
    out = parent / "bundle"
    out.mkdir()
    (out / "old.txt").write_text("keep")
    if blocker == "immutable":
        if not _immutable(out):
            pytest.skip("chattr +i is not allowed here")
    elif blocker == "mount point":
        real = os.path.ismount
        monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == out or real(p))
    else:
        parent.chmod(0o1777)
        os.chown(out, 4242, 4242)
        monkeypatch.setattr(os, "geteuid", lambda: 1000)
    try:
        res = export_cli("onnx", "bundled", "--out", out, "--force")
    finally:
        if blocker == "immutable":
            subprocess.run(["chattr", "-i", str(out)], check=True)
    assert_one_line_error(res, f"--force cannot replace --out {out}", blocker.split(",")[0].split("'")[0])
    assert (out / "old.txt").read_text() == "keep"


@pytest.mark.parametrize("signed", ["edited after saving", "signed over tensors only"])
@pytest.mark.parametrize("command", ["onnx", "aoti", "trt", "executorch"])
def test_exporters_refuse_a_nan_logit_scale_before_any_work(
    export_cli, world, tmp_path, no_export_work, command, signed
):
    """`export onnx` / `aoti` passed their gate at "100 %" with a NaN logit scale and wrote a bundle
    that labels everything background; load_checkpoint refuses it now: by the checksum (which covers
    the config) or, for a checkpoint signed before that, by `check_config`."""
    from test_checkpoint import edited_checkpoint

    resign = None if signed.startswith("edited") else "tensors"
    path = edited_checkpoint(
        world.checkpoint, tmp_path / "nan.pt", lambda c: c.update(logit_scale=float("nan")), resign=resign
    )
    out = tmp_path / "bundle"
    res = export_cli(command, path, "--out", out, *(["--onnx-only"] if command == "trt" else []))
    assert_one_line_error(res, str(path), "checksum" if resign is None else "logit_scale")
    assert not out.exists()


LABEL_CASES = {
    "background not first": (["--labels", "red,background,green"], "'background' is label 0"),
    "unknown word, --strict-vocab": (["--labels", "cat,red", "--strict-vocab"], "does not know 'cat'"),
    "unreadable calibration image": (["--int8", "static"], "not a readable image"),
    "VOC calibration folder without masks": (["--int8", "static"], "have no mask"),
}


@pytest.mark.parametrize(
    ("command", "case"),
    [(c, k) for c in ("onnx", "aoti") for k in LABEL_CASES if c == "onnx" or "calib" not in k],
)
def test_label_and_calibration_errors_come_before_the_trace(
    export_cli, tmp_path, no_export_work, command, case
):
    """A bad --labels or --calib surfaced 50-55 s into an export, after the graphs were traced; they
    are now checked with the other inputs (`check_labels`, `check_calib_folder`), before any trace."""
    args, expect = LABEL_CASES[case]
    if "calib" in case:  # (AOTInductor has no calibration)
        calib = tmp_path / "calib"
        if case.startswith("unreadable"):
            write_image(calib / "good.png")
            (calib / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
        else:  # a VOC layout (scored for mIoU after the int8 step) whose image has no mask
            for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
                (calib / sub).mkdir(parents=True)
            write_image(calib / "JPEGImages" / "a.jpg")
            (calib / "classes.txt").write_text("background\nred\n")
            (calib / "ImageSets" / "Segmentation" / "val.txt").write_text("a\n")
        args = [*args, "--calib", calib]
    out = tmp_path / "bundle"
    res = export_cli(command, "bundled", "--out", out, *args)
    assert_one_line_error(res, expect)
    assert not out.exists()
