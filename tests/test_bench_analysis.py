"""Where `zeroseg-bench` says the time goes: FLOPs with attention, the CPU's peaks, ONNX Runtime's
per-op profile, the status of each backend and the accuracy-latency scatter's points.

The numbers are checked against hand counts and against a real ONNX Runtime trace; the end-to-end
side (every field in a real bench run) is in tests/test_bench_compare.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zeroseg.bench.compare.flops import count_flops, int8_share, network_flops, sdpa_flops
from zeroseg.bench.compare.peak import cpu_clock_mhz, cpu_peaks, row_peak
from zeroseg.bench.compare.profile import summarize_trace
from zeroseg.bench.compare.report import scatter_path, scatter_points
from zeroseg.bench.compare.rows import SYMBOLS, status_block

# ---- FLOPs ---------------------------------------------------------------------------------------


def test_one_attention_call_counts_both_products() -> None:
    b, h, lq, lk, d = 2, 3, 17, 11, 8
    q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, d)
    got = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    assert got["total"] == 4 * b * h * lq * lk * d == sdpa_flops(q.shape, k.shape, v.shape)
    assert got["groups"] == {"weights": 0, "attention": got["total"], "other": 0}
    assert got["attention_calls"] == [{"query": [b, h, lq, d], "key": [b, h, lk, d], "flop": got["total"]}]


def test_linear_counts_as_weights_and_sums_with_attention() -> None:
    x, w = torch.randn(5, 7), torch.randn(3, 7)
    q = torch.randn(1, 2, 6, 4)
    got = count_flops(lambda: (F.linear(x, w, torch.zeros(3)), F.scaled_dot_product_attention(q, q, q)))
    assert got["groups"]["weights"] == 2 * 5 * 7 * 3
    assert got["groups"]["attention"] == 4 * 2 * 6 * 6 * 4
    assert got["total"] == sum(got["groups"].values())


def _hand_count(cfg, grid_h: int, grid_w: int) -> tuple[int, int]:
    """(weight matmuls/convs, attention) FLOPs of the student forward per image, from its config.

    Encoder: `depth` blocks over 1 + P tokens (P patches); the grouping head: `group_after[0]` blocks
    over P + G tokens, the grouping block's cross-attention (G queries to P keys) and assignment
    projections over P tokens, then the tail blocks over G tokens. A block: qkv 3D^2 + proj D^2 +
    MLP 2 x mlp_ratio x D^2 multiply-adds per token; attention 2 x L^2 x D (Q.K^T and P.V). The small
    terms over the G group tokens only (MLPs of the grouping block, projections) are left out.
    """
    d, p = cfg.embed_dim, grid_h * grid_w
    g = cfg.num_groups[0]
    block = 2 * (4 + 2 * cfg.mlp_ratio) * d * d  # FLOP per token
    weights = cfg.depth * block * (p + 1) + cfg.group_after[0] * block * (p + g) + cfg.seg_dim**2 * 2 * p
    weights += 2 * p * 3 * cfg.patch_size**2 * d  # patch embedding
    weights += 2 * p * d * (2 * d) + 2 * 2 * p * d * d  # cross-attention kv, assignment k and v
    tail = cfg.seg_depth - cfg.group_after[-1]
    weights += tail * block * g
    encoder = (p + 1) ** 2
    if cfg.attn_window is not None:  # windows of w x w slots (+ a padding window), each also sees the
        w = cfg.attn_window  # class token; the class token's query sees every token
        count = -(-grid_h // w) * -(-grid_w // w) + 1
        encoder = count * w * w * (w * w + 1) + (p + 1)
    attention = 4 * d * (cfg.depth * encoder + cfg.group_after[0] * (p + g) ** 2 + g * p + tail * g * g)
    return int(weights), int(attention)


def test_bundled_student_flops_include_attention_and_match_a_hand_count() -> None:
    """The bundled model's design as trained (global attention): the counter's attention equals the
    hand count exactly."""
    from zeroseg.bench.common import scene_images
    from zeroseg.bundled import bundled_checkpoint
    from zeroseg.checkpoint import load_checkpoint
    from zeroseg.infer.segmenter import Segmenter

    ckpt = load_checkpoint(bundled_checkpoint(), with_train_state=False)
    ckpt.config = ckpt.config.replace(student=replace(ckpt.student_config, attn_window=None))
    seg = Segmenter(ckpt, short_side=256)

    size = (256, 344)
    got = network_flops(seg, scene_images(1, (480, 640), 0), size)
    cfg = seg.model.cfg
    weights, attention = _hand_count(cfg, size[0] // cfg.patch_size, size[1] // cfg.patch_size)
    assert got["attention_gflop"] * 1e9 == pytest.approx(attention, rel=1e-9)  # exact: 8 calls by shape
    assert len(got["attention_calls"]) == 8
    assert got["weights_gflop"] * 1e9 == pytest.approx(weights, rel=0.01)
    assert got["gflop_per_image"] == pytest.approx(9.41, abs=0.01)  # ~3.56 rest + 5.85 attention
    assert got["attention_share"] == pytest.approx(attention / (got["gflop_per_image"] * 1e9))
    assert 0.6 < got["attention_share"] < 0.65 and got["network_input_hw"] == [256, 344]
    share = int8_share(got, ("weights",))
    assert share == pytest.approx(got["weights_gflop"] / got["gflop_per_image"])
    assert int8_share(got, ("weights", "attention")) > 0.99 and int8_share(got, ()) is None
    qk = int8_share(got, ("weights", "attention_qk"))  # Q.K^T only: half of attention's FLOPs
    assert qk == pytest.approx((got["weights_gflop"] + got["attention_gflop"] / 2) / got["gflop_per_image"])


def test_windowed_attention_flops_match_a_hand_count() -> None:
    """The bundled model as shipped (encoder attention in 16 x 16 windows) at its 512-px side: 64 x 86
    patches in 4 x 6 windows + the padding one, two calls per encoder block (the windows, the class
    token's query): the counter's attention equals the hand count, far below global attention's."""
    from zeroseg.bench.common import scene_images
    from zeroseg.bundled import bundled_checkpoint
    from zeroseg.export.loader import load

    seg = load(bundled_checkpoint(), device=torch.device("cpu"))
    cfg = seg.model.cfg
    assert cfg.attn_window == 16 and seg.short_side == 512
    size = (512, 688)
    got = network_flops(seg, scene_images(1, (480, 640), 0), size)
    weights, attention = _hand_count(cfg, size[0] // cfg.patch_size, size[1] // cfg.patch_size)
    assert got["attention_gflop"] * 1e9 == pytest.approx(attention, rel=1e-9)
    assert len(got["attention_calls"]) == 2 * cfg.depth + 4
    assert got["weights_gflop"] * 1e9 == pytest.approx(weights, rel=0.01)
    full = replace(cfg, attn_window=None)
    assert attention < 0.5 * _hand_count(full, size[0] // cfg.patch_size, size[1] // cfg.patch_size)[1]


# ---- peaks ---------------------------------------------------------------------------------------


def test_peaks_follow_the_flags_and_the_clock() -> None:
    clock = (2445.0, "test")
    avx2 = cpu_peaks(["avx2", "fma", "f16c"], 2, clock)
    assert avx2["gflops"] == pytest.approx(2 * 2.445 * 32) and avx2["int8_gops"] == pytest.approx(
        2 * 2.445 * 64
    )
    assert "vpmaddubsw" in avx2["int8_rule"] and avx2["clock_source"] == "test"
    assert cpu_peaks(["avx2", "fma", "avx_vnni"], 1, clock)["int8_op_per_cycle"] == 128
    vnni512 = cpu_peaks(["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"], 1, clock)
    assert (vnni512["fp32_flop_per_cycle"], vnni512["int8_op_per_cycle"]) == (64, 256)
    assert cpu_peaks(["avx512f", "avx512bw"], 1, clock)["int8_op_per_cycle"] == 128
    assert cpu_peaks(["avx512f", "amx_int8"], 1, clock)["int8_op_per_cycle"] == 2048
    assert cpu_peaks([], 4, clock)["fp32_flop_per_cycle"] == 8
    assert cpu_peaks(["avx2"], 1, (0.0, "none")) is None
    read = cpu_clock_mhz()
    assert read is None or (read[0] > 0 and read[1])


def test_each_row_is_measured_against_the_peak_of_what_it_runs() -> None:
    peaks = cpu_peaks(["avx2", "fma"], 2, (2000.0, "test"))  # fp32 128, int8 256
    assert row_peak(peaks, "fp32", None) == (128.0, "fp32")
    assert row_peak(peaks, "int8", 1.0) == (256.0, "int8")
    mixed, label = row_peak(peaks, "int8", 0.4)  # time at peak: 0.4/256 + 0.6/128 per FLOP
    assert mixed == pytest.approx(1 / (0.4 / 256 + 0.6 / 128)) and "40%" in label
    assert row_peak(None, "fp32", None) == (None, None)
    assert row_peak({"gflops": 100.0}, "int8", 0.5) == (100.0, "fp32")  # no int8 peak known


# ---- ONNX Runtime's profile ----------------------------------------------------------------------


def _tiny_graph(path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1, w2 = (numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), n) for n in "ab")
    nodes = [helper.make_node("MatMul", ["x", "a"], ["h"], name="mm1"),
             helper.make_node("Softmax", ["h"], ["s"], name="soft", axis=-1),
             helper.make_node("MatMul", ["s", "b"], ["y"], name="mm2")]  # fmt: skip
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [64, 32]) for n in "xy")
    graph = helper.make_graph(nodes, "tiny", [x], [y], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_the_profile_summary_reads_a_real_onnxruntime_trace(tmp_path) -> None:
    import json

    import onnxruntime as ort

    _tiny_graph(tmp_path / "tiny.onnx")
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "prof")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(tmp_path / "tiny.onnx"), opts, providers=["CPUExecutionProvider"])
    for _ in range(4):
        session.run(None, {"x": np.ones((64, 32), np.float32)})
    events = json.loads(open(session.end_profiling()).read())
    got = summarize_trace(events, skip_runs=1)
    assert got["runs"] == 3
    ops = {o["op"]: o for o in got["by_op"]}
    assert set(ops) == {"MatMul", "Softmax"} and ops["MatMul"]["nodes"] == 2 and ops["Softmax"]["nodes"] == 1
    assert sum(o["share"] for o in got["by_op"]) == pytest.approx(1.0)
    assert {n["node"] for n in got["top_nodes"]} == {"mm1", "mm2", "soft"}
    assert 0 < got["kernel_ms_per_run"] <= got["model_run_ms"]
    everything = summarize_trace(events, skip_runs=0)
    assert everything["runs"] == 4


