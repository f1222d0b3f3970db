"""`zeroseg.utils.cache`: a folder built once per digest of its sources, shared by concurrent builders."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from zeroseg.utils.cache import build_once, cache_dir, source_digest


def _writer(calls: list[Path], text: str = "made", delay: float = 0.0):
    """A build that records where it was asked to build and writes one file there."""

    def build(path: Path) -> None:
        calls.append(path)
        time.sleep(delay)
        path.mkdir(parents=True, exist_ok=True)
        (path / "result.txt").write_text(text)

    return build


def test_builds_once_then_reuses(tmp_path):
    calls: list[Path] = []
    folder = tmp_path / "cache" / "thing"
    assert build_once(folder, _writer(calls), key="k1") == folder
    assert build_once(folder, _writer(calls, "again"), key="k1") == folder
    assert len(calls) == 1 and calls[0] != folder  # staged: built beside the folder, then installed
    assert (folder / "result.txt").read_text() == "made"
    assert (tmp_path / "cache" / ".thing.built").read_text() == "k1\n"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".thing.built", ".thing.lock", "thing"]


def test_another_key_rebuilds_in_the_same_folder(tmp_path):
    calls: list[Path] = []
    build_once(tmp_path / "thing", _writer(calls, "one"), key="k1")
    build_once(tmp_path / "thing", _writer(calls, "two"), key="k2")
    assert len(calls) == 2 and (tmp_path / "thing" / "result.txt").read_text() == "two"


def test_a_changed_source_gets_a_new_folder(tmp_path):
    source = tmp_path / "src" / "a.py"
    source.parent.mkdir()
    source.write_text("x = 1\n")
    calls: list[Path] = []

    def folder() -> Path:
        return tmp_path / "cache" / source_digest("v1", source, root=tmp_path)

    first = build_once(folder(), _writer(calls))
    assert build_once(folder(), _writer(calls)) == first and len(calls) == 1
    source.write_text("x = 2\n")
    second = build_once(folder(), _writer(calls))
    assert second != first and len(calls) == 2 and (second / "result.txt").is_file()


def test_a_failed_build_leaves_nothing_and_is_retried(tmp_path):
    def broken(path: Path) -> None:
        path.mkdir()
        (path / "half").write_text("")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError, match="compiler crashed"):
        build_once(tmp_path / "thing", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".thing.lock"]
    calls: list[Path] = []
    build_once(tmp_path / "thing", _writer(calls))
    assert len(calls) == 1 and (tmp_path / "thing" / "result.txt").is_file()


def test_in_place_builds_into_the_folder_and_keeps_it_on_failure(tmp_path):
    folder = tmp_path / "build"
    folder.mkdir()
    (folder / "CMakeCache.txt").write_text("kept")

    def broken(path: Path) -> None:
        raise RuntimeError("link error")

    with pytest.raises(RuntimeError):
        build_once(folder, broken, key="k", in_place=True)
    assert (folder / "CMakeCache.txt").read_text() == "kept" and not (tmp_path / ".build.built").exists()
    calls: list[Path] = []
    build_once(folder, _writer(calls), key="k", in_place=True)
    assert calls == [folder] and (folder / "CMakeCache.txt").is_file()


def test_concurrent_threads_build_once(tmp_path):
    calls: list[Path] = []
    results: list[Path] = []
    build = _writer(calls, delay=0.2)
    threads = [
        threading.Thread(target=lambda: results.append(build_once(tmp_path / "thing", build, key="k")))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == [tmp_path / "thing"] * 6


def test_concurrent_processes_build_once(tmp_path):
    code = """
import sys, time
from pathlib import Path
from zeroseg.utils.cache import build_once

def build(path):
    with open(sys.argv[2], "a") as log:
        log.write("built\\n")
    time.sleep(0.3)
    path.mkdir()
    (path / "result.txt").write_text("made")

print(build_once(Path(sys.argv[1]), build, key="k"))
"""
    log = tmp_path / "builds.log"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "thing"), str(log)], stdout=subprocess.PIPE
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120)[0].decode().strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs == [str(tmp_path / "thing")] * 3
    assert log.read_text() == "built\n"


def test_source_digest_parts():
    assert len(source_digest("a")) == 16
    assert source_digest("a", b"b") == source_digest("ab")
    assert source_digest("a", b"b") != source_digest("b", b"a")


def test_source_digest_names_paths(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f.py").write_text("same")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "f.py").write_text("same")
    assert source_digest(tmp_path / "x" / "f.py") == source_digest(tmp_path / "y" / "f.py")  # by name
    with_root = [source_digest(tmp_path / d / "f.py", root=tmp_path) for d in ("x", "y")]
    assert with_root[0] != with_root[1]  # by path under the root: a moved file counts as a change


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir("bench", "x") == tmp_path / "zeroseg" / "bench" / "x"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "zeroseg"


def test_a_killed_builders_temp_folder_is_removed_by_the_next_build(tmp_path):
    """`kill -9` during a staged build left `.NAME.tmp-PID-TID`; the next build removes it once its
    process is gone (a pid above Linux's largest pid_max, 2**22, belongs to no process)."""
    folder = tmp_path / "bundle"
    stale = tmp_path / f".bundle.tmp-{2**22 + 7}-140000"
    stale.mkdir()
    (stale / "half.onnx").write_bytes(b"x")
    build_once(folder, lambda out: (out.mkdir(), (out / "done").write_text("1")), key="k")
    assert (folder / "done").is_file() and not stale.exists()
