"""segment_head / dense_head end to end, the backend dispatch, and a CPU smoke run of the benchmark."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

import zeroseg.kernels as zk
from zeroseg.errors import ZerosegError
from zeroseg.kernels import dispatch, reference
from zeroseg.kernels.results import HeadResult

BACKENDS = ["torch", "vectorized", "triton"]
DEVICE = "cuda" if os.environ.get("ZEROSEG_TEST_GPU") == "1" else "cpu"


def _dev(*tensors):
    return [t.to(DEVICE) for t in tensors]


def _cpu(res: HeadResult) -> HeadResult:
    return HeadResult(*(t.cpu() for t in res))


def _oracle_sim(tokens: torch.Tensor, text: torch.Tensor, scale: float):
    """float64 class index, its probability, and all probabilities per token."""
    t = tokens.double() / tokens.double().norm(dim=-1, keepdim=True)
    e = text.double() / text.double().norm(dim=-1, keepdim=True)
    probs = torch.softmax(scale * t @ e.T, dim=-1)
    prob, index = probs.max(dim=-1)
    return index, prob, probs


def _data(b, k, d, c, grid, seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, k, d, generator=g)
    text = torch.randn(c, d, generator=g)
    maps = torch.rand(b, k, grid, grid, generator=g)
    return tokens, text, maps


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "c,size,kw",
    [
        (150, (56, 56), {}),  # scale 8, defaults: bg 0, classes from 1
        (21, (61, 45), {"bg_label": 255, "label_offset": 0, "out_dtype": torch.uint8}),
        (300, (28, 28), {"out_dtype": torch.int16, "label_offset": 5}),
    ],
)
def test_segment_head_names_segments_then_paints_them(backend, c, size, kw):
    tokens, text, maps = _data(2, 8, 64, c, 7, seed=c)
    index, prob, _ = _oracle_sim(tokens, text, 30.0)
    thresh = round(prob.median().item(), 3)  # some segments above, some below
    res = _cpu(zk.segment_head(*_dev(tokens, text), 30.0, *_dev(maps), size, thresh, backend=backend, **kw))
    assert torch.equal(res.index, index)
    assert (res.prob.double() - prob).abs().max() <= 1e-5
    off, bg, dtype = kw.get("label_offset", 1), kw.get("bg_label", 0), kw.get("out_dtype", torch.int32)
    want = reference.upsample_labels_ref(
        maps, index + off, prob.float(), size, thresh, bg_label=bg, out_dtype=dtype
    )
    assert res.labels.dtype == dtype and torch.equal(res.labels, want)
    assert (res.labels == bg).any() and (res.labels != bg).any()  # both outcomes of the threshold


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("c,grid,size", [(21, (6, 5), (48, 40)), (70, (4, 4), (4, 4))])
def test_dense_head_upsamples_class_probabilities(backend, c, grid, size):
    g = torch.Generator().manual_seed(c)
    patches = torch.randn(2, *grid, 32, generator=g)
    text = torch.randn(c, 32, generator=g)
    index, prob, probs = _oracle_sim(patches.flatten(1, 2), text, 100.0)
    thresh = round(prob.median().item(), 3)
    res = _cpu(zk.dense_head(*_dev(patches, text), 100.0, size, thresh, backend=backend))
    assert torch.equal(res.index, index.view(2, *grid))
    assert (res.prob.double() - prob.view(2, *grid)).abs().max() <= 1e-5
    maps = probs.float().transpose(1, 2).reshape(2, c, *grid)
    table = (torch.arange(c) + 1).expand(2, c)
    want = reference.upsample_labels_ref(maps, table, None, size, thresh)
    assert torch.equal(res.labels, want)
    assert (res.labels == 0).any() and (res.labels != 0).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_heads_on_empty_batch(backend):
    tokens, text, maps = _data(2, 8, 16, 5, 4, seed=0)
    seg = zk.segment_head(*_dev(tokens[:0], text), 10.0, *_dev(maps[:0]), (8, 8), 0.5, backend=backend)
    dense = zk.dense_head(*_dev(torch.randn(0, 3, 3, 16), text), 10.0, (6, 6), 0.5, backend=backend)
    assert seg.labels.shape == (0, 8, 8) and seg.index.shape == (0, 8) and seg.prob.shape == (0, 8)
    assert dense.labels.shape == (0, 6, 6) and dense.index.shape == (0, 3, 3)


HEAD_BAD = [
    (
        lambda t, e, m: ((t[:, :7], e, 10.0, m, (8, 8), 0.5), {}),
        "tokens (B, K) = (2, 7) and maps (B, K) = (2, 8)",
    ),
    (lambda t, e, m: ((t, e, 10.0, m.to("meta"), (8, 8), 0.5), {}), "tokens is on cpu but maps is on meta"),
    (lambda t, e, m: ((t, e, 10.0, m[0], (8, 8), 0.5), {}), "maps must have shape (B, K, h, w)"),
    (lambda t, e, m: ((t, e, 10.0, m, (8, 8), 2.0), {}), "bg_thresh must be a number in [0, 1]"),
    (lambda t, e, m: ((t, e, 10.0, m, (8, -8), 0.5), {}), "size must be a pair of positive ints"),
    (
        lambda t, e, m: ((t, e, 10.0, m, (8, 8), 0.5), {"label_offset": 251, "out_dtype": torch.uint8}),
        "class labels (label_offset + class index) span [251, 255]",  # C=5 fits exactly ...
    ),
    (
        lambda t, e, m: ((t, e, 10.0, m, (8, 8), 0.5), {"label_offset": 252, "out_dtype": torch.uint8}),
        "span [252, 256], which does not fit torch.uint8",  # ... one more does not
    ),
]


@pytest.mark.parametrize("make,message", HEAD_BAD, ids=[m for _, m in HEAD_BAD])
def test_segment_head_bad_inputs(make, message):
    tokens, text, maps = _data(2, 8, 16, 5, 4, seed=1)
    args, kwargs = make(tokens, text, maps)
    if "251" in message:  # the fitting case must run, not raise
        assert zk.segment_head(*args, **kwargs).labels.max() <= 255
        return
    with pytest.raises(ZerosegError, match=re.escape(message)) as err:
        zk.segment_head(*args, **kwargs)
    assert "\n" not in str(err.value)


def test_dense_head_bad_inputs():
    text = torch.randn(5, 16)
    with pytest.raises(ZerosegError, match=re.escape("patch_tokens must have shape (B, h, w, D) (4 dims)")):
        zk.dense_head(torch.randn(2, 9, 16), text, 10.0, (8, 8), 0.5)
    with pytest.raises(ZerosegError, match="disagree on the embedding size D"):
        zk.dense_head(torch.randn(2, 3, 3, 8), text, 10.0, (8, 8), 0.5)
    with pytest.raises(ZerosegError, match="patch_tokens must have h, w >= 1"):
        zk.dense_head(torch.randn(2, 0, 3, 16), text, 10.0, (8, 8), 0.5)


# ---- dispatch -------------------------------------------------------------------------------------


INTERPRETER_ONLY = pytest.mark.skipif(DEVICE == "cuda", reason="runs Triton on CPU tensors (interpreter)")


@INTERPRETER_ONLY
def test_available_backends():
    assert zk.available_backends("cpu") == ("torch", "vectorized", "triton")  # the interpreter is on
    assert zk.available_backends("meta") == ("torch", "vectorized")


@pytest.mark.parametrize(
    "env,expected",
    [
        (None, "vectorized"),
        ("auto", "vectorized"),
        ("torch", "torch"),
        ("Vectorized", "vectorized"),
        ("TRITON", "triton"),
    ],
)
@INTERPRETER_ONLY
def test_env_var_picks_backend_on_cpu(monkeypatch, env, expected):
    if env is None:
        monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(dispatch.ENV_VAR, env)
    assert zk.resolve_backend(None, torch.device("cpu")) == expected
    assert zk.resolve_backend("torch", torch.device("cpu")) == "torch"  # the argument wins


@INTERPRETER_ONLY
def test_env_var_reaches_the_ops(monkeypatch):
    from zeroseg.kernels import triton_similarity

    calls = []
    real = triton_similarity.token_text_similarity_triton
    monkeypatch.setattr(
        triton_similarity, "token_text_similarity_triton", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    tokens, text = torch.randn(1, 3, 8), torch.randn(4, 8)
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    zk.token_text_similarity(tokens, text, 10.0)
    assert calls == []
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    zk.token_text_similarity(tokens, text, 10.0)
    assert calls == [1]


def test_bad_env_var_is_named_in_the_error(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "cuda")
    with pytest.raises(
        ZerosegError, match=re.escape("unknown head backend 'cuda' from $ZEROSEG_HEAD_BACKEND")
    ):
        zk.token_text_similarity(torch.randn(1, 2, 4), torch.randn(3, 4), 10.0)


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_interpreting", lambda: False)
    with pytest.raises(
        ZerosegError, match="needs Triton's interpreter: set TRITON_INTERPRET=1 before triton"
    ):
        zk.resolve_backend("triton", torch.device("cpu"))
    assert zk.resolve_backend("auto", torch.device("cpu")) == "vectorized"
    assert zk.resolve_backend("auto", torch.device("cuda")) == "triton"  # only the device type is read
    assert zk.resolve_backend("vectorized", torch.device("cuda")) == "vectorized"
    with pytest.raises(ZerosegError, match="cannot run on device meta"):
        zk.resolve_backend("triton", torch.device("meta"))


def test_without_triton_everything_falls_back(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_importable", lambda: False)
    assert zk.resolve_backend("auto", torch.device("cuda")) == "vectorized"
    assert zk.available_backends("cuda") == ("torch", "vectorized")
    with pytest.raises(ZerosegError, match="needs the triton package"):
        zk.resolve_backend("triton", torch.device("cuda"))


def test_import_does_not_import_triton():
    code = "import sys, zeroseg.kernels; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- benchmark smoke check ------------------------------------------------------------------------


def test_head_bench_runs_on_cpu(tmp_path, capsys):
    from zeroseg.bench import head_bench

    out = tmp_path / "results.json"
    head_bench.main(["--device", "cpu", "--quick", "--out", str(out)])
    data = json.loads(out.read_text())
    ops = [(r["op"], r["impl"]) for r in data["rows"]]
    assert ops.count(("segment_head", "reference")) == 4 and ops.count(("upsample", "reference")) == 2
    assert ops.count(("similarity", "matmul+softmax")) == 2 and ("segment_head", "fused") not in ops
    assert all(r["median_ms"] > 0 and r["GB_per_s"] > 0 and r["min_bytes"] > 0 for r in data["rows"])
    assert data["peak_bandwidth"]["source"].startswith("measured")
    assert "segment_head" in capsys.readouterr().out