# ---- status and the scatter ----------------------------------------------------------------------


def test_status_says_passed_failed_gate_or_not_run_with_the_reason() -> None:
    info = {
        "torch": {"gate": None, "pixel_agreement": 1.0, "below_gate": False},
        "onnxruntime-int8": {"gate": 0.98, "pixel_agreement": 0.95, "below_gate": True},
        "onnxruntime": {"gate": 0.999, "pixel_agreement": 0.9995, "below_gate": False},
    }
    names = ["torch", "onnxruntime", "onnxruntime-int8", "tensorrt", "onnxruntime-int8-attn"]
    refused = "could not be exported: parity gate failed: segmenter.int8.onnx 97.8% < 98.00%"
    skipped = {"tensorrt": "TensorRT is not installed", "onnxruntime-int8-attn": refused}
    got = status_block(names, info, skipped, {"tensorrt": "fp16"})
    assert [s["backend"] for s in got] == names
    assert [s["symbol"] for s in got] == ["✅", "✅", "❎", "❌", "❎"]
    assert [s["status"] for s in got] == ["passed", "passed", "failed_gate", "not_run", "failed_gate"]
    assert got[4]["reason"] == refused
    assert got[3]["reason"] == "TensorRT is not installed" and got[3]["precision"] == "fp16"
    assert "95.0000% < gate 98.00%" in got[2]["reason"] and SYMBOLS["not_run"] == "❌"


