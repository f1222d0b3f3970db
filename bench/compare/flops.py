"""FLOPs of the student forward per image, attention included, split into what int8 can reach.

`torch.utils.flop_counter.FlopCounterMode` counts the matmuls and convolutions it has formulas for,
but it has none for the CPU's fused attention op (`aten._scaled_dot_product_flash_attention_for_cpu`,
what `F.scaled_dot_product_attention` dispatches to on the CPU), so a ViT's attention would silently
count as zero. `count_flops` runs the counter with a formula for every fused attention op torch
leaves out (passed as the counter's `custom_mapping`, so torch's global registry is not touched):
the two matmuls of attention, Q.K^T and P.V, i.e. 4 x B x H x Lq x Lk x d FLOP (torch's own
`sdpa_flop_count`; softmax and scaling are not counted, as for every other op). A FLOP is one
multiply or one add (a multiply-add is 2), torch's convention.

The count is split into groups, because an int8 engine reaches only some of them:
    weights    matmuls and convolutions with a weight operand (addmm, mm, convolution): the ops
               the weight-only int8 graph quantises;
    attention  the fused attention ops (Q.K^T and P.V);
    other      the rest (e.g. the grouping block's assignment bmm).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

#: torch op names per group (OpOverloadPacket names, as the counter reports them without "aten.").
WEIGHT_OPS: tuple[str, ...] = ("addmm", "mm", "convolution", "linear")
#: Fused attention ops with no formula in torch 2.14's counter (the CUDA ones have one already).
ATTENTION_OPS: tuple[str, ...] = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_fused_attention_overrideable",
)
METHOD = (
    "torch.utils.flop_counter.FlopCounterMode over the student forward at batch 1, plus a formula for the "
    "CPU's fused attention op (4*B*H*Lq*Lk*d: Q.K^T and P.V); 1 multiply-add = 2 FLOP; softmax, norms "
    "and elementwise ops not counted"
)


def sdpa_flops(query: Sequence[int], key: Sequence[int], value: Sequence[int]) -> int:
    """FLOPs of one attention call from its (B, H, L, d) shapes: Q.K^T and P.V, 2 FLOP per multiply-add."""
    from torch.utils.flop_counter import sdpa_flop_count

    return int(sdpa_flop_count(tuple(query), tuple(key), tuple(value)))


def _attention_mapping(calls: list[dict[str, Any]]) -> dict:
    """`custom_mapping` for FlopCounterMode: the attention formula, recording each call's shapes."""

    def formula(query, key, value, *args, out_shape=None, **kwargs) -> int:
        flops = sdpa_flops(query, key, value)
        calls.append({"query": list(query), "key": list(key), "flop": flops})
        return flops

    aten = torch.ops.aten
    return {getattr(aten, name): formula for name in ATTENTION_OPS if hasattr(aten, name)}


def count_flops(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run `fn()` under the counter: {"total", "by_op": {op: FLOP}, "groups": {group: FLOP},
    "attention_calls": [shapes and FLOP of each attention call]}."""
    from torch.utils.flop_counter import FlopCounterMode

    calls: list[dict[str, Any]] = []
    with FlopCounterMode(display=False, custom_mapping=_attention_mapping(calls)) as counter:
        fn()
    by_op = {str(k).removeprefix("aten."): int(v) for k, v in counter.get_flop_counts()["Global"].items()}
    groups = {"weights": 0, "attention": 0, "other": 0}
    for op, flops in by_op.items():
        group = "weights" if op in WEIGHT_OPS else "attention" if op in ATTENTION_OPS else "other"
        groups[group] += flops
    return {"total": sum(by_op.values()), "by_op": by_op, "groups": groups, "attention_calls": calls}


def network_flops(torch_seg, images: Sequence, size: tuple[int, int]) -> dict[str, Any] | None:
    """The student forward's FLOPs per image at network input `size`, attention included, and its split.

    Returns None when the counter cannot follow the forward (an op it fails on): no figure rather
    than a wrong one.
    """
    try:
        with torch.no_grad():
            pixels = torch_seg.preprocess(list(images[:1]), size)
            got = count_flops(lambda: torch_seg.forward(pixels))
    except Exception:  # any failure of the counter: "no count", said as None
        return None
    total = got["total"]
    if total <= 0:
        return None
    groups = got["groups"]
    return {
        "gflop_per_image": total / 1e9,
        "weights_gflop": groups["weights"] / 1e9,
        "attention_gflop": groups["attention"] / 1e9,
        "other_gflop": groups["other"] / 1e9,
        "attention_share": groups["attention"] / total,
        "by_op_gflop": {op: v / 1e9 for op, v in sorted(got["by_op"].items(), key=lambda kv: -kv[1])},
        "attention_calls": [
            {"query_bhld": c["query"], "key_bhld": c["key"], "gflop": c["flop"] / 1e9}
            for c in got["attention_calls"]
        ],
        "network_input_hw": [int(size[0]), int(size[1])],
        "method": METHOD,
    }


def int8_share(flops: dict[str, Any] | None, int8_ops: Sequence[str]) -> float | None:
    """Fraction of the FLOPs an int8 engine runs in int8, given the groups it quantises.

    A group is "weights", "attention" (both products), or "attention_qk" / "attention_pv" (one of the
    two products: half of attention's FLOPs, Q.K^T and P.V being the same size when the value and
    key head dims are equal, as in a ViT).
    """
    if not flops or not int8_ops:
        return None
    half = {"attention_qk", "attention_pv"}
    covered = sum(flops["attention_gflop"] / 2 if g in half else flops[f"{g}_gflop"] for g in int8_ops)
    return min(1.0, covered / flops["gflop_per_image"])
