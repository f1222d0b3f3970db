"""Fused attention in the exported graphs: scaled dot-product attention as one ONNX Runtime op.

The dynamo exporter writes each `F.scaled_dot_product_attention` as MatMul / Mul / Softmax / MatMul
with the reshapes and transposes around them. `fuse_attention` rewrites that pattern with
onnxscript's ORT fusions, in two steps and no further:

    fuse_sdpa            MatMul(Q, K^T) * scale -> Softmax -> MatMul(., V)  =>  an internal SDPA op;
    replace_sdpa_by_mha  SDPA  =>  `com.microsoft.MultiHeadAttention` on (B, S, H*Dh) tensors.

It stops before onnxscript's later folding of MultiHeadAttention and the Q/K/V projections into
`com.microsoft.Attention`, whose CPU kernel is not ONNX Runtime's tiled flash kernel; the
MultiHeadAttention CPU kernel takes the flash path for fp32 without mask, bias or past state, which
is what a ViT's attention is. An attention the rewrite cannot prove equivalent (e.g. the text
encoder's causal mask, whose graph is not fused at all) stays as it was.

`unfuse_attention` is the inverse, for consumers that cannot run contrib ops (OpenVINO's ONNX
frontend, TensorRT's parser): each MultiHeadAttention node becomes Reshape / Transpose / MatMul /
Softmax / MatMul again, in memory, from the node's own attributes, so a bundle ships one file per
graph. `op_counts` counts the fused ops of a graph, for the manifest and the load-time check that a
graph still has the fused ops its manifest says it has.
"""

from __future__ import annotations

import os
from collections import Counter

from zeroseg.errors import ZerosegError

MS_DOMAIN = "com.microsoft"
MHA = "MultiHeadAttention"
#: The fused op the rewrite emits, as the manifest names it: "<domain>.<op type>".
FUSED_OPS: tuple[str, ...] = (f"{MS_DOMAIN}.{MHA}", f"{MS_DOMAIN}.Attention")
REWRITE = (
    "onnxscript.rewriter.ort_fusions: fuse_sdpa, then replace_sdpa_by_mha (com.microsoft.MultiHeadAttention,"
    " ONNX Runtime's flash kernel on the CPU); not folded further into com.microsoft.Attention"
)
_FUSION_DOMAIN = "ai.onnxruntime._fusion"  # onnxscript's temporary SDPA op
#: Names of the expanded attention's products: "<PREFIX><i>/qk" (Q.K^T) and "<PREFIX><i>/pv" (P.V).
EXPANDED_PREFIX = "attention_"


def op_counts(model) -> dict[str, int]:
    """{"<domain>.<op type>": count} of the fused (contrib) ops in a graph's main body."""
    counts = Counter(
        f"{n.domain}.{n.op_type}" for n in model.graph.node if f"{n.domain}.{n.op_type}" in FUSED_OPS
    )
    return dict(sorted(counts.items()))


