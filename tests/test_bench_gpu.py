"""`zeroseg-bench gpu`: its dry run executes every step on the CPU and writes the promised JSON and
Markdown; without a GPU (and without --dry-run) it refuses in one line and writes nothing; a step
that fails or does not fit the budget is recorded while the others run; the peak tables' rule."""

from __future__ import annotations

import json
import math

import helpers
import pytest
import torch

from zeroseg.bench.gpu import kernels_step, peaks
from zeroseg.bench.gpu import run as gpu_run

pytestmark = pytest.mark.usefixtures("one_thread")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.mark.slow  # over 30 s on 2 cores: a pytest subprocess, four Dynamo captures, two torch.exports
def test_dry_run_runs_every_step_and_writes_json_and_markdown(bench_cli, tmp_path) -> None:
    out = tmp_path / "gpu"
    run = bench_cli("gpu", "--out", out, "--dry-run")
    assert run.code == 0, (run.code, run.out, run.err)
    assert sorted(p.name for p in out.iterdir()) == ["gpu.json", "gpu.md"]  # the scratch folder is gone
    data = json.loads((out / "gpu.json").read_text())
    assert data["schema"] == "zeroseg-bench/gpu/v1" and data["dry_run"] is True
    steps = data["steps"]
    assert list(steps) == ["kernels", "head", "models"]
    assert {k: v["status"] for k, v in steps.items()} == dict.fromkeys(steps, "ok"), steps
    assert all(_finite(v["seconds"]) for v in steps.values())

    kernels = steps["kernels"]
    assert kernels["counts"]["collected"] > 10 and "--collect-only" in kernels["command"]
    assert {"test_kernels_head.py", "test_kernels_compile.py"} <= set(kernels["files"])
    assert "test_kernels_vectorized.py" not in kernels["files"]  # no GPU case there

    head = steps["head"]
    assert head["size"] == {"B": 2, "C": 5, "K": 8, "grid": 4, "side": 32, "D": 64}
    for key in ("speedup", "fused_GB_per_s", "fraction_of_peak_bandwidth"):
        assert _finite(head[key]) and head[key] > 0, key
    assert head["label_agreement"] == 1.0

    models = steps["models"]
    assert set(models["models"]) == {"bundled", "tiny"}
    assert all(m["flops_per_image"] > 0 for m in models["models"].values())
    got = {(r["model"], r["engine"], r["batch"]) for r in models["rows"]}
    assert got == {
        (m, e, b) for m in ("bundled", "tiny") for e in ("eager", "compile", "aoti") for b in (1, 2)
    }
    for row in models["rows"]:
        assert row["status"] == "ok", row
        assert all(
            _finite(row[k]) and row[k] > 0 for k in ("p50_ms", "p90_ms", "images_per_s", "achieved_tflops")
        )
        assert row["mfu"] is None  # no compute peak on a CPU: never a guess
    assert data["peaks"]["compute"]["tflops"] is None and data["peaks"]["bandwidth"]["peak_bytes_per_s"] > 0

    text = (out / "gpu.md").read_text()
    assert "dry run" in text and "| kernels | ok |" in text and "| head | ok |" in text
    assert text.count("| ok |") >= 12 and "| tiny | aoti | 2 | 32x32 |" in text
    assert "zeroseg-bench gpu" in run.out and "wrote" in run.out


def test_without_cuda_refuses_in_one_line_and_writes_nothing(bench_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu"
    helpers.assert_one_line_error(bench_cli("gpu", "--out", out), "no CUDA device", "--dry-run")
    assert not out.exists()


def test_bad_options_are_one_line_errors(bench_cli, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    helpers.assert_one_line_error(bench_cli("gpu", "--dry-run", "--out", blocker / "sub"), "--out", "a file")
    helpers.assert_one_line_error(bench_cli("gpu", "--dry-run", "--out", blocker), "--out", "is a file")
    bad = tmp_path / "never"
    helpers.assert_one_line_error(
        bench_cli("gpu", "--dry-run", "--out", bad, "--steps", "head,gpu"), "--steps"
    )
    helpers.assert_one_line_error(
        bench_cli("gpu", "--dry-run", "--out", bad, "--precision", "int4"), "--precision"
    )
    helpers.assert_one_line_error(
        bench_cli("gpu", "--dry-run", "--out", bad, "--budget-s", "0"), "--budget-s"
    )
    assert not bad.exists()


def test_failed_and_missing_steps_are_recorded_while_the_others_run(bench_cli, tmp_path, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(kernels_step, "find_tests_dir", lambda: None)
    monkeypatch.setattr("zeroseg.bench.gpu.head_step.run_head", boom)
    out = tmp_path / "gpu"
    run = bench_cli("gpu", "--dry-run", "--out", out, "--steps", "kernels,head")
    helpers.assert_one_line_error(run, "step failed: head (RuntimeError: boom)", "gpu.json")
    steps = json.loads((out / "gpu.json").read_text())["steps"]
    assert steps["kernels"]["status"] == "skipped" and "tests/ not found" in steps["kernels"]["reason"]
    assert steps["head"] == {
        "status": "failed",
        "reason": "RuntimeError: boom",
        "seconds": steps["head"]["seconds"],
    }
    assert steps["models"]["status"] == "skipped" and steps["models"]["reason"] == "not in --steps"
    assert "| head | failed |" in (out / "gpu.md").read_text()


def test_a_spent_budget_skips_the_step_with_its_reason() -> None:
    budget = gpu_run.Budget(1e-9)
    result = gpu_run.run_step("models", lambda: pytest.fail("must not run"), budget, log=lambda _: None)
    assert (
        result["status"] == "skipped"
        and "time budget" in result["reason"]
        and "--budget-s" in result["reason"]
    )


def test_kernel_test_discovery_and_pytest_summary_parsing() -> None:
    tests = kernels_step.find_tests_dir()
    assert tests is not None and (tests / "conftest.py").is_file()
    assert kernels_step.parse_counts("x\n3 passed, 1 failed, 2 skipped, 1 error in 4.20s\n") == {
        "passed": 3, "failed": 1, "skipped": 2, "error": 1, "xfailed": 0, "xpassed": 0, "deselected": 0,
        "collected": 0,
    }  # fmt: skip
    assert kernels_step.parse_counts("219 tests collected in 4.21s")["collected"] == 219
    assert kernels_step.parse_counts("== 2 errors in 1s ==")["error"] == 2
    env = kernels_step.subprocess_env(gpu=True)
    assert "TRITON_INTERPRET" not in env and env["ZEROSEG_TEST_GPU"] == "1"


@pytest.mark.parametrize(
    ("name", "precision", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.5),
        ("NVIDIA H100 PCIe", "tf32", 378.0),
        ("NVIDIA H200", "fp32", 66.9),
        ("NVIDIA H200 NVL", "bf16", 835.5),
        ("NVIDIA GeForce GTX 1080", "bf16", None),
    ],
)
def test_compute_peak_comes_from_the_device_name(name, precision, tflops) -> None:
    peak = peaks.compute_peak(name, "cuda", precision)
    assert peak["tflops"] == tflops and peak["precision"] == precision
    assert ("datasheet table entry" in peak["source"]) == (tflops is not None)
