"""token_text_similarity: both backends against a float64 oracle, Triton against the reference.

The Triton kernels run in Triton's interpreter on the CPU (tests/conftest.py sets TRITON_INTERPRET=1
before triton is imported), so sizes stay small; the class-tile loop, the split over classes and
the top-k merge are still exercised by choosing C larger than one tile (64 classes in the
interpreter) and forcing splits. With ZEROSEG_TEST_GPU=1 the ops run on CUDA tensors instead.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zeroseg.errors import ZerosegError
from zeroseg.kernels import reference, token_text_similarity
from zeroseg.kernels.results import SimilarityResult

BACKENDS = ["torch", "vectorized", "triton"]  # vectorized: the reference's similarity
DEVICE = "cuda" if os.environ.get("ZEROSEG_TEST_GPU") == "1" else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-4}


def _cpu(res: SimilarityResult) -> SimilarityResult:
    return SimilarityResult(*(None if t is None else t.cpu() for t in res))


def sim(tokens: torch.Tensor, text: torch.Tensor, *args, **kwargs) -> SimilarityResult:
    """The public op on the test device, results back on the CPU."""
    return _cpu(token_text_similarity(tokens.to(DEVICE), text.to(DEVICE), *args, **kwargs))


def sim_split(tokens: torch.Tensor, text: torch.Tensor, *args, **kwargs) -> SimilarityResult:
    """The Triton implementation directly, to force a number of class splits."""
    from zeroseg.kernels.triton_similarity import token_text_similarity_triton

    return _cpu(token_text_similarity_triton(tokens.to(DEVICE), text.to(DEVICE), *args, **kwargs))


def _oracle_logits(tokens: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """float64 logits with the documented rule that text is rounded to the tokens' dtype."""
    t = tokens.double()
    t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    e = F.normalize(text.float(), dim=-1, eps=1e-12).to(tokens.dtype).double()
    return scale * t @ e.T


def _data(b: int, n: int, c: int, d: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, n, d, generator=g).to(dtype)
    text = torch.randn(c, d, generator=g).to(dtype)
    return tokens, text


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "b,n,c,d",
    [
        (2, 8, 21, 64),  # segment tokens, VOC-sized vocabulary
        (1, 5, 1, 16),  # C = 1: every probability is 1
        (2, 13, 67, 40),  # C and D not multiples of any block, N odd
        (1, 4, 2000, 32),  # big vocabulary: many class tiles
        (1, 3, 7, 520),  # D larger than one D block
    ],
)
def test_matches_float64_oracle(backend, b, n, c, d):
    tokens, text = _data(b, n, c, d, seed=c + d)
    res = sim(tokens, text, 100.0, return_probs=True, backend=backend)
    logits = _oracle_logits(tokens, text, 100.0)
    probs = torch.softmax(logits, dim=-1)
    assert res.index.shape == (b, n) and res.index.dtype == torch.int64
    assert res.max_prob.shape == (b, n) and res.max_prob.dtype == torch.float32
    assert torch.equal(res.index, logits.argmax(-1))
    assert (res.max_prob.double() - probs.max(-1).values).abs().max() <= 1e-5
    assert res.probs.shape == (b, n, c) and res.probs.dtype == torch.float32
    assert (res.probs.double() - probs).abs().max() <= 1e-5


@pytest.mark.parametrize("c,splits", [(21, 1), (300, 3), (2000, 4), (130, 3)])
def test_triton_split_over_classes_matches_reference(c, splits):
    """The class-split path (used on GPUs for few tokens) merges splits exactly like one pass."""
    tokens, text = _data(2, 8, c, 48, seed=c)
    ref = reference.token_text_similarity_ref(tokens, text, 100.0, topk=3, return_probs=True)
    for k in (1, 3):
        got = sim_split(tokens, text, 100.0, topk=k, return_probs=True, num_splits=splits)
        want_idx = ref.index[..., 0] if k == 1 else ref.index
        want_prob = ref.max_prob[..., 0] if k == 1 else ref.max_prob
        assert torch.equal(got.index, want_idx)
        assert (got.max_prob - want_prob).abs().max() <= 1e-5
        assert (got.probs - ref.probs).abs().max() <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [2, 5, 20])
def test_topk_sorted_descending_like_oracle(backend, k):
    """k <= 16 runs in the Triton kernel, k = 20 on the reference (documented fallback)."""
    tokens, text = _data(2, 6, 90, 32, seed=k)
    res = sim(tokens, text, 50.0, topk=k, backend=backend)
    logits = _oracle_logits(tokens, text, 50.0)
    want = torch.sort(logits, dim=-1, descending=True, stable=True).indices[..., :k]
    assert res.index.shape == (2, 6, k) and res.max_prob.shape == (2, 6, k)
    assert torch.equal(res.index, want)
    assert (res.max_prob.double() - torch.softmax(logits, -1).gather(-1, want)).abs().max() <= 1e-5
    assert (res.max_prob[..., :-1] >= res.max_prob[..., 1:]).all()


