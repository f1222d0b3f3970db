"""`zeroseg-bench`: every command on tiny settings writes the JSON it promises; statistics; bad input.

The commands run in-process through the console entry point (`zeroseg.bench.cli.main`, so `run_app`
turns errors into one line and exit status 2), on a checkpoint built here: a random tiny student and
the text tower of a tiny random open_clip CLIP, saved with `save_checkpoint`.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from zeroseg.bench import head_bench
from zeroseg.bench.timing import describe, percentile, rate, sample_times

STAT_KEYS = {"n", "repeats", "mean_ms", "sd_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms"}
TINY_LATENCY = [
    "--warmup",
    "1",
    "--iters",
    "2",
    "--repeat",
    "2",
    "--text-iters",
    "2",
    "--image-size",
    "64x48",
]


def _ok(run):
    assert run.code == 0, (run.code, run.out, run.err)
    return run


def _positive_finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _check_stats(stats: dict, n: int) -> None:
    assert STAT_KEYS <= stats.keys()
    assert stats["n"] == n
    assert all(_positive_finite(stats[k]) for k in STAT_KEYS if k.endswith("_ms") and k != "sd_ms")
    assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]


# ---- statistics -------------------------------------------------------------------------------------


def test_percentiles_and_stats_match_numpy() -> None:
    rng = np.random.default_rng(0)
    for values in ([3.0], [5.0, 1.0], list(rng.gamma(2.0, 3.0, size=37)), [1.0, 2.0, 3.0, 4.0, 100.0]):
        for q in (0, 1, 5, 25, 50, 90, 95, 99, 100):
            assert percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-12, abs=1e-12)
    reps = [[1.0, 2.0, 3.0, 10.0], [2.0, 2.5, 3.5, 4.0], [1.5, 1.0, 9.0, 2.0]]
    pooled = np.array(reps).ravel()
    st = describe(reps)
    assert st["n"] == 12 and st["repeats"] == 3
    assert st["mean_ms"] == pytest.approx(pooled.mean())
    assert st["sd_ms"] == pytest.approx(pooled.std(ddof=1))
    assert (st["min_ms"], st["max_ms"]) == (1.0, 10.0)
    for q in (50, 90, 95, 99):
        assert st[f"p{q}_ms"] == pytest.approx(np.percentile(pooled, q))
    means = np.array(reps).mean(axis=1)
    assert st["repeat_means_ms"] == pytest.approx(list(means))
    assert st["repeat_sd_ms"] == pytest.approx(means.std(ddof=1))
    assert st["repeat_cv"] == pytest.approx(means.std(ddof=1) / means.mean())
    thr = rate(8, [[100.0, 100.0], [200.0, 200.0]])  # 8 images per call of 100 ms, then of 200 ms
    assert thr["per_repeat"] == pytest.approx([80.0, 40.0]) and thr["mean"] == pytest.approx(60.0)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_sample_times_discards_the_warmup() -> None:
    calls = []
    times = sample_times(lambda: calls.append(1), torch.device("cpu"), warmup=3, iters=5)
    assert len(calls) == 8 and len(times) == 5 and all(t >= 0 for t in times)


# ---- commands ---------------------------------------------------------------------------------------


def test_latency_writes_per_stage_distributions(world, bench_cli, tmp_path) -> None:
    out = tmp_path / "lat.json"
    run = _ok(bench_cli("latency", world.checkpoint, "--batch", "1,2", *TINY_LATENCY, "--json", out))
    data = json.loads(out.read_text())
    assert data["schema"] == "zeroseg-bench/latency/v1" and data["command"] == "latency"
    env = data["env"]
    assert {"torch", "triton", "open_clip", "zeroseg"} <= env["versions"].keys()
    assert env["cpu"]["model"] and env["cpu"]["torch_threads"] >= 1 and "available" in env["cuda"]
    settings = data["settings"]
    assert settings["batches"] == [1, 2] and settings["backend_resolved"] == "vectorized"
    assert settings["image_size_hw"] == [48, 64] and settings["network_input_hw"] == [64, 88]
    assert settings["checkpoint"]["sha256"] and set(settings["stages"]) >= {"preprocess", "head", "full"}
    text = data["text"]
    assert _positive_finite(text["cold_ms"]) and text["prompts"] == 6 * 2  # 6 colours x 2 templates
    _check_stats(text["encode"], 2)
    _check_stats(text["cached"], 4)
    assert [b["batch"] for b in data["batches"]] == [1, 2]
    for b in data["batches"]:
        assert set(b["stages"]) == {"preprocess", "forward", "head", "full"}
        for stats in b["stages"].values():
            _check_stats(stats, 4)
            assert len(stats["repeat_means_ms"]) == 2
        assert _positive_finite(b["images_per_s"]["mean"]) and len(b["images_per_s"]["per_repeat"]) == 2
    summary = data["summary"]
    assert _positive_finite(summary["bs1_latency_ms"]["p50"]) and summary["throughput"]["batch"] in (1, 2)
    assert "bs1 latency" in run.out and "preprocess" in run.out and f"wrote {out}" in run.out


def test_train_reports_throughput_and_peak_memory(bench_cli, tmp_path) -> None:
    out = tmp_path / "train.json"
    run = _ok(
        bench_cli("train", "--batch-size", "2", "--steps", "2", "--warmup-steps", "1", "--image-size", "32",
              "--grids", "1,2", "--device", "cpu", "--json", out)
    )  # fmt: skip
    data = json.loads(out.read_text())
    assert (
        data["command"] == "train" and data["settings"]["views"] == 5 and data["settings"]["image_size"] == 32
    )
    assert "synthetic teacher targets" in data["settings"]["what"]
    _check_stats(data["step"], 2)
    assert _positive_finite(data["images_per_s"])
    assert data["images_per_s"] == pytest.approx(2 / (data["step"]["mean_ms"] / 1e3))
    mem = data["memory"]
    assert mem["kind"] == "cpu_rss" and mem["peak_bytes"] > 0 and mem["peak_increase_bytes"] >= 0
    assert "getrusage" in mem["what"] and _positive_finite(data["model"]["parameters"])
    assert "images/s" in run.out and "peak memory" in run.out


def test_cache_reports_images_and_views_per_second(world, bench_cli, tmp_path, monkeypatch) -> None:
    from zeroseg import bundled

    monkeypatch.setattr(bundled, "bundled_teacher", lambda: world.teacher_file)  # the default teacher
    out = tmp_path / "cache.json"
    run = _ok(bench_cli("cache", "--images", "4", "--batch-size", "2", "--grids", "1,2", "--device", "cpu",
                    "--json", out))  # fmt: skip
    data = json.loads(out.read_text())
    assert data["settings"]["teacher"] == str(world.teacher_file) and data["settings"]["views_per_image"] == 5
    assert data["images"] == 4 and _positive_finite(data["seconds"])
    assert data["views_per_s"] == pytest.approx(5 * data["images_per_s"]) and _positive_finite(
        data["images_per_s"]
    )
    assert data["cache_bytes"] > 0 and "views/s" in run.out


def test_head_delegates_to_the_kernel_benchmark(bench_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = _ok(bench_cli("head", "--device", "cpu", "--quick"))
    data = json.loads((tmp_path / "bench-results" / "head.json").read_text())
    assert any(r["op"] == "segment_head" for r in data["rows"]) and "segment_head" in run.out


def test_bench_head_help_gives_the_out_default(capsys):
    with pytest.raises(SystemExit):
        head_bench.parse_args(["--help"])
    assert "default bench-results/head.json" in " ".join(capsys.readouterr().out.split())


def test_env_lists_versions_and_runtimes(bench_cli, tmp_path) -> None:
    out = tmp_path / "env.json"
    run = _ok(bench_cli("env", "--json", out))
    env = json.loads(out.read_text())["env"]
    runtimes = env["runtimes"]
    assert isinstance(runtimes["tensorrt"]["python_package"], bool) and "trtexec" in runtimes["tensorrt"]
    assert "CPUExecutionProvider" in runtimes["onnxruntime"]["providers"]
    assert env["versions"]["torch"] and "tensorrt" in run.out and "onnxruntime" in run.out


# ---- bad input --------------------------------------------------------------------------------------


def _one_line_error(run, *fragments: str) -> None:
    assert run.code == 2, (run.code, run.out, run.err)
    lines = [line for line in run.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    assert "Traceback" not in run.err + run.out
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--batch", "0"], "--batch"),
        (["--batch", "1,x"], "--batch"),
        (["--iters", "0"], "--iters"),
        (["--repeat", "0"], "--repeat"),
        (["--warmup", "-1"], "--warmup"),
        (["--backend", "tensorrt"], "--backend"),
        (["--image-size", "640by480"], "--image-size"),
        (["--classes", "cat,cat"], "more than once"),
    ],
)
def test_bad_latency_options_are_one_line_errors(world, bench_cli, tmp_path, args, fragment) -> None:
    _one_line_error(bench_cli("latency", world.checkpoint, *args, "--json", tmp_path / "x.json"), fragment)
    assert not (tmp_path / "x.json").exists()


def test_missing_or_unusable_inputs_are_one_line_errors(bench_cli, tmp_path, monkeypatch) -> None:
    from zeroseg import bundled

    _one_line_error(bench_cli("latency", tmp_path / "missing.pt"), "checkpoint not found")
    monkeypatch.setattr(bundled, "ASSETS", tmp_path / "no-assets")
    _one_line_error(bench_cli(), "bundled checkpoint")
    _one_line_error(bench_cli("cache", "--images", "2", "--device", "cpu"), "bundled teacher")
    _one_line_error(bench_cli("train", "--batch-size", "0"), "--batch-size")
    _one_line_error(bench_cli("train", "--steps", "0"), "--steps")
    _one_line_error(bench_cli("train", "--preset", "huge", "--device", "cpu"), "unknown preset")
    _one_line_error(bench_cli("train", "--image-size", "30", "--device", "cpu"), "multiple of patch_size")
    _one_line_error(bench_cli("cache", "--images", "0"), "--images")
    _one_line_error(bench_cli("latency", "--threads", "-1"), "--threads")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_one_line_error(world, bench_cli) -> None:
    _one_line_error(bench_cli("latency", world.checkpoint, "--device", "cuda"), "no CUDA device")
    _one_line_error(bench_cli("train", "--device", "cuda"), "no CUDA device")
    _one_line_error(bench_cli("head", "--device", "cuda", "--quick"), "no CUDA device")


@pytest.mark.parametrize("command", ["latency", "compare", "serve"])
@pytest.mark.parametrize("size,fragment", [("100000x100000", "more than the"), ("12000x9000", "available")])
def test_image_sizes_that_cannot_fit_are_refused_before_allocating(
    world, bench_cli, tmp_path, monkeypatch, command, size, fragment
) -> None:
    """`zeroseg-bench --image-size 100000x100000` was OOM-killed at 17.7 GB. Sizes over the pixel cap
    of an image (`MAX_PIXELS`), or whose images would not fit in the memory available (`zeroseg
    segment`'s estimate, here with 2 GiB available), are one line before anything is allocated or
    loaded: making images or loading a model fails loudly."""
    import zeroseg.infer.files
    import zeroseg.shapeworld.write
    from zeroseg.bench import serve_load
    from zeroseg.export import loader

    def forbidden(*args, **kwargs):
        raise AssertionError("allocated or loaded before the refusal")

    monkeypatch.setattr(zeroseg.infer.files, "available_memory", lambda: 2 * 2**30)
    monkeypatch.setattr(zeroseg.shapeworld.write, "generate_scene", forbidden)
    monkeypatch.setattr(loader, "load", forbidden)
    monkeypatch.setattr(serve_load, "expected_labels", forbidden)
    source = ["--checkpoint", str(world.checkpoint)] if command == "serve" else [str(world.checkpoint)]
    run = bench_cli(command, *source, "--image-size", size, "--json", tmp_path / "x.json")
    _one_line_error(run, "--image-size", fragment)
    assert not (tmp_path / "x.json").exists()
