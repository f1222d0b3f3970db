"""Lowering to ExecuTorch: what XNNPACK can take, the `.pte`, and the report of what it took.

XNNPACK (ExecuTorch 1.5) has no LayerNorm and PyTorch's SDPA decomposes into a masked "safe"
softmax (any / where / logical_not / expand between the matmuls); either one cuts the graph into
dozens of delegates with portable kernels in between. So the graph is captured with
`F.layer_norm` and `F.scaled_dot_product_attention` spelled out in ops XNNPACK runs (mean, sub,
mul, rsqrt; bmm, softmax): `xnnpack_friendly()`. Both are the same arithmetic (the gate checks
labels against unmodified PyTorch). timm's position embedding is resampled with antialiased bicubic,
which is no core ATen op: a static export fixes the grid, so the resampled table is computed once
(`fix_grid`).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from zeroseg.errors import ZerosegError

INSTALL_HINT = "pip install 'zeroseg[edge]'"


def require_executorch() -> None:
    """One line naming the extra when ExecuTorch (or torchao, its quantizer's dependency) is missing."""
    try:
        import executorch.exir  # noqa: F401
        import executorch.runtime  # noqa: F401
    except ImportError as exc:
        raise ZerosegError(f"ExecuTorch is not installed ({exc.name or exc}): {INSTALL_HINT}") from None


def _sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """softmax(q k^T * scale [+ mask]) v in bmm + softmax: no dropout, no causal flag (the student's
    attention); a mask (boolean: False = not attended, or additive) is the windowed design's padding
    mask (`zeroseg.model.window`), broadcast over the scores."""
    if is_causal or dropout_p or enable_gqa:
        raise ZerosegError(
            "the ExecuTorch export supports plain or masked attention only (no causal, dropout, GQA)"
        )
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    *lead, n, d = q.shape  # 3-D bmm on (batch x heads): a 4-D matmul would expand (copy) both operands
    q3, k3, v3 = (t.reshape(-1, t.shape[-2], t.shape[-1]) for t in (q, k, v))
    scores = torch.bmm(q3 * s, k3.transpose(1, 2))
    if attn_mask is not None:
        mask = attn_mask.expand(*lead, n, k.shape[-2]).reshape(-1, n, k.shape[-2])
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    attn = torch.softmax(scores, dim=-1)
    return torch.bmm(attn, v3).reshape(*lead, n, v.shape[-1])


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """LayerNorm in mean / sub / mul / rsqrt (biased variance, as F.layer_norm)."""
    if len(normalized_shape) != 1:
        raise ZerosegError("the ExecuTorch export supports LayerNorm over the last dimension only")
    xc = x - _mean_last(x)
    y = xc * torch.rsqrt(_mean_last(xc * xc) + eps)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def _mean_last(x: torch.Tensor) -> torch.Tensor:
    """Mean over the last dimension, keepdim, as XNNPACK's one mean: 4-D over dims (2, 3), keepdim."""
    d = x.shape[-1]
    return x.reshape(-1, 1, d, 1).mean((2, 3), keepdim=True).reshape(*x.shape[:-1], 1)


@contextlib.contextmanager
def xnnpack_friendly() -> Iterator[None]:
    """Within: F.layer_norm and F.scaled_dot_product_attention in XNNPACK's ops (for the capture)."""
    saved = F.layer_norm, F.scaled_dot_product_attention
    F.layer_norm, F.scaled_dot_product_attention = _layer_norm, _sdpa
    try:
        yield
    finally:
        F.layer_norm, F.scaled_dot_product_attention = saved


def fix_grid(graph: nn.Module, grid: tuple[int, int]) -> nn.Module:
    """A copy of `graph` whose ViTs carry their position embedding resampled to `grid` (h, w)."""
    from timm.layers import resample_abs_pos_embed
    from timm.models.vision_transformer import VisionTransformer

    graph = copy.deepcopy(graph)
    for vit in (m for m in graph.modules() if isinstance(m, VisionTransformer)):
        if tuple(vit.patch_embed.grid_size) != tuple(grid):
            with torch.no_grad():
                pos = resample_abs_pos_embed(vit.pos_embed, new_size=list(grid), num_prefix_tokens=1)
            vit.pos_embed = nn.Parameter(pos, requires_grad=False)
            vit.patch_embed.grid_size = tuple(grid)
    return graph


def squeeze_as_view(graph_module: torch.fx.GraphModule):
    """Edge pass: a squeeze of static shape becomes a view (XNNPACK takes views, not squeezes).

    `unbind` (timm's q, k, v) decomposes into select + squeeze; left as is, every attention block's
    squeezes run on portable kernels and cut the block out of its delegate.
    """
    from executorch.exir.dialects._ops import ops as exir_ops
    from torch.fx.passes.infra.pass_base import PassResult

    squeezes = {exir_ops.edge.aten.squeeze_copy.dims, exir_ops.edge.aten.squeeze_copy.dim,
                exir_ops.edge.aten.squeeze_copy.default}  # fmt: skip
    changed = False
    for node in graph_module.graph.nodes:
        val = node.meta.get("val")
        if node.op != "call_function" or node.target not in squeezes or val is None:
            continue
        if not all(isinstance(s, int) for s in val.shape):
            continue
        node.target, node.args, node.kwargs = (
            exir_ops.edge.aten.view_copy.default,
            (node.args[0], list(val.shape)),
            {},
        )
        changed = True
    if changed:
        graph_module.recompile()
    return PassResult(graph_module, changed)


INT8_RECIPE = (
    "PT2E static: XNNPACKQuantizer on the image encoder's nn.Linear layers (symmetric per-channel int8 "
    "weights, per-tensor int8 activations); attention products, norms and the head in fp32; calibrated "
    "with torchao's prepare_pt2e / convert_pt2e"
)


def executorch_version() -> str | None:
    """The installed executorch package's version (None when absent)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:
        return None


def sized_graph(segmenter: nn.Module, size: tuple[int, int], patch: int) -> nn.Module:
    """The `SizedSegmenterGraph` of a copy of `segmenter` whose grid is fixed for the static `size`."""
    from zeroseg.export.graphs import SizedSegmenterGraph

    return SizedSegmenterGraph(fix_grid(segmenter, (size[0] // patch, size[1] // patch))).eval()


def carrier_args(pixels, text, bg_thresh, label_offset, output_size) -> tuple[torch.Tensor, ...]:
    """A `SegmenterGraph` call's inputs as the `.pte` takes them (the output size as two carriers)."""
    h, w = (int(v) for v in torch.as_tensor(output_size).tolist())
    rows, cols = torch.zeros(h, dtype=torch.uint8), torch.zeros(w, dtype=torch.uint8)
    return (torch.as_tensor(pixels).float().contiguous(), torch.as_tensor(text).float().contiguous(),
            torch.as_tensor(bg_thresh, dtype=torch.float32).reshape(()),
            torch.as_tensor(label_offset, dtype=torch.int64).reshape(()), rows, cols)  # fmt: skip


def _example(size, embed_dim: int, max_side: int, max_classes: int):
    """Example inputs and dynamic shapes: the class count and the output size bounded."""
    from torch.export import Dim

    gen = torch.Generator().manual_seed(1)
    text = F.normalize(torch.randn(3, embed_dim, generator=gen), dim=-1)
    args = carrier_args(torch.rand(1, 3, *size, generator=gen), text, 0.5, 1, (45, 61))
    dims = {"pixels": None, "text_embeddings": {0: Dim("classes", min=1, max=max_classes)}, "bg_thresh": None,
            "label_offset": None, "rows": {0: Dim("out_h", min=1, max=max_side)},
            "cols": {0: Dim("out_w", min=1, max=max_side)}}  # fmt: skip
    return args, dims


def capture(graph: nn.Module, size, embed_dim: int, max_side: int, max_classes: int):
    """`torch.export` of a `sized_graph` in XNNPACK's ops; one line when the capture fails."""
    args, dims = _example(size, embed_dim, max_side, max_classes)
    try:
        with torch.no_grad(), xnnpack_friendly():
            return torch.export.export(graph, args, dynamic_shapes=dims)
    except Exception as exc:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZerosegError(f"torch.export failed on the segmenter: {line[:300]}") from None


def quantize(graph: nn.Module, size, embed_dim: int, calib_pixels, max_side: int, max_classes: int,
             *, progress: bool = True):  # fmt: skip
    """PT2E static int8 of the image encoder (`INT8_RECIPE`), calibrated on `calib_pixels`.

    The encoder is captured, prepared, calibrated and converted on its own (quantizing the whole
    graph also rewrote the head's integer constants), then put back into a copy of the graph, which is
    captured again with its bounded output size.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from tqdm import tqdm

    config = get_symmetric_quantization_config(is_per_channel=True)
    quantizer = XNNPACKQuantizer().set_module_type(nn.Linear, config)  # attention's products stay fp32
    graph = copy.deepcopy(graph)
    encoder = graph.segmenter.encoder
    example = (torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(2)),)
    with torch.no_grad(), xnnpack_friendly():
        prepared = prepare_pt2e(torch.export.export(encoder, example).module(), quantizer)
        for pixels in tqdm(calib_pixels, desc="int8 calibration", unit="image", disable=not progress):
            prepared(torch.as_tensor(pixels).float())
        graph.segmenter.encoder = convert_pt2e(prepared)
    return capture(graph, size, embed_dim, max_side, max_classes)


def method_name(size: tuple[int, int]) -> str:
    """The `.pte` method of static input (H, W): "forward_256x344"."""
    return f"forward_{size[0]}x{size[1]}"


def write_program(programs: dict, path) -> dict:
    """Lower exported programs (method name -> program) to XNNPACK into one `.pte`; returns what was
    delegated, per method and in total."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    from zeroseg.utils.atomic import atomic_write_bytes

    try:
        edge = to_edge_transform_and_lower(programs, transform_passes=[squeeze_as_view],
                                           partitioner=[XnnpackPartitioner()])  # fmt: skip
        infos = {name: get_delegation_info(edge.exported_program(name).graph_module) for name in programs}
        buffer = edge.to_executorch().buffer
    except Exception as exc:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZerosegError(f"ExecuTorch lowering failed: {line[:300]}") from None
    atomic_write_bytes(path, buffer)
    return {"methods": {name: _delegation(info) for name, info in infos.items()}, "bytes": len(buffer)}


def _delegation(info) -> dict:
    """Delegates, delegated and portable node counts and the portable ops of one method."""
    table = info.get_operator_delegation_dataframe()
    portable = {
        str(row.op_type): int(row.occurrences_in_non_delegated_graphs)
        for row in table.itertuples()
        if row.op_type not in ("Total", "getitem", "alloc", "sym_size")
        and row.occurrences_in_non_delegated_graphs
    }
    return {"delegates": int(info.num_delegated_subgraphs), "delegated_nodes": int(info.num_delegated_nodes),
            "portable_nodes": int(info.num_non_delegated_nodes), "portable_ops": portable}  # fmt: skip


def describe(report: dict) -> str:
    """One line of a `write_program` report (its first method; the others are alike)."""
    name, first = next(iter(report["methods"].items()))
    top = sorted(first["portable_ops"].items(), key=lambda kv: -kv[1])[:4]
    ops = ", ".join(f"{k.removeprefix('aten_').removesuffix('_default')} {v}" for k, v in top)
    return (f"{len(report['methods'])} methods, {report['bytes'] / 1e6:.1f} MB; {name}: "
            f"{first['delegated_nodes']} nodes in {first['delegates']} XNNPACK delegates, "
            f"{first['portable_nodes']} on portable kernels ({ops})")  # fmt: skip
