"""Triton Inference Server `config.pbtxt` text for one exported graph, from its spec (`core.specs`).

Plain functions of a `GraphSpec` and the serving options, so every rule is tested without a server:

- **platform / backend**: an ONNX graph is `platform: "onnxruntime_onnx"`, `backend: "onnxruntime"`
  (`model.onnx`); a TensorRT engine is `platform: "tensorrt_plan"`, `backend: "tensorrt"`
  (`model.plan`).
- **batching**: Triton batches a model only when every input and output has the batch dimension first
  (model_configuration.md, "Maximum Batch Size"). A graph qualifies when all its tensors lead with
  `specs.BATCH`; it then gets `max_batch_size` = the requested maximum, that first dimension is left out
  of `dims`, and a `dynamic_batching` block is added. Any other graph (the text encoder: classes
  first; the end-to-end segmenter: a (C, D) vocabulary, two scalars and an output size beside the
  pixels) gets `max_batch_size: 0` and its full shape: a request carries its own batch of images.
- **dims**: a dynamic dimension (a string in the spec) is `-1`; Triton refuses an empty shape, so a
  scalar is sent as `[1]` and reshaped to `[]` for the graph (`reshape: { shape: [ ] }`).
- **data types**: numpy dtype names map onto Triton's `TYPE_*` (the table in model_configuration.md,
  "Datatypes").
- **instances**: `instance_group [{ count: N kind: KIND_CPU | KIND_GPU }]`.
- **numbers**: every number written goes through `proto_number`, which refuses one outside its field's
  type in Triton's model_config.proto (`PROTO_FIELDS`: `max_batch_size` and `count` are int32, `dims`
  and `shape` int64, the queue delay uint64), so Triton never rejects a config this module wrote.

Plain Python and numpy: no tritonclient, no protobuf (the tests parse the text with Triton's own schema).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zeroseg.errors import ZerosegError
from zeroseg.export.core.manifest import VOCAB_NAME, BundleManifest
from zeroseg.export.core.specs import BATCH, GraphSpec, TensorSpec, segmenter_feed

#: numpy dtype name -> Triton model-configuration data type.
TRITON_TYPES: dict[str, str] = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
#: model runtime -> (platform, backend, model file name in the version folder).
RUNTIMES: dict[str, tuple[str, str, str]] = {
    "onnx": ("onnxruntime_onnx", "onnxruntime", "model.onnx"),
    "plan": ("tensorrt_plan", "tensorrt", "model.plan"),
}
KINDS: dict[str, str] = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
#: The range of each protobuf integer type.
PROTO_RANGES: dict[str, tuple[int, int]] = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
#: Every numeric field `config_text` writes: (message, field) in model_config.proto, its protobuf type,
#: and the option that sets it (None: set by the graph's spec).
PROTO_FIELDS: dict[str, tuple[str, str, str, str | None]] = {
    "max_batch_size": ("ModelConfig", "max_batch_size", "int32", "--max-batch"),
    "count": ("ModelInstanceGroup", "count", "int32", "--instances"),
    "dims": ("ModelInput", "dims", "int64", None),
    "shape": ("ModelTensorReshape", "shape", "int64", None),
    "max_queue_delay_microseconds": ("ModelDynamicBatching", "max_queue_delay_microseconds", "uint64", None),
}
#: How long the dynamic batcher holds a request for others to join it (docs/user_guide/batcher.md:
#: start small, then tune against the latency budget).
QUEUE_DELAY_US = 500
REPO_JSON = "zeroseg_triton.json"
PERF_DATA = "perf_segmenter.json"


@dataclass(frozen=True)
class TritonModel:
    """One model of the repository: its graph, the runtime that serves it, and how."""

    name: str
    spec: GraphSpec
    runtime: str  # a key of RUNTIMES
    max_batch_size: int  # 0 = Triton does not batch it (the shapes are the graph's own)
    kind: str  # a key of KINDS
    instances: int
    queue_delay_us: int = QUEUE_DELAY_US

    @property
    def file(self) -> str:
        """The model file's name inside the version folder (`model.onnx`, `model.plan`)."""
        return RUNTIMES[self.runtime][2]


def batchable(spec: GraphSpec) -> bool:
    """Whether every input and output of `spec` has the batch dimension (`specs.BATCH`) first."""
    return all(t.dims and t.dims[0] == BATCH for t in (*spec.inputs, *spec.outputs))