def file_op_counts(path: str | os.PathLike) -> dict[str, int]:
    """`op_counts` of an .onnx file, read without its external weights (the graph's nodes only)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ZerosegError(f"{path} is not a readable ONNX graph ({type(exc).__name__}); re-export") from None
    return op_counts(model)


def fuse_attention(model):
    """`model` (an onnx.ModelProto) with its attention blocks as MultiHeadAttention; and the counts.

    Returns:
        (the rewritten ModelProto, {"fused_ops": op_counts, "rewrite": REWRITE, "sdpa_matched": n}).

    Raises:
        ZerosegError: an attention matched the first step but could not be expressed as
            MultiHeadAttention (the graph would hold an op no runtime knows).
    """
    import onnx_ir as ir
    from onnx_ir.passes.common import RemoveUnusedNodesPass, RemoveUnusedOpsetsPass
    from onnxscript.rewriter.ort_fusions.sdpa import fuse_sdpa
    from onnxscript.rewriter.ort_fusions.sdpa_via_mha import replace_sdpa_by_mha

    ir_model = ir.from_proto(model)
    matched = fuse_sdpa(ir_model, apply_shape_inference=True)
    if matched:
        replace_sdpa_by_mha(ir_model)
        left = [n for n in ir_model.graph if n.domain == _FUSION_DOMAIN]
        if left:
            raise ZerosegError(
                f"attention fusion left {len(left)} of {matched} attention blocks half-rewritten; "
                "export with --no-fuse-attention"
            )
        RemoveUnusedNodesPass()(ir_model)  # the scale constants the rewrite folded into the op
        RemoveUnusedOpsetsPass()(ir_model)  # the rewrite's temporary domain
    proto = ir.to_proto(ir_model)
    if matched and not any(o.domain == MS_DOMAIN for o in proto.opset_import):
        proto.opset_import.add(domain=MS_DOMAIN, version=1)
    return proto, {"fused_ops": op_counts(proto), "rewrite": REWRITE, "sdpa_matched": int(matched)}


def unfuse_attention(model) -> int:
    """Expand every MultiHeadAttention node of `model` (a ModelProto, edited in place) into ONNX ops.

    The node's inputs are Q, K, V of shape (B, S, H*Dh) with `num_heads` = H, an optional `scale`
    (default 1/sqrt(Dh)) and an optional `attention_bias` (input 5, added to the scaled scores before
    the softmax: the windowed design's padding mask, `zeroseg.model.window`); anything else (a key
    padding mask, a projection bias, past state, packed QKV) is refused, since the exporter never
    writes it. Returns the number of nodes expanded.
    """
    nodes = list(model.graph.node)
    out_nodes, expanded = [], 0
    for node in nodes:
        if not (node.domain == MS_DOMAIN and node.op_type == MHA):
            out_nodes.append(node)
            continue
        out_nodes.extend(_expand_mha(node, f"{EXPANDED_PREFIX}{expanded}"))
        expanded += 1
    if expanded:
        del model.graph.node[:]
        model.graph.node.extend(out_nodes)
        if not any(n.domain == MS_DOMAIN for n in model.graph.node):
            keep = [o for o in model.opset_import if o.domain != MS_DOMAIN]
            del model.opset_import[:]
            model.opset_import.extend(keep)
    return expanded


def _expand_mha(node, prefix: str) -> list:
    """ONNX nodes computing MultiHeadAttention(q, k, v) of (B, S, H*Dh) tensors (see `unfuse_attention`)."""
    from onnx import TensorProto, helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    inputs = list(node.input)
    if (
        len(inputs) < 3
        or any(inputs[3:5])
        or any(inputs[6:])
        or attrs.get("unidirectional", 0)
        or (len(node.output) > 1)
    ):
        raise ZerosegError(
            f"MultiHeadAttention node {node.name!r} has inputs or options this unfusion does not support; "
            "re-export with --no-fuse-attention"
        )
    heads = int(attrs["num_heads"])
    scale = attrs.get("scale")
    q, k, v = inputs[:3]
    n = lambda s: f"{prefix}/{s}"  # noqa: E731
    shape4 = n("shape_bs_h_d")
    shape3 = n("shape_bs_hd")
    made = [
        _const(shape4, TensorProto.INT64, [0, 0, heads, -1]),
        _const(shape3, TensorProto.INT64, [0, 0, -1]),
    ]
    for name, perm in ((q, [0, 2, 1, 3]), (k, [0, 2, 3, 1]), (v, [0, 2, 1, 3])):
        made.append(helper.make_node("Reshape", [name, shape4], [n(f"{name}_4d")]))
        made.append(helper.make_node("Transpose", [n(f"{name}_4d")], [n(f"{name}_t")], perm=perm))
    made.append(helper.make_node("MatMul", [n(f"{q}_t"), n(f"{k}_t")], [n("scores")], name=n("qk")))
    if scale is None:  # 1/sqrt(Dh): Dh from Q's last dim at run time
        made += [
            helper.make_node("Shape", [n(f"{q}_4d")], [n("dh_i")], start=-1),
            helper.make_node("Cast", [n("dh_i")], [n("dh")], to=TensorProto.FLOAT),
            helper.make_node("Sqrt", [n("dh")], [n("sqrt_dh")]),
            helper.make_node("Div", [n("scores"), n("sqrt_dh")], [n("scaled")]),
        ]
    else:
        made += [
            _const(n("scale"), TensorProto.FLOAT, float(scale)),
            helper.make_node("Mul", [n("scores"), n("scale")], [n("scaled")]),
        ]
    bias = inputs[5] if len(inputs) > 5 else ""  # attention_bias: (B or 1, H or 1, S, L), broadcast
    if bias:
        made.append(helper.make_node("Add", [n("scaled"), bias], [n("biased")]))
    made += [
        helper.make_node("Softmax", [n("biased" if bias else "scaled")], [n("probs")], axis=-1),
        helper.make_node("MatMul", [n("probs"), n(f"{v}_t")], [n("context")], name=n("pv")),
        helper.make_node("Transpose", [n("context")], [n("context_t")], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", [n("context_t"), shape3], [node.output[0]]),
    ]
    for index, made_node in enumerate(made):
        if not made_node.name:
            made_node.name = n(f"{made_node.op_type.lower()}_{index}")
    return made


def _const(name: str, dtype: int, value):
    """A Constant node `name` holding `value` (a list: 1-D, a number: a scalar)."""
    from onnx import helper

    dims = [len(value)] if isinstance(value, list) else []
    values = value if isinstance(value, list) else [value]
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, dtype, dims, values))


def unfused_copy(path: str | os.PathLike) -> bytes:
    """The serialized bytes of the .onnx file `path` with its MultiHeadAttention nodes expanded."""
    import onnx

    model = onnx.load(str(path))
    unfuse_attention(model)
    return model.SerializeToString()


def expanded_copy(path: str | os.PathLike) -> bytes:
    """Like `unfused_copy`, but an unfused graph is fused first, so that every attention comes out
    expanded with named products (`EXPANDED_PREFIX`), whichever way the graph was exported."""
    import onnx

    model = onnx.load(str(path))
    if not op_counts(model):
        model, _ = fuse_attention(model)
    unfuse_attention(model)
    return model.SerializeToString()


__all__ = [
    "FUSED_OPS",
    "REWRITE",
    "fuse_attention",
    "unfuse_attention",
    "unfused_copy",
    "expanded_copy",
    "op_counts",
    "file_op_counts",
]
