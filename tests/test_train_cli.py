"""`zeroseg train` (and the `cache-teacher` run folder) through the `zeroseg` entry point: resuming a
named run folder, refusing changed settings, unreadable data, a second writer, damaged run files,
stale temporary files, numeric flags, Ctrl-C and SIGINT."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_one_line_error

import zeroseg.evaluation.evaluate
import zeroseg.teacher.cache
import zeroseg.train.loop
from zeroseg.checkpoint import load_checkpoint
from zeroseg.shapeworld.write import write_scenes
from zeroseg.utils.lock import LOCK_NAME, folder_lock

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """Eight 64-px ShapeWorld scenes (a VOC-layout folder); the images are in JPEGImages/."""
    root = tmp_path_factory.mktemp("train_cli_scenes")
    write_scenes(root / "scenes", n=8, seed=5, size=64, val_fraction=0.25)
    return root / "scenes"


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the body runs longer than `seconds`."""

    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def train_args(data: Path, out: Path, teacher: Path, *extra) -> list:
    return [
        "train", "--data", data, "--out", out, "--teacher", teacher, "--preset", "tiny", "--image-size", "64",
        "--batch-size", "4", "--log-every", "1", "--device", "cpu", "--lr", "1e-3", "-q", *extra,
    ]  # fmt: skip


def step_of(path: Path) -> int:
    return load_checkpoint(path).train_state["step"]


@pytest.fixture
def paused_run(cli, world, scenes, tmp_path) -> Path:
    """runs/a: a run of 4 steps paused after 2 (last.pt at step 2)."""
    out = tmp_path / "runs" / "a"
    with deadline(120):
        result = cli(*train_args(scenes / "JPEGImages", out, world.root / "teacher.pt", "--steps", "4"),
                     "--stop-after-steps", "2")  # fmt: skip
    assert result.code == 0, result.err
    assert step_of(out / "last.pt") == 2
    return out


def test_resume_uses_the_named_run_folder(cli, world, scenes, paused_run, tmp_path, monkeypatch):
    data, teacher = scenes / "JPEGImages", world.root / "teacher.pt"
    saved = json.loads((paused_run / "config.json").read_text())
    assert Path(saved["data"]).is_absolute() and Path(saved["out"]).is_absolute()
    original = (paused_run / "last.pt").read_bytes()
    # cp -r runs/a runs/b; zeroseg train --out runs/b --resume: advances b, never a
    copy = paused_run.parent / "b"
    shutil.copytree(paused_run, copy)
    with deadline(120):
        result = cli(*train_args(data, copy, teacher, "--resume"))
    assert result.code == 0, result.err
    assert step_of(copy / "last.pt") == 4 and (copy / "model.pt").exists()
    assert (paused_run / "last.pt").read_bytes() == original and not (paused_run / "model.pt").exists()
    assert json.loads((copy / "config.json").read_text())["out"] == str(copy.resolve())
    # a 0-byte last.pt in a copy is refused; it does not train the original
    broken = paused_run.parent / "c"
    shutil.copytree(paused_run, broken)
    (broken / "last.pt").write_bytes(b"")
    assert_one_line_error(
        cli(*train_args(data, broken, teacher, "--resume")), str(broken / "last.pt"), "empty"
    )
    assert (paused_run / "last.pt").read_bytes() == original
    # a renamed run, resumed from another working directory with absolute paths
    renamed = paused_run.parent / "renamed"
    paused_run.rename(renamed)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with deadline(120):
        result = cli(*train_args(data.resolve(), renamed.resolve(), teacher.resolve(), "--resume"))
    assert result.code == 0, result.err
    assert step_of(renamed / "last.pt") == 4