def model_batch_size(spec: GraphSpec, max_batch: int) -> int:
    """`max_batch_size` of a graph: `max_batch` if Triton can batch it (`batchable`), else 0.

    Args:
        spec: the graph's inputs and outputs.
        max_batch: the requested maximum batch (`--max-batch`; 0 turns batching off everywhere).

    Returns:
        The value for the model's config.
    """
    if max_batch < 0:
        raise ZerosegError(f"--max-batch must be >= 0 (0 = no batching by Triton), got {max_batch}")
    return max_batch if max_batch > 0 and batchable(spec) else 0


def triton_shape(tensor: TensorSpec, batched: bool) -> tuple[list[int], list[int] | None]:
    """A tensor's `dims` in the config and, for a scalar, its `reshape` (the graph's own shape).

    Args:
        tensor: the tensor's spec.
        batched: the model has max_batch_size > 0 (the leading batch dimension is left out).

    Returns:
        (dims, reshape): dynamic dimensions as -1; reshape is [] for a scalar, else None.
    """
    dims = list(tensor.dims[1:] if batched else tensor.dims)
    if batched and tensor.dims[:1] != (BATCH,):
        raise ZerosegError(f"tensor {tensor.name} has no leading batch dimension; it cannot be batched")
    shape = [-1 if isinstance(d, str) else int(d) for d in dims]
    return (shape, None) if shape else ([1], [])


def triton_type(dtype: str) -> str:
    """Triton's `TYPE_*` for a numpy dtype name (`float32` -> `TYPE_FP32`)."""
    try:
        return TRITON_TYPES[dtype]
    except KeyError:
        raise ZerosegError(f"Triton has no data type for numpy {dtype!r}") from None


def proto_number(value: int, field: str) -> int:
    """`value`, checked against the type of `field` (a key of `PROTO_FIELDS`) in Triton's schema.

    Raises:
        ZerosegError: a value Triton would refuse to load (e.g. --max-batch over int32's 2147483647).
    """
    _, name, kind, option = PROTO_FIELDS[field]
    low, high = PROTO_RANGES[kind]
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= value <= high:
        given = f"{option} {value}" if option else f"{name} {value}"
        fix = f"pass a smaller {option}" if option else "re-export the bundle"
        raise ZerosegError(
            f"{given} is outside Triton's range for {name} ({kind} in model_config.proto: {low}..{high}); "
            f"{fix}"
        )
    return int(value)


def _dims(values: list[int], field: str = "dims") -> str:
    values = [proto_number(v, field) for v in values]
    return "[ " + ", ".join(str(v) for v in values) + " ]" if values else "[ ]"


def _tensor_block(tensor: TensorSpec, batched: bool) -> str:
    dims, reshape = triton_shape(tensor, batched)
    lines = [
        "  {",
        f"    name: {json.dumps(tensor.name)}",
        f"    data_type: {triton_type(tensor.dtype)}",
        f"    dims: {_dims(dims)}",
    ]
    if reshape is not None:
        lines.append(f"    reshape: {{ shape: {_dims(reshape, 'shape')} }}")
    return "\n".join([*lines, "  }"])


def _tensors(key: str, tensors: tuple[TensorSpec, ...], batched: bool) -> str:
    return f"{key} [\n" + ",\n".join(_tensor_block(t, batched) for t in tensors) + "\n]"


