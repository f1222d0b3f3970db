"""`zeroseg-bench [CKPT|BUNDLE]`: every backend side by side, end to end; its arithmetic; bad input.

The end-to-end run uses the bundled model with the export tests' shared ONNX bundle and AOTInductor
package (`--onnx-bundle`, `--aoti-bundle`), so nothing is exported twice in one test run; every other
backend that can run here is built by the bench itself. Speed is not asserted (these machines are
shared and noisy): only that every documented field is there, consistent, and that the engines of
the same model agree with PyTorch within their gates.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import export_helpers as eh
import helpers
import numpy as np
import pytest
from aoti_cache import cached_bundle, cached_executorch_bundle
from helpers import assert_one_line_error
from PIL import Image

from zeroseg.bench.compare import rows as rows_mod
from zeroseg.bench.compare.backends import BACKENDS, DEFAULT_NAMES, parse_backends
from zeroseg.bench.compare.measure import pixel_agreement
from zeroseg.bench.timing import describe
from zeroseg.errors import ZerosegError

ROW_FIELDS = {
    "backend", "precision", "batch_size", "fused", "latency_ms", "stages", "images_per_s", "images_per_s_sd",
    "speedup_vs_torch", "speedup_per_repeat", "speedup_flips", "pixel_agreement", "agreement_gate",
    "below_gate", "miou", "embedding_cosine", "peak_mem_mb", "load_mb", "run_mem_mb", "first_call_ms",
    "prepare_s", "gflops", "peak_fraction", "peak_used", "peak_gflops", "int8_flop_share", "status",
    "status_symbol",
}  # fmt: skip
QUICK = ["--iters", "2", "--warmup", "1", "--repeat", "2", "--dataset-images", "4", "--image-size", "160x120"]


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


# ---- arithmetic ----------------------------------------------------------------------------------


def test_speedups_flips_and_a_row_match_numpy() -> None:
    torch_ms = [[10.0, 12.0, 11.0], [20.0, 22.0, 21.0]]
    other_ms = [[5.0, 6.0, 4.0], [25.0, 24.0, 26.0]]
    ratios = rows_mod.speedups(torch_ms, other_ms)
    assert ratios == pytest.approx([np.mean(torch_ms[0]) / np.mean(other_ms[0]), 21.0 / 25.0])
    assert rows_mod.flips(ratios) and not rows_mod.flips([1.2, 1.5]) and not rows_mod.flips([0.5, 0.9])
    facts = {"precision": "fp32", "fused": True, "gate": 0.999, "pixel_agreement": 0.9995, "load_mb": 10.0}
    series = {s: other_ms for s in ("preprocess", "encoder", "head", "encoder_head", "full")}
    baseline = {"full": torch_ms}
    row = rows_mod.build_row("onnxruntime", 4, facts, series, baseline, 5.0, 2.0, {"gflops": 100.0})
    pooled = np.concatenate(other_ms)
    assert ROW_FIELDS <= row.keys()
    assert row["latency_ms"]["p50"] == pytest.approx(np.percentile(pooled, 50))
    assert row["latency_ms"]["p99"] == pytest.approx(np.percentile(pooled, 99))
    assert row["latency_ms"]["sd"] == pytest.approx(np.std(pooled, ddof=1))
    per_repeat = [4 / (np.mean(r) / 1e3) for r in other_ms]
    assert row["images_per_s"] == pytest.approx(np.mean(per_repeat))
    assert row["images_per_s_sd"] == pytest.approx(np.std(per_repeat, ddof=1))
    assert row["speedup_vs_torch"] == pytest.approx(np.mean(np.concatenate(torch_ms)) / pooled.mean())
    assert row["speedup_flips"] and row["stages"]["encoder"] is None and row["stages"]["head"] is None
    assert row["peak_mem_mb"] == 15.0 and row["gflops"] == pytest.approx(2.0 * row["images_per_s"])
    assert row["peak_fraction"] == pytest.approx(row["gflops"] / 100.0) and row["peak_used"] == "fp32"
    assert (row["status"], row["status_symbol"]) == ("passed", "✅")
    below = {**facts, "below_gate": True}
    low = rows_mod.build_row("onnxruntime", 4, below, series, baseline, 5.0, 2.0, None)
    assert (low["status"], low["status_symbol"]) == ("failed_gate", "❎") and low["peak_fraction"] is None
    assert row["stages"]["full"] == describe(other_ms)


def test_pixel_agreement_counts_equal_pixels_over_all_images() -> None:
    a = [np.zeros((2, 2), np.int32), np.ones((1, 4), np.int32)]
    b = [np.array([[0, 1], [0, 0]], np.int32), np.ones((1, 4), np.int32)]
    assert pixel_agreement(a, b) == pytest.approx(7 / 8)
    assert pixel_agreement(a, a) == 1.0 and pixel_agreement([], []) is None
    assert pixel_agreement(a, b[:1]) is None


def test_backend_names_are_checked() -> None:
    assert parse_backends(" torch , onnxruntime,torch") == ("torch", "onnxruntime")
    assert parse_backends(None) is None and parse_backends(" ") is None
    with pytest.raises(ZerosegError, match="unknown onnx.*choose from"):
        parse_backends("torch,onnx")
    assert set(BACKENDS) >= {"torch", "compile", "onnxruntime", "onnxruntime-int8", "openvino", "aoti",
                             "tensorrt", "maskclip", "clearclip", "sclip", "naclip"}  # fmt: skip
    assert "maskclip" in DEFAULT_NAMES and not {"clearclip", "sclip", "naclip"} & set(DEFAULT_NAMES)


# ---- end to end ----------------------------------------------------------------------------------


def _bench_process(*args) -> helpers.CliResult:
    """`zeroseg-bench ARGS...` in a process of its own, as users run it.

    The every-backend run loads ONNX Runtime, OpenVINO, an AOTInductor library and torch.compile's
    code into one process; run inside the test worker, a later fork of that worker (a subprocess, a
    DataLoader worker) was seen to die with SIGSEGV in 3 of 4 suite runs, so that state stays here.
    """
    code = "import sys; from zeroseg.bench.cli import main; sys.argv[0] = 'zeroseg-bench'; main()"
    proc = subprocess.run([sys.executable, "-c", code, *(str(a) for a in args)], capture_output=True,
                          text=True, timeout=1500)  # fmt: skip
    return helpers.CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.slow  # every backend exported (four ONNX bundles: fused, unfused, two int8 attention) and timed
def test_every_backend_side_by_side_on_the_bundled_model(tmp_path_factory, tmp_path) -> None:
    onnx_bundle, _ = eh.shapeworld_bundle(tmp_path_factory)
    out, picture = tmp_path / "compare.json", tmp_path / "compare.png"
    bundles = ["--onnx-bundle", onnx_bundle, "--aoti-bundle", cached_bundle("dense"),  # the model's own head
               "--executorch-bundle", cached_executorch_bundle()]  # fmt: skip
    run = _bench_process(*bundles, "--short-side", "128", "--batch-sizes", "1,2", *QUICK, "--threads", "2",
                         "--json", out, "--plot", picture)  # fmt: skip
    assert run.code == 0, (run.out, run.err)
    data = json.loads(out.read_text())
    ran = {r["backend"] for r in data["rows"]}
    skipped = {s["backend"]: s["reason"] for s in data["skipped"]}
    assert ran | set(skipped) == set(DEFAULT_NAMES) and not ran & set(skipped)  # the opt-in rows: not run
    assert {"torch", "compile", "onnxruntime", "onnxruntime-int8", "openvino", "aoti", "maskclip"} <= ran
    assert {"executorch", "executorch-int8"} <= ran
    assert {"onnxruntime-noflash", "onnxruntime-unfused"} <= ran  # the fused-attention A/B rows
    assert [s["backend"] for s in data["status"]] == list(DEFAULT_NAMES)
    for s in data["status"]:
        assert s["symbol"] == {"passed": "✅", "failed_gate": "❎", "not_run": "❌"}[s["status"]], s
        assert (s["backend"] in skipped) == (s["backend"] not in ran) and s["reason"]
        assert s["status"] != "not_run" or s["backend"] in skipped
    assert "tensorrt" in skipped and "TensorRT" in skipped["tensorrt"]
    assert data["env"]["cpu"]["flags"] is not None and "OMP_WAIT_POLICY" in data["env"]["env_vars"]
    assert data["settings"]["short_side"] == 128 and data["settings"]["dataset"]["images"] == 4
    for row in data["rows"]:
        assert ROW_FIELDS <= row.keys(), ROW_FIELDS - row.keys()
        lat = row["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and _finite(lat["sd"]), row
        assert row["images_per_s"] > 0 and row["batch_size"] in (1, 2)
        assert row["stages"]["full"]["n"] == 4 and row["stages"]["full"]["repeats"] == 2
        assert 0.0 <= row["miou"] <= 1.0 and row["first_call_ms"] > 0 and row["prepare_s"] >= 0
        assert _finite(row["speedup_vs_torch"]) and len(row["speedup_per_repeat"]) == 2
        if row["backend"] == "maskclip":
            assert row["pixel_agreement"] is None and row["agreement_gate"] is None
        elif not row["backend"].startswith("onnxruntime-int8-"):  # the same model's engines: within gate
            assert row["pixel_agreement"] >= row["agreement_gate"] if row["agreement_gate"] else True, row
            assert not row["below_gate"] and row["status_symbol"] == "✅"
        if row["backend"] == "torch":
            assert row["pixel_agreement"] == 1.0 and row["speedup_vs_torch"] == pytest.approx(1.0)
        if row["fused"]:
            assert row["stages"]["encoder"] is None and row["stages"]["encoder_head"]["n"] == 4
    fp32 = {r["backend"]: r["miou"] for r in data["rows"] if r["precision"] == "fp32"}
    assert fp32["onnxruntime"] == pytest.approx(fp32["torch"], abs=1e-3)
    assert fp32["openvino"] == pytest.approx(fp32["torch"], abs=1e-3)
    assert data["backends"]["onnxruntime-int8"]["embedding_cosine"]["mean"] > 0.9
    facts = data["backends"]
    assert facts["onnxruntime"]["graph_fused_ops"] and facts["onnxruntime-unfused"]["graph_fused_ops"] == {}
    assert facts["onnxruntime-noflash"]["graph_fused_ops"] == facts["onnxruntime"]["graph_fused_ops"]
    assert 0 < facts["onnxruntime-int8"]["int8_share"] < 1  # weight-only: attention stays fp32
    if "onnxruntime-int8-attn" in facts:  # int8 attention: may fail its export gate (then not run)
        assert facts["onnxruntime-int8-attn"]["int8_share"] > 0.99
    if "onnxruntime-int8-qk" in facts:
        assert facts["onnxruntime-int8"]["int8_share"] < facts["onnxruntime-int8-qk"]["int8_share"] < 1
    assert "runtime_layers" in facts["openvino"] and "attention_subgraphs" in facts["openvino"]
    assert data["flops"]["attention_gflop"] > 0 and data["cpu_peak"]["int8_gops"] > 0
    int8_rows = [r for r in data["rows"] if r["precision"] == "int8"]
    assert int8_rows and all(r["peak_used"] != "fp32" and r["peak_fraction"] > 0 for r in int8_rows)
    profile = data["ort_profile"]  # the fastest ONNX Runtime row's per-op profile
    assert profile["backend"].startswith("onnxruntime") and profile["runs"] == 3, profile
    assert sum(o["share"] for o in profile["by_op"]) == pytest.approx(1.0) and profile["top_nodes"]
    assert "ONNX Runtime profile of" in run.out and picture.with_name("compare-scatter.png").is_file()
    with Image.open(picture) as img:
        assert img.format == "PNG" and img.width > 600
    assert "onnxruntime-int8" in run.out and "not run: tensorrt" in run.out and f"wrote {out}" in run.out


def test_a_checkpoint_with_no_command_name_runs_compare(world, bench_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    backends = ["--backends", "torch,maskclip,naclip,tensorrt", "--teacher", world.teacher_file]
    run = bench_cli(world.checkpoint, *backends, "--batch-sizes", "1", *QUICK, "--image-size", "64x48")
    assert run.code == 0, (run.out, run.err)
    data = json.loads((tmp_path / "bench-results" / "compare.json").read_text())
    assert [r["backend"] for r in data["rows"]] == ["torch", "maskclip", "naclip"]
    assert data["skipped"][0]["backend"] == "tensorrt"
    assert data["settings"]["checkpoint"]["path"] == str(world.checkpoint)
    assert (tmp_path / "bench-results" / "compare.png").is_file()
    assert (tmp_path / "bench-results" / "compare-scatter.png").is_file()
    # every requested backend has a status; the one that could not run is a ❌ row with its reason
    status = {s["backend"]: s for s in data["status"]}
    assert [s["symbol"] for s in data["status"]] == ["✅", "✅", "✅", "❌"]
    assert status["tensorrt"]["reason"] == data["skipped"][0]["reason"]
    assert any(line.split()[:2] == ["❌", "tensorrt"] for line in run.out.splitlines())
    # FLOPs with attention: the torch row's count, split; maskclip (another network) has none
    flops = data["flops"]
    assert flops["attention_gflop"] > 0 and flops["attention_calls"]
    parts = flops["weights_gflop"] + flops["attention_gflop"] + flops["other_gflop"]
    assert parts == pytest.approx(flops["gflop_per_image"])
    torch_row, clip_row, naclip_row = data["rows"]
    assert torch_row["gflops"] == pytest.approx(flops["gflop_per_image"] * torch_row["images_per_s"])
    assert clip_row["gflops"] is None and clip_row["peak_fraction"] is None
    assert naclip_row["gflops"] is None and naclip_row["pixel_agreement"] is None
    peak = data["cpu_peak"]
    if peak is not None:  # a Linux clock was readable
        assert torch_row["peak_used"] == "fp32" and torch_row["peak_gflops"] == peak["gflops"]
        assert peak["int8_gops"] >= peak["gflops"] and peak["clock_source"]
    assert data["ort_profile"] is None  # no ONNX Runtime row


# ---- bad input -----------------------------------------------------------------------------------


def test_bad_sources_and_options_are_one_line_errors(world, bench_cli, tmp_path) -> None:
    out = tmp_path / "x.json"
    not_a_bundle = tmp_path / "folder"
    not_a_bundle.mkdir()
    truncated = tmp_path / "bad.pt"
    truncated.write_bytes(world.checkpoint.read_bytes()[:1000])
    cases = [
        ((tmp_path / "missing.pt",), "does not exist"),
        ((not_a_bundle,), "not an exported bundle"),
        ((truncated,), "bad.pt"),
        ((world.checkpoint, "--dataset", tmp_path / "nope"), "--dataset"),
        ((world.checkpoint, "--onnx-bundle", tmp_path / "nope"), "--onnx-bundle"),
        ((world.checkpoint, "--backends", "torch,tensorflow"), "unknown tensorflow"),
        ((world.checkpoint, "--int8", "int4"), "--int8"),
        ((world.checkpoint, "--batch-sizes", "0"), "--batch-sizes"),
        ((world.checkpoint, "--iters", "0"), "--iters"),
        ((world.checkpoint, "--image-size", "640by480"), "--image-size"),
        ((world.checkpoint, "--backends", "tensorrt", "--batch-sizes", "1"), "no backend could run"),
    ]
    for args, fragment in cases:
        assert_one_line_error(bench_cli(*args, "--json", out, "--plot", tmp_path / "x.png"), fragment)
        assert not out.exists() and not (tmp_path / "x.png").exists()
