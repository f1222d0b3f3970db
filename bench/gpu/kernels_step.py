"""Step "kernels": the Triton kernels' tests run compiled on the GPU, not in Triton's interpreter.

The suite runs the kernels in the interpreter on the CPU (tests/conftest.py sets TRITON_INTERPRET=1
unless ZEROSEG_TEST_GPU=1). Here pytest runs in a subprocess on the kernel test files that have GPU
cases — those that read ZEROSEG_TEST_GPU or TRITON_INTERPRET, or carry the `gpu` marker — with
ZEROSEG_TEST_GPU=1 and TRITON_INTERPRET removed from its environment, so every kernel is compiled
for the device. The tests folder is not in the wheel: it is looked for beside the installed sources
(an editable install from a checkout, as on the GPU machine), then in the working directory.

A dry run collects the same tests (`--collect-only`) in the same subprocess set-up instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Text that marks a kernel test file as having GPU cases.
GPU_MARKS = ("ZEROSEG_TEST_GPU", "TRITON_INTERPRET", "mark.gpu")
#: pytest summary words counted (their plural forms are folded into these).
COUNTED = ("passed", "failed", "skipped", "error", "xfailed", "xpassed", "deselected")
#: Characters of pytest's output kept when the run fails.
TAIL_CHARS = 3000


def find_tests_dir(start: Path | None = None) -> Path | None:
    """The repository's tests/ folder: above this file's package (a checkout), else in the working
    directory; None when neither holds tests/conftest.py."""
    here = Path(start or __file__).resolve()
    candidates = [p / "tests" for p in here.parents] + [Path.cwd() / "tests"]
    for tests in candidates:
        if (tests / "conftest.py").is_file() and (tests.parent / "pyproject.toml").is_file():
            return tests
    return None


def gpu_test_files(tests: Path) -> list[Path]:
    """tests/test_kernels_*.py files with GPU cases (see `GPU_MARKS`), sorted."""
    files = sorted(tests.glob("test_kernels_*.py"))
    return [f for f in files if any(m in f.read_text(encoding="utf-8") for m in GPU_MARKS)]


def parse_counts(output: str) -> dict[str, int]:
    """Counts from pytest's last summary line ("3 passed, 1 failed, 2 skipped in 4.2s") or from
    "219 tests collected"; every word of `COUNTED` present, 0 when absent."""
    counts = dict.fromkeys(COUNTED, 0)
    counts["collected"] = 0
    for line in reversed(output.strip().splitlines()):
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)\b", line)
        collected = re.search(r"(\d+) tests? collected", line)
        if found or collected:
            for number, word in found:
                counts[word.rstrip("s") if word.startswith("error") else word] += int(number)
            if collected:
                counts["collected"] = int(collected.group(1))
            break
    return counts


def subprocess_env(gpu: bool) -> dict[str, str]:
    """The pytest subprocess's environment: ours without pytest's own variables; on the GPU with
    ZEROSEG_TEST_GPU=1 and without TRITON_INTERPRET (compiled kernels); no bytecode written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ZEROSEG_TEST_GPU"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if gpu:
        env.pop("TRITON_INTERPRET", None)
        env["ZEROSEG_TEST_GPU"] = "1"
    return env


def run_kernel_tests(*, dry_run: bool, timeout_s: float) -> dict[str, Any]:
    """Run (GPU) or collect (dry run) the kernel tests in a subprocess; the step's result.

    Returns:
        {"status", "reason", "mode", "files", "counts", "returncode", "tail"}: status "skipped" when
        tests/ is not found, "failed" when pytest exits non-zero or collects nothing.
    """
    tests = find_tests_dir()
    if tests is None:
        return {"status": "skipped", "reason": "tests/ not found (run from a checkout)"}
    files = gpu_test_files(tests)
    if not files:
        return {"status": "failed", "reason": f"no kernel test file with GPU cases in {tests}"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra"]
    cmd += ["--collect-only"] if dry_run else []
    cmd += [str(f.relative_to(tests.parent)) for f in files]
    mode = (
        "collect-only (dry run)" if dry_run else "compiled on CUDA (ZEROSEG_TEST_GPU=1, no TRITON_INTERPRET)"
    )
    base = {"mode": mode, "files": [f.name for f in files], "command": " ".join(cmd[1:])}
    try:
        done = subprocess.run(cmd, cwd=tests.parent, env=subprocess_env(gpu=not dry_run), capture_output=True,
                              text=True, timeout=max(1.0, timeout_s), check=False)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        out = out or ""
        reason = f"pytest timed out after {timeout_s:.0f} s"
        return {**base, "status": "failed", "reason": reason, "counts": parse_counts(out),
                "returncode": None, "tail": out[-TAIL_CHARS:]}  # fmt: skip
    output = done.stdout + done.stderr
    counts = parse_counts(done.stdout)
    ran = counts["collected"] if dry_run else sum(counts[k] for k in ("passed", "failed", "skipped", "error"))
    ok = done.returncode == 0 and ran > 0
    reason = None
    if not ok:
        reason = f"pytest exited {done.returncode}: {counts['failed']} failed, {counts['error']} errors"
        if ran == 0:
            reason = f"pytest exited {done.returncode} and ran no test"
    return {**base, "status": "ok" if ok else "failed", "reason": reason, "counts": counts,
            "returncode": done.returncode, "tail": None if ok else output[-TAIL_CHARS:]}  # fmt: skip