def config_text(model: TritonModel, *, comment: str = "") -> str:
    """The `config.pbtxt` of one model (protobuf text format, Triton's `ModelConfig`).

    Args:
        model: the model (graph spec, runtime, batching, instances).
        comment: lines written first as `#` comments (provenance); may be empty.

    Returns:
        The file's text.

    Raises:
        ZerosegError: a bad option, or a number outside its field's range in Triton's schema.
    """
    if model.runtime not in RUNTIMES:
        raise ZerosegError(f"unknown model runtime {model.runtime!r} (expected one of {', '.join(RUNTIMES)})")
    if model.kind not in KINDS:
        raise ZerosegError(f"--kind must be cpu or gpu, got {model.kind!r}")
    if model.instances < 1:
        raise ZerosegError(f"--instances must be >= 1, got {model.instances}")
    if model.max_batch_size < 0:
        raise ZerosegError(f"--max-batch must be >= 0, got {model.max_batch_size}")
    if model.runtime == "plan" and model.kind != "gpu":
        raise ZerosegError("a TensorRT engine runs on a GPU only: pass --kind gpu (or serve the ONNX bundle)")
    platform, backend, _ = RUNTIMES[model.runtime]
    batched = model.max_batch_size > 0
    parts = [f"# {line}" for line in comment.splitlines()]
    parts += [
        f"name: {json.dumps(model.name)}",
        f"platform: {json.dumps(platform)}",
        f"backend: {json.dumps(backend)}",
        f"max_batch_size: {proto_number(model.max_batch_size, 'max_batch_size')}",
        _tensors("input", model.spec.inputs, batched),
        _tensors("output", model.spec.outputs, batched),
        f"instance_group [\n  {{\n    count: {proto_number(model.instances, 'count')}\n"
        f"    kind: {KINDS[model.kind]}\n  }}\n]",
    ]
    if batched:
        delay = proto_number(model.queue_delay_us, "max_queue_delay_microseconds")
        parts.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {delay}\n}}")
    return "\n".join(parts) + "\n"


def plan_batch_size(engine: dict[str, Any], spec: GraphSpec, max_batch: int | None) -> int:
    """`max_batch_size` of a TensorRT plan: within its optimisation profile's batch range.

    Args:
        engine: the folder's engine.json (its first profile's min / max (B, 3, H, W)).
        spec: the image encoder's spec.
        max_batch: --max-batch (None: the profile's maximum batch).

    Returns:
        The value for the config.
    """
    profile = engine["profiles"][0]
    low, high = int(profile["min"][0]), int(profile["max"][0])
    batch = high if max_batch is None else max_batch
    if batch > high:
        raise ZerosegError(
            f"--max-batch {batch} exceeds the engine's profile (batch {low}..{high}); pass --max-batch <= "
            f"{high} or rebuild it with zeroseg-export trt --max-shape {batch},H,W"
        )
    if batch > 0 and low > 1:
        raise ZerosegError(
            f"the engine's profile starts at batch {low} but Triton's batcher sends batches from 1: rebuild "
            "it with --min-shape 1,H,W, or pass --max-batch 0"
        )
    return model_batch_size(spec, batch)


def tensor_entries(model: TritonModel, tensors) -> list[dict[str, Any]]:
    """The tensors of a model as zeroseg_triton.json lists them: config dims, reshape, graph dims."""
    out = []
    for t in tensors:
        dims, reshape = triton_shape(t, model.max_batch_size > 0)
        entry = {"name": t.name, "data_type": triton_type(t.dtype), "dims": dims, "graph_dims": list(t.dims)}
        out.append(entry if reshape is None else {**entry, "reshape": reshape})
    return out


def request_arrays(spec: GraphSpec, feed: dict, batched: bool) -> dict:
    """A graph's feed in the shapes a Triton request carries (a scalar as shape [1]).

    Args:
        spec: the graph's spec.
        feed: input name -> numpy array in the graph's own shapes (e.g. `specs.segmenter_feed(...)`).
        batched: the model has max_batch_size > 0 (the arrays keep their batch dimension).

    Returns:
        input name -> array for `tritonclient`'s `InferInput(name, array.shape, ...)`.
    """
    out = {}
    for tensor in spec.inputs:
        value = np.ascontiguousarray(feed[tensor.name], dtype=tensor.dtype)
        _, reshape = triton_shape(tensor, batched)
        if reshape == []:  # a scalar travels as [1] ([B, 1] in a batched model)
            value = value.reshape(-1, 1) if batched else value.reshape(1)
        out[tensor.name] = value
    return out