def _row(name: str, batch: int, p50: float, miou, agree) -> dict:
    precision = "int8" if "int8" in name else "fp32"
    return {"backend": name, "precision": precision, "batch_size": batch, "latency_ms": {"p50": p50},
            "miou": miou, "pixel_agreement": agree, "status_symbol": "✅"}  # fmt: skip


def test_scatter_points_use_batch_one_and_fall_back_to_agreement(tmp_path) -> None:
    rows = [_row("torch", 1, 100.0, 0.5, 1.0), _row("torch", 4, 300.0, 0.5, 1.0),
            _row("onnxruntime-int8", 1, 50.0, 0.49, 0.99)]  # fmt: skip
    metric, points = scatter_points({"rows": rows})
    assert metric == "miou" and [(p["backend"], p["latency_ms"], p["y"]) for p in points] == [
        ("torch", 100.0, 0.5), ("onnxruntime-int8", 50.0, 0.49)]  # fmt: skip
    no_miou = [dict(r, miou=None) for r in rows]
    metric, points = scatter_points({"rows": no_miou})
    assert metric == "pixel_agreement" and [p["y"] for p in points] == [1.0, 0.99]
    assert scatter_path(tmp_path / "compare.png") == tmp_path / "compare-scatter.png"


# ---- cached export refusals ----------------------------------------------------------------------


def test_an_export_refused_by_its_gate_is_cached_as_the_refusal(tmp_path, monkeypatch) -> None:
    from zeroseg.bench.compare.engines import REFUSED, cached_export
    from zeroseg.errors import ZerosegError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    calls = []

    def refused_export(out):
        calls.append(out)
        raise ZerosegError("parity gate failed: segmenter.int8.onnx label agreement 90% < 98%")

    for _ in range(2):
        with pytest.raises(ZerosegError, match="parity gate failed"):
            cached_export("onnx-x", ckpt, {"a": 1}, refused_export, log=lambda _: None)
    assert len(calls) == 1  # the second run read the cached refusal
    assert len(list((tmp_path / "cache").rglob(REFUSED))) == 1

    def other_failure(out):  # not a gate verdict (a missing package, a full disk): never cached
        calls.append(out)
        raise ZerosegError("onnxscript is not installed")

    for _ in range(2):
        with pytest.raises(ZerosegError, match="onnxscript"):
            cached_export("onnx-y", ckpt, {"a": 1}, other_failure, log=lambda _: None)
    assert len(calls) == 3