def test_unreadable_training_data_stops_with_one_line(cli, world, scenes, tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(22):
        (junk / f"broken_{i:02d}.jpg").write_bytes(b"\xff\xd8 not a jpeg " + bytes([i]) * 50)
    with deadline(90):  # this used to spin for ever
        result = cli(*train_args(junk, tmp_path / "runs" / "j", world.root / "teacher.pt", "--steps", "4"))
    assert_one_line_error(result, f"no readable image in {junk}", "22 files skipped", "broken_00.jpg")
    # some good images and some junk: training goes on and the junk is reported
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for p in sorted((scenes / "JPEGImages").iterdir())[:4]:
        shutil.copy(p, mixed / p.name)
    (mixed / "zz_bad.jpg").write_bytes(b"not an image")
    (mixed / "zz_worse.png").write_bytes(b"")
    with deadline(90):
        result = cli(*train_args(mixed, tmp_path / "runs" / "m", world.root / "teacher.pt", "--steps", "2"),
                     "--batch-size", "3")  # fmt: skip
    assert result.code == 0, result.err
    warning = [line for line in result.err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "skipped 2 unreadable" in warning[0] and "zz_bad.jpg" in warning[0]


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that holds `folder`'s lock until killed (imports only the lock module)."""
    code = (
        "import sys, time; from zeroseg.utils.lock import folder_lock\n"
        "with folder_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(300)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_of_a_run_or_cache_folder_is_refused(cli, world, scenes, tmp_path):
    run, cache = tmp_path / "runs" / "two", tmp_path / "cache"
    for folder, args in (
        (run, train_args(scenes / "JPEGImages", run, world.root / "teacher.pt", "--steps", "2")),
        (cache, ["cache-teacher", "--data", scenes / "JPEGImages", "--teacher", world.root / "teacher.pt",
                 "--out", cache, "--image-size", "64", "--workers", "0", "--no-progress"]),
    ):  # fmt: skip
        holder = _hold_lock(folder)
        try:
            assert_one_line_error(cli(*args), "in use by another zeroseg process", f"pid {holder.pid}")
            assert not (folder / "last.pt").exists() and not (folder / "manifest.json").exists()
        finally:
            holder.kill()  # kill -9: a crashed writer must not leave the lock held
            holder.wait(timeout=30)
        with folder_lock(folder):
            pass
        with deadline(120):
            assert cli(*args).code == 0
        assert (folder / LOCK_NAME).exists()


def test_resume_refuses_changed_settings(cli, world, scenes, paused_run):
    data, teacher = scenes / "JPEGImages", world.root / "teacher.pt"
    before = (paused_run / "last.pt").read_bytes()
    result = cli(*train_args(data, paused_run, teacher, "--resume", "--preset", "shapeworld", "--lr", "0.5"))
    assert_one_line_error(result, "--preset shapeworld", "--lr 0.5", "differ")
    result = cli(*train_args(data, paused_run, teacher, "--resume", "--batch-size", "2"))
    assert_one_line_error(result, "--batch-size 2")
    result = cli(*train_args(data, paused_run, teacher, "--resume", "--steps", "1"))
    assert_one_line_error(result, "--steps 1", "below", "step", "2")
    assert (paused_run / "last.pt").read_bytes() == before and not (paused_run / "model.pt").exists()
    with deadline(120):  # --steps upwards is safe: applied and said
        result = cli(*train_args(data, paused_run, teacher, "--resume", "--steps", "5"))
    assert result.code == 0, result.err
    assert "--steps 5 (was 4)" in result.err and "finished at step 5/5" in result.out
    assert step_of(paused_run / "last.pt") == 5


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--lr", "-1"), ("--lr", "nan"), ("--blr", "inf"), ("--weight-decay", "-0.1"), ("--warmup", "nan"),
     ("--epochs", "nan"), ("--mask-ratio", "nan"), ("--region-weight", "nan"), ("--clip-grad", "-1"),
     ("--loss-weights", "1,nan,1")],
)  # fmt: skip
def test_numeric_train_flags_are_validated(cli, world, scenes, tmp_path, flag, value):
    args = train_args(scenes / "JPEGImages", tmp_path / "run", world.root / "teacher.pt", "--steps", "2")
    assert_one_line_error(cli(*args, flag, value), flag)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_numeric_flags_of_pretrain_teacher_and_segment_are_validated(cli, world, tmp_path):
    assert_one_line_error(cli("pretrain-teacher", "--out", tmp_path / "t.pt", "--lr", "nan"), "--lr")
    assert_one_line_error(cli("pretrain-teacher", "--out", tmp_path / "t.pt", "--seconds", "-1"), "--seconds")
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    result = cli(
        "segment", world.checkpoint, image, "--labels", "red", "--bg-thresh", "nan", "--out", tmp_path
    )
    assert_one_line_error(result, "--bg-thresh")


def test_damaged_run_config_or_cache_manifest_is_one_line(cli, world, scenes, paused_run, tmp_path):
    data, teacher = scenes / "JPEGImages", world.root / "teacher.pt"
    config = paused_run / "config.json"
    text = config.read_text()
    config.write_text(text[: len(text) // 2])
    assert_one_line_error(cli(*train_args(data, paused_run, teacher, "--resume")), "config.json", "damaged")
    config.unlink()
    assert_one_line_error(cli(*train_args(data, paused_run, teacher, "--resume")), "config.json", "missing")
    # the teacher cache: a manifest with a key removed
    cache = tmp_path / "cache"
    args = ["cache-teacher", "--data", data, "--teacher", teacher, "--out", cache, "--image-size", "64",
            "--workers", "0", "--no-progress"]  # fmt: skip
    with deadline(120):
        assert cli(*args).code == 0
    manifest = json.loads((cache / "manifest.json").read_text())
    del manifest["grids"]
    (cache / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(cli(*args), "manifest", "damaged", "grids")
    result = cli(
        "train", "--data", data, "--out", tmp_path / "r", "--teacher-cache", cache, "--steps", "1", "-q"
    )
    assert_one_line_error(result, "manifest", "damaged", "grids")


def test_run_config_is_written_atomically(paused_run):
    import zeroseg.train.resume as resume

    assert resume.write_run_config.__code__.co_names.count("atomic_write_json") == 1
    assert not [p for p in paused_run.iterdir() if ".tmp-" in p.name]


def test_resume_cleans_stale_temp_files_and_truncates_metrics(cli, world, scenes, paused_run):
    data, teacher = scenes / "JPEGImages", world.root / "teacher.pt"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = paused_run / f".last.tmp-{dead_pid}.pt"  # what kill -9 during a checkpoint write leaves
    stale.write_bytes(b"x" * 1000)
    live = paused_run / ".last.tmp-1.pt"  # pid 1 is alive: a writer that may still be running
    live.write_bytes(b"y")
    with (paused_run / "metrics.jsonl").open("a") as fh:  # rows of steps the killed run never saved
        fh.write(
            json.dumps({"step": 3, "loss": 1.0}) + "\n" + json.dumps({"step": 4, "loss": 1.0}) + "\n{cut"
        )
    with deadline(120):
        result = cli(*train_args(data, paused_run, teacher, "--resume"))
    assert result.code == 0, result.err
    assert not stale.exists() and live.exists()
    steps = [json.loads(line)["step"] for line in (paused_run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_ctrl_c_prints_a_line(cli, world, scenes, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    data, teacher = scenes / "JPEGImages", world.root / "teacher.pt"
    monkeypatch.setattr(zeroseg.teacher.cache, "build_cache", interrupt)
    result = cli(
        "cache-teacher", "--data", data, "--teacher", teacher, "--out", tmp_path / "c", "--no-progress"
    )
    assert result.code == 130 and "interrupted" in result.err and "resume" in result.err, result
    monkeypatch.setattr(zeroseg.evaluation.evaluate, "evaluate", interrupt)
    result = cli("eval", world.checkpoint, "--dataset", scenes, "-q")
    assert result.code == 130 and result.err.strip().startswith("interrupted"), result
    # a double Ctrl-C in train: the second one stops at once, and says so
    monkeypatch.setattr(zeroseg.train.loop, "train_step", interrupt)
    result = cli(*train_args(data, tmp_path / "run", teacher, "--steps", "2"))
    assert result.code == 130 and "interrupted twice" in result.err and "Traceback" not in result.err, result


def test_sigint_in_a_real_process_exits_130(world, scenes, tmp_path):
    """The installed entry point under a real SIGINT (cache-teacher, its work made slow): exit 130 and
    the line, no traceback."""
    args = ["cache-teacher", "--data", str(scenes / "JPEGImages"), "--teacher",
            str(world.root / "teacher.pt"), "--out", str(tmp_path / "c"), "--image-size", "64",
            "--workers", "0", "--no-progress"]  # fmt: skip
    # the child restores Python's own SIGINT handler: an ignored SIGINT is inherited across exec,
    # and an earlier test in this worker (a Ray driver) may have left it ignored
    code = (
        "import signal, sys, time, runpy\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "import zeroseg.teacher.cache as c\n"
        "def slow(*a, **k):\n    print('started', flush=True); time.sleep(60)\n"
        "c.build_cache = slow\n"
        "sys.argv = ['zeroseg', *sys.argv[1:]]\n"
        "runpy.run_module('zeroseg', run_name='__main__')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "started"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err


def test_train_out_that_is_a_file_is_refused(cli, world, scenes, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = train_args(scenes / "JPEGImages", afile, world.root / "teacher.pt", "--steps", "1")
    assert_one_line_error(cli(*args), "--out", str(afile))
    args = train_args(scenes / "JPEGImages", afile / "sub", world.root / "teacher.pt", "--steps", "1")
    assert_one_line_error(cli(*args), "--out")