def perf_request(
    manifest: BundleManifest, bundle: Path, spec: GraphSpec
) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """One real segmenter request, in Triton's request shapes, and its network input (H, W).

    Args:
        manifest: the bundle's manifest; bundle: its folder (vocab.npz); spec: the segmenter's spec.

    Returns:
        A ShapeWorld scene at the bundle's 4:3 input size, the vocabulary's foreground classes (else 8
        random unit vectors), the default threshold and label offset 1; and (H, W).
    """
    from zeroseg.export.core.manifest import load_vocabulary
    from zeroseg.export.core.parity import sample_scenes
    from zeroseg.export.core.resize import preprocess_images
    from zeroseg.preprocess import inference_size

    h, w = inference_size(480, 640, manifest.short_side, manifest.patch)
    pixels = preprocess_images(sample_scenes(1), (h, w))
    text = None
    if VOCAB_NAME in manifest.files:
        vocab = load_vocabulary(bundle / VOCAB_NAME)
        rows = [i for i, e in enumerate(vocab.entries) if e[0].strip().lower() != "background"]
        text = vocab.embeddings[rows] if rows else None
    if text is None:
        rng = np.random.default_rng(0)
        text = rng.standard_normal((8, int(manifest.model["embed_dim"]))).astype(np.float32)
        text /= np.linalg.norm(text, axis=1, keepdims=True)
    bg = float(manifest.model.get("inference", {}).get("bg_thresh", 0.0))
    return request_arrays(spec, segmenter_feed(pixels, text, bg, 1, (h, w)), batched=False), (h, w)


def perf_json(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """perf_analyzer's --input-data JSON for one request (base64 little-endian content + shape)."""

    def entry(a: np.ndarray) -> dict[str, Any]:
        data = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
        return {"content": {"b64": base64.b64encode(data).decode("ascii")}, "shape": list(a.shape)}

    return {"data": [{name: entry(a) for name, a in arrays.items()}]}


def perf_command(model: TritonModel, repo: Path, hw: tuple[int, int], prompts: int) -> str:
    """The perf_analyzer command line of one model of repository `repo`.

    Args:
        model: the model.
        repo: the repository folder (where `perf_segmenter.json` lies).
        hw: the network input (H, W) to benchmark at.
        prompts: the prompt count of a text-encoder request (templates x synonyms of the vocabulary).

    Returns:
        The command: batched models with `-b`, unbatched ones with their full `--shape`.
    """
    h, w = hw
    name = model.spec.name
    if name == "segmenter":  # random output sizes and thresholds are no request: a real one
        return f"perf_analyzer -m {model.name} --input-data {repo / PERF_DATA} --concurrency-range 1:4"
    if name == "text_encoder":  # any token id is valid and the cost does not depend on them
        length = model.spec.inputs[0].dims[1]
        return f"perf_analyzer -m {model.name} --input-data zero --shape token_ids:{prompts},{length}"
    if model.max_batch_size > 0:
        batch = min(4, model.max_batch_size)
        return f"perf_analyzer -m {model.name} -b {batch} --shape pixels:3,{h},{w} --concurrency-range 1:8"
    return f"perf_analyzer -m {model.name} --shape pixels:1,3,{h},{w} --concurrency-range 1:4"


def repository_readme(
    out: Path,
    models: list[TritonModel],
    hw: tuple[int, int],
    *,
    prompts: int,
    plan_hw: tuple[int, int] | None = None,
    note: str = "",
) -> str:
    """REPO/README.md: the tritonserver and perf_analyzer command lines for this repository.

    Args:
        out: the repository folder (as it will be installed).
        models: the repository's models.
        hw: the network input (H, W) of the ONNX models' requests.
        prompts: the prompt count of a text-encoder request.
        plan_hw: a TensorRT plan's (H, W) (its profile's opt shape), if any.
        note: a paragraph about the source.

    Returns:
        The Markdown text.
    """
    repo = out.absolute()
    lines = [
        "# Triton model repository (zeroseg-export triton)",
        "",
        f"{note} Models, batching and the client pipeline: `{REPO_JSON}`; the bundle's own "
        "`manifest.json` and `vocab.npz` lie beside them (Triton reads only the model sub-folders).",
        "",
        "Serve:",
        "",
        f"    tritonserver --model-repository {repo}",
        "",
        "Benchmark with perf_analyzer (Triton's SDK container) while the server runs:",
        "",
    ]
    for model in models:
        size = plan_hw if model.runtime == "plan" and plan_hw else hw
        lines.append(f"    {perf_command(model, repo, size, prompts)}")
    lines += [
        "",
        f"`{PERF_DATA}` is one real segmenter request: a ShapeWorld scene at {hw[0]}x{hw[1]}, the vocabulary "
        "(or 8 random unit classes), the default background threshold, label offset 1.",
    ]
    return "\n".join(lines) + "\n"