def _tie_data(n: int, c: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer tokens and text rows of four +-1 entries (norm 2, normalised to +-0.5): every dot
    product is exact in fp32 whatever the summation order, so equal classes tie exactly in every
    backend (the interpreter's numpy matmul rounds equal columns differently otherwise)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(-3, 4, (1, n, d), generator=g).float()
    text = torch.zeros(c, d)
    for row in text:
        pos = torch.randperm(d, generator=g)[:4]
        row[pos] = torch.randint(0, 2, (4,), generator=g).float() * 2 - 1
    return tokens, text


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_ties_pick_lowest_index(backend):
    """Identical class embeddings (inside one tile and across tiles) tie exactly: lowest index wins."""
    tokens, text = _tie_data(4, 150, 32, seed=3)
    for dup in (10, 70, 140):  # same tile as class 3, next tile, third tile
        text[dup] = text[3]
    tokens[0, :2] = text[3] * 4  # these two tokens point at class 3 (cos = 1)
    res = sim(tokens, text, 100.0, topk=4, backend=backend)
    assert res.index[0, :2].tolist() == [[3, 10, 70, 140]] * 2
    assert torch.equal(res.max_prob[0, :2, 0], res.max_prob[0, :2, 3])
    top1 = sim(tokens, text, 100.0, backend=backend)
    assert top1.index[0, :2].tolist() == [3, 3]
    assert abs(top1.max_prob[0, 0].item() - 0.25) <= 1e-6  # four equal winners share the mass


def test_exact_ties_across_splits():
    tokens, text = _tie_data(3, 200, 32, seed=4)
    text[130] = text[190] = text[70]
    tokens[0, 0] = text[70]
    for k in (1, 3):
        res = sim_split(tokens, text, 100.0, topk=k, num_splits=3)
        assert res.index[0, 0].flatten().tolist() == [70, 130, 190][:k]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs(backend, dtype):
    tokens, text = _data(2, 9, 70, 64, seed=5, dtype=dtype)
    res = sim(tokens, text, 100.0, topk=2, return_probs=True, backend=backend)
    ref = reference.token_text_similarity_ref(tokens, text, 100.0, topk=2, return_probs=True)
    logits = _oracle_logits(tokens, text, 100.0)
    assert res.max_prob.dtype == torch.float32 and res.probs.dtype == torch.float32
    assert torch.equal(res.index, ref.index)
    assert torch.equal(res.index[..., 0], logits.argmax(-1))
    assert (res.max_prob - ref.max_prob).abs().max() <= TOL[dtype]
    assert (res.probs.double() - torch.softmax(logits, -1)).abs().max() <= TOL[dtype]


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_precision_text(backend):
    """fp32 text with fp16 tokens: text is rounded to fp16 after normalisation (documented)."""
    tokens, text = _data(1, 5, 30, 32, seed=6)
    res = sim(tokens.half(), text, 100.0, backend=backend)
    logits = _oracle_logits(tokens.half(), text, 100.0)
    assert torch.equal(res.index, logits.argmax(-1))
    assert (res.max_prob.double() - torch.softmax(logits, -1).max(-1).values).abs().max() <= 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_tokens_and_zero_token(backend):
    tokens, text = _data(3, 7, 25, 16, seed=7)
    strided = tokens.transpose(0, 1).contiguous().transpose(0, 1)  # same values, permuted strides
    strided[1, 2] = 0.0  # zero vector: normalises to 0, all logits 0, uniform probabilities
    strided[2, 3] *= 1e-6  # tiny but above eps: normalises like any token
    strided[0, 4] *= 1e-13 / strided[0, 4].norm()  # norm below eps=1e-12: divided by eps instead
    res = sim(strided, text, 100.0, return_probs=True, backend=backend)
    logits = _oracle_logits(strided, text, 100.0)
    assert torch.equal(res.index, logits.argmax(-1))
    assert res.index[1, 2] == 0 and abs(res.max_prob[1, 2].item() - 1 / 25) <= 1e-6
    assert (res.probs.double() - torch.softmax(logits, -1)).abs().max() <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k,probs", [(1, False), (3, True)])
def test_empty_inputs(backend, k, probs):
    text = torch.randn(5, 8)
    for shape in [(0, 4, 8), (2, 0, 8)]:
        res = sim(torch.randn(shape), text, 10.0, topk=k, return_probs=probs, backend=backend)
        lead = shape[:2] if k == 1 else (*shape[:2], k)
        assert res.max_prob.shape == lead and res.index.shape == lead
        assert res.index.dtype == torch.int64 and res.max_prob.dtype == torch.float32
        assert (res.probs is None) if not probs else res.probs.shape == (*shape[:2], 5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, inside the interpreter, on NaN math
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 3])
def test_non_finite_inputs_follow_documented_rule(backend, k):
    """NaN/inf in a token or a text row: NaN probabilities, index = first NaN class (torch.argmax)."""
    tokens, text = _data(2, 6, 80, 16, seed=8)
    tokens[0, 1, 3] = float("nan")
    tokens[0, 2, 0] = float("inf")
    tokens[0, 3, 5] = -float("inf")
    text[66, 2] = float("nan")  # poisons class 66 for the tokens of image 1 ...
    tokens_b1 = tokens[1:].clone()
    res = sim(tokens, text, 100.0, topk=k, return_probs=True, backend=backend)
    ref = reference.token_text_similarity_ref(tokens, text, 100.0, topk=k, return_probs=True)
    assert torch.equal(res.index, ref.index)
    assert torch.allclose(res.max_prob, ref.max_prob, atol=1e-5, equal_nan=True)
    assert torch.allclose(res.probs, ref.probs, atol=1e-5, equal_nan=True)
    top = res.index if k == 1 else res.index[..., 0]
    prob = res.max_prob if k == 1 else res.max_prob[..., 0]
    assert top[0, 1:4].tolist() == [0, 0, 0]  # whole row NaN: the first class
    assert top[1].tolist() == [66] * 6  # one NaN class: it ranks first for every token
    assert torch.isnan(prob).all() and torch.isnan(res.probs).all()
    if k == 3:
        assert res.index[0, 1].tolist() == [0, 1, 2]
    # Without the poisoned class, image 1 is finite again.
    clean = sim(tokens_b1, text[:66], 100.0, backend=backend)
    assert torch.isfinite(clean.max_prob).all()


BAD_CALLS = [
    (lambda t, e: (t[0], e, 100.0), {}, "tokens must have shape (B, N, D) (3 dims), got (4, 8)"),
    (lambda t, e: (t, e[None], 100.0), {}, "text must have shape (C, D) (2 dims)"),
    (lambda t, e: (t, e[:, :5], 100.0), {}, "disagree on the embedding size D (8 vs 5)"),
    (lambda t, e: (t.long(), e, 100.0), {}, "tokens must be float32, float16 or bfloat16, got torch.int64"),
    (lambda t, e: (t, e.double(), 100.0), {}, "text must be float32, float16 or bfloat16, got torch.float64"),
    (lambda t, e: (t.numpy(), e, 100.0), {}, "tokens must be a torch.Tensor"),
    (lambda t, e: (t, e[:0], 100.0), {}, "text must hold at least one class"),
    (
        lambda t, e: (t[..., :0], e[:, :0], 100.0),
        {},
        "embedding size D of tokens and text must be at least 1",
    ),
    (lambda t, e: (t, e.to("meta"), 100.0), {}, "tokens is on cpu but text is on meta"),
    (lambda t, e: (t, e, 0.0), {}, "logit_scale must be a finite number > 0"),
    (lambda t, e: (t, e, float("nan")), {}, "logit_scale must be a finite number > 0"),
    (lambda t, e: (t, e, float("inf")), {}, "logit_scale must be a finite number > 0"),
    (lambda t, e: (t, e, "100"), {}, "logit_scale must be a finite number > 0"),
    (lambda t, e: (t, e, 100.0), {"topk": 0}, "topk must be in [1, C=6], got 0"),
    (lambda t, e: (t, e, 100.0), {"topk": 7}, "topk must be in [1, C=6], got 7"),
    (lambda t, e: (t, e, 100.0), {"topk": 2.0}, "topk must be an int"),
    (lambda t, e: (t, e, 100.0), {"backend": "cuda"}, "unknown head backend 'cuda'"),
]


@pytest.mark.parametrize("make,kwargs,message", BAD_CALLS, ids=[m for _, _, m in BAD_CALLS])
def test_bad_inputs_raise_one_line_errors(make, kwargs, message):
    args = make(torch.randn(2, 4, 8), torch.randn(6, 8))
    with pytest.raises(ZerosegError, match=re.escape(message)) as err:
        token_text_similarity(*args, **kwargs)
    assert "\n" not in str(err.value)


def test_numpy_oracle_agrees_with_reference():
    """Guards the oracle itself: an independent numpy computation of the same formula."""
    tokens, text = _data(1, 6, 12, 10, seed=9)
    t = tokens.numpy().astype(np.float64)[0]
    e = text.numpy().astype(np.float64)
    cos = (t / np.linalg.norm(t, axis=1, keepdims=True)) @ (e / np.linalg.norm(e, axis=1, keepdims=True)).T
    p = np.exp(30.0 * cos - (30.0 * cos).max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    res = reference.token_text_similarity_ref(tokens, text, 30.0)
    assert res.index[0].tolist() == p.argmax(1).tolist()
    assert np.abs(res.max_prob[0].numpy() - p.max(1)).max() <= 1e-6
