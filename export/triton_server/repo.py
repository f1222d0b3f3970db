"""`export_triton`: an exported bundle -> an NVIDIA Triton Inference Server model repository.

    zeroseg-export triton BUNDLE --out REPO [--max-batch N] [--instances N] [--kind cpu|gpu] [--force]

BUNDLE is a folder `zeroseg-export onnx` wrote (ONNX Runtime backend) or one `zeroseg-export trt`
wrote (the image encoder as a TensorRT plan, the other graphs from its `onnx/` bundle). Layout:

    REPO/image_encoder/config.pbtxt, 1/model.onnx (or 1/model.plan from a TensorRT folder)
    REPO/text_encoder/...   REPO/segmenter/...   REPO/<graph>_int8/... (int8 variants, if exported)
    REPO/manifest.json, vocab.npz   the bundle's own, byte for byte (`read_manifest(REPO)` works)
    REPO/zeroseg_triton.json        the models, their roles, batching, the client pipeline
    REPO/perf_segmenter.json        a real request for perf_analyzer --input-data
    REPO/README.md                  the tritonserver / perf_analyzer command lines for this repository

Triton reads only the sub-folders of a repository as models; the files beside them are ignored.

Batching (`zeroseg.export.triton_server.config`): the image encoder's tensors all lead with the batch, so
it gets `max_batch_size` = --max-batch (default 8; a TensorRT engine's profile maximum) and the
dynamic batcher (requests of one image size are merged). The text encoder and the segmenter get
`max_batch_size: 0`: Triton batches a model only if *every* tensor is batched, and the segmenter's
vocabulary (C, D), threshold, label offset and output size are per request — two requests with
another vocabulary or output size cannot share a batch anyway, and a request already carries a
batch of same-size images (its first dimension is dynamic). Reshaping them into fake batched
tensors would let Triton merge requests whose vocabularies differ, silently wrong. The text
encoder's first dimension is the prompt count, which a vocabulary sets (templates x synonyms) and
which can exceed any --max-batch; it runs once per vocabulary, so merging requests gains nothing.

Client pipeline, not an ensemble: the end-to-end segmenter takes *class* embeddings, the renormalised
mean of each class's template prompts, which is not a graph (the text encoder returns one embedding
per prompt) and must not be recomputed per image. So a client (1) takes the embeddings from
vocab.npz, or tokenises the prompts (the manifest's tokenizer and templates), calls `text_encoder`
once per vocabulary, averages per class and renormalises (`OnnxSegmenter._encode_with_text_graph`),
and caches them; (2) resizes each image as the manifest says and calls `segmenter` per batch of
same-size images with those embeddings. An ensemble would re-encode the vocabulary for every image
and still need a Python model for the averaging. `image_encoder` is served for clients with their own
head (retrieval, region embeddings); the bundle has no head-only graph to chain it with.

Writes go to a staged folder beside --out, installed only when complete (an existing --out only with
--force). Plain Python, numpy and pillow: no tritonclient, torch or TensorRT.
"""

from __future__ import annotations

import datetime
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zeroseg.errors import ZerosegError
from zeroseg.export.core.folders import check_out_folder
from zeroseg.export.core.manifest import MANIFEST_NAME, VOCAB_NAME, BundleManifest, sha256_file
from zeroseg.export.core.specs import GraphSpec, all_specs
from zeroseg.export.triton_server.config import (
    KINDS,
    PERF_DATA,
    REPO_JSON,
    RUNTIMES,
    TritonModel,
    config_text,
    model_batch_size,
    perf_json,
    perf_request,
    plan_batch_size,
    repository_readme,
    tensor_entries,
)

REPO_FORMAT = "zeroseg-triton-repository"
DEFAULT_MAX_BATCH = 8
GRAPHS = ("image_encoder", "text_encoder", "segmenter")
ROLES = {
    "image_encoder": "pixels (B, 3, H, W) in [0, 1] -> unit segment embeddings and soft assignment",
    "text_encoder": "token ids (prompts, L) -> unit prompt embeddings; once per vocabulary",
    "segmenter": "end to end: pixels + class embeddings + threshold + label offset + output size -> labels",
}
PIPELINE = [
    "class embeddings (C, D): vocab.npz rows, or text_encoder on the tokenised template prompts of each "
    "class, averaged per class and renormalised; once per vocabulary, cached by the client",
    "pixels: each image resized as manifest.json's preprocess says (short side, patch multiple, bicubic "
    "antialiased, [0, 1]); images of one size form one request",
    "segmenter: pixels, text_embeddings, bg_thresh [1], label_offset [1] (1: label 0 is background, "
    "0 if background is prompted first), output_size [2] -> labels (B, H, W) int32",
]


@dataclass(frozen=True)
class TritonSettings:
    """What `zeroseg-export triton` was asked for."""

    source: Path
    out: Path
    max_batch: int | None = None  # None: 8, or a TensorRT engine's profile maximum
    instances: int = 1
    kind: str | None = None  # None: cpu for an ONNX bundle, gpu for a TensorRT folder
    force: bool = False


@dataclass(frozen=True)
class TritonSource:
    """A resolved BUNDLE: its ONNX bundle (the folder, or a TensorRT folder's `onnx/`) and engine.json."""

    kind: str  # "onnx" | "tensorrt"
    folder: Path
    bundle: Path
    manifest: BundleManifest
    engine: dict[str, Any] | None = None


@dataclass(frozen=True)
class PlannedModel:
    """A repository model: its config and the bundle files that become its version folder."""

    model: TritonModel
    graph: str
    precision: str
    files: tuple[tuple[Path, str], ...]  # (bundle file, name in the version folder)
    sha256: str


def resolve_source(path: Path) -> TritonSource:
    """Check BUNDLE: an ONNX bundle or a TensorRT engine folder, manifests verified.

    Args:
        path: the BUNDLE argument.

    Returns:
        The `TritonSource`; anything else is a one-line ZerosegError naming the fix.
    """
    from zeroseg.export.core.manifest import BUNDLE_FORMAT, read_manifest
    from zeroseg.export.tensorrt.manifest import ENGINE_JSON, read_engine_json

    path = Path(path)
    if not path.exists():
        raise ZerosegError(f"bundle not found: {path} (pass the folder zeroseg-export onnx or trt wrote)")
    if not path.is_dir():
        raise ZerosegError(
            f"{path} is a file, not a bundle folder: export one first (zeroseg-export onnx {path} --out DIR)"
        )
    if (path / ENGINE_JSON).is_file():
        meta = read_engine_json(path)
        bundle = path / str(meta.get("bundle") or "onnx")
        return TritonSource("tensorrt", path, bundle, read_manifest(bundle), meta)
    if not (path / MANIFEST_NAME).is_file():
        raise ZerosegError(
            f"{path} is not a zeroseg bundle: no {MANIFEST_NAME} (zeroseg-export onnx) or {ENGINE_JSON} "
            "(zeroseg-export trt); pass the folder one of them wrote"
        )
    try:
        fmt = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8")).get("format")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        fmt = None
    if fmt == "zeroseg-aoti-bundle":
        raise ZerosegError(
            f"{path} is an AOTInductor bundle; Triton is served from an ONNX bundle (zeroseg-export onnx) "
            "or a TensorRT folder (zeroseg-export trt)"
        )
    return TritonSource("onnx", path, path, read_manifest(path, fmt=BUNDLE_FORMAT))


def bundle_specs(manifest: BundleManifest) -> dict[str, GraphSpec]:
    """The three graphs' specs (`specs.all_specs`), checked against the tensors the manifest records."""
    model, text = manifest.model, manifest.text
    try:
        specs = all_specs(
            int(model["num_segments"]), int(model["embed_dim"]), int(text["context_length"]), manifest.head
        )
    except (KeyError, TypeError, ValueError):
        raise ZerosegError("the bundle's manifest lacks the model's sizes; re-export the bundle") from None
    for name, spec in specs.items():
        entry = manifest.graphs.get(name)
        if entry is None:
            raise ZerosegError(f"the bundle has no {name} graph; re-export it with zeroseg-export onnx")
        want = spec.to_dict()
        if entry.get("inputs") != want["inputs"] or entry.get("outputs") != want["outputs"]:
            raise ZerosegError(
                f"the bundle's {name} tensors differ from this zeroseg's ({spec.file}); re-export the bundle"
            )
    return specs


def plan_models(source: TritonSource, settings: TritonSettings, kind: str, log=print) -> list[PlannedModel]:
    """The repository's models: each graph (a TensorRT plan for the image encoder of a TensorRT
    folder) and each int8 variant, with the bundle files checked against their sha256."""
    from zeroseg.export.core.manifest import verified_file

    manifest, specs = source.manifest, bundle_specs(source.manifest)
    max_batch = DEFAULT_MAX_BATCH if settings.max_batch is None else settings.max_batch
    planned = []
    for name in GRAPHS:
        spec, entry = specs[name], manifest.graphs[name]
        if source.engine is not None and name == "image_encoder":
            engine = source.engine["engine"]
            path = source.folder / engine["file"]
            batch = plan_batch_size(source.engine, spec, settings.max_batch)
            model = TritonModel(name, spec, "plan", batch, kind, settings.instances)
            precision = str(source.engine.get("precision", "fp32"))
            planned.append(PlannedModel(model, name, precision, ((path, model.file),), engine["sha256"]))
            continue
        files = [str(f) for f in entry.get("files") or [entry["file"]]]
        paths = [verified_file(source.bundle, manifest, f) for f in files]
        names = ["model.onnx" if f == entry["file"] else f for f in files]  # external data keeps its name
        copies = tuple(zip(paths, names, strict=True))
        model = TritonModel(name, spec, "onnx", model_batch_size(spec, max_batch), kind, settings.instances)
        planned.append(PlannedModel(model, name, "fp32", copies, manifest.files[entry["file"]]))
        if entry.get("int8_file"):
            int8 = str(entry["int8_file"])
            path = verified_file(source.bundle, manifest, int8)
            if kind != "cpu":
                log(f"{name}_int8: KIND_CPU (ONNX Runtime's int8 kernels are CPU kernels), not --kind {kind}")
            model = TritonModel(f"{name}_int8", spec, "onnx", model.max_batch_size, "cpu", settings.instances)
            planned.append(PlannedModel(model, name, "int8", ((path, "model.onnx"),), manifest.files[int8]))
    return planned


def write_repository(folder: Path, source: TritonSource, planned: list[PlannedModel], out: Path) -> dict:
    """Fill `folder` (empty) with the models, the bundle's manifest and vocabulary, zeroseg_triton.json,
    the perf_analyzer request and the README; returns zeroseg_triton.json's content."""
    from zeroseg import __version__
    from zeroseg.utils.atomic import atomic_write_bytes, atomic_write_json

    manifest = source.manifest
    origin = f"written by zeroseg-export triton (zeroseg {__version__}) from {source.folder.absolute()}"
    models = {}
    for p in planned:
        m = p.model
        version = folder / m.name / "1"
        version.mkdir(parents=True)
        for src, name in p.files:
            shutil.copyfile(src, version / name)
        role = ROLES[p.graph] + (f" ({p.precision})" if p.precision != "fp32" else "")
        (folder / m.name / "config.pbtxt").write_text(config_text(m, comment=f"{m.name}: {role}\n{origin}"))
        platform, backend, _ = RUNTIMES[m.runtime]
        models[m.name] = {
            "role": role, "graph": p.graph, "precision": p.precision, "file": f"{m.name}/1/{m.file}",
            "sha256": p.sha256, "platform": platform, "backend": backend, "max_batch_size": m.max_batch_size,
            "dynamic_batching": m.max_batch_size > 0,
            "instance_group": {"kind": KINDS[m.kind], "count": m.instances},
            "inputs": tensor_entries(m, m.spec.inputs), "outputs": tensor_entries(m, m.spec.outputs),
        }  # fmt: skip
    engine = source.engine
    shutil.copyfile(source.bundle / MANIFEST_NAME, folder / MANIFEST_NAME)
    has_vocab = VOCAB_NAME in manifest.files
    if has_vocab:
        shutil.copyfile(source.bundle / VOCAB_NAME, folder / VOCAB_NAME)
    seg = next(p.model for p in planned if p.model.name == "segmenter")
    arrays, hw = perf_request(manifest, source.bundle, seg.spec)
    atomic_write_bytes(folder / PERF_DATA, json.dumps(perf_json(arrays)).encode())
    entries = (manifest.vocab or {}).get("classes") or [["x"]] * 20  # prompts: templates x synonyms
    prompts = len(manifest.text.get("templates") or [1]) * sum(len(e) for e in entries)
    note = f"Source: `{source.folder.absolute()}` ({source.kind} bundle)."
    plan_hw = None
    if engine is not None:
        _, _, h, w = engine["profiles"][0]["opt"]
        plan_hw = (int(h), int(w))
        trt, device = engine.get("tensorrt") or {}, engine.get("device") or {}
        note += (
            f" `image_encoder/1/model.plan` was built with TensorRT {trt.get('version')} for "
            f"{device.get('name')} (compute capability {device.get('compute_capability')}): serve it with "
            "the Triton release whose TensorRT is that version, on that GPU (plans are not portable)."
        )
    models_ = [p.model for p in planned]
    readme = repository_readme(out, models_, hw, prompts=prompts, plan_hw=plan_hw, note=note)
    (folder / "README.md").write_text(readme)
    data = {
        "format": REPO_FORMAT,
        "version": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "kind": source.kind,
            "path": str(source.folder.absolute()),
            "manifest_sha256": sha256_file(source.bundle / MANIFEST_NAME),
            **{k: engine.get(k) for k in ("engine", "precision", "tensorrt", "device", "profiles") if engine},
        },
        "models": models,
        "pipeline": PIPELINE,
        "preprocess": manifest.preprocess,
        "text": manifest.text,
        "inference": manifest.model.get("inference", {}),
        "vocab": manifest.vocab,
        "files": {
            "manifest": MANIFEST_NAME,
            "vocab": VOCAB_NAME if has_vocab else None,
            "perf_data": PERF_DATA,
            "readme": "README.md",
        },
    }
    atomic_write_json(folder / REPO_JSON, data)
    return data


def export_triton(settings: TritonSettings, *, log=print) -> dict[str, Any]:
    """Write a Triton model repository for an exported bundle (see the module docstring).

    Args:
        settings: the bundle, the repository folder and the serving options.
        log: receives a line per model and the serving command.

    Returns:
        The content of `<out>/zeroseg_triton.json`.

    Raises:
        ZerosegError: a bad option or bundle (one line; nothing is written).
    """
    from zeroseg.utils.atomic import staged_folder

    if settings.max_batch is not None and settings.max_batch < 0:
        raise ZerosegError(f"--max-batch must be >= 0 (0 = no batching by Triton), got {settings.max_batch}")
    if settings.instances < 1:
        raise ZerosegError(f"--instances must be >= 1 (model instances per device), got {settings.instances}")
    kind = None if settings.kind is None else settings.kind.strip().lower()
    if kind is not None and kind not in KINDS:
        raise ZerosegError(f"--kind must be cpu or gpu, got {settings.kind!r}")
    out = Path(settings.out)
    check_out_folder(out, settings.force, inputs={"the bundle": settings.source})
    source = resolve_source(Path(settings.source))
    if source.engine is not None:
        if kind == "cpu":
            raise ZerosegError(
                f"{source.folder} holds a TensorRT engine, which runs on a GPU only: pass --kind gpu, or "
                f"serve its ONNX bundle on the CPU (zeroseg-export triton {source.bundle} --kind cpu)"
            )
        if source.engine.get("engine") is None:
            raise ZerosegError(
                f"{source.folder} was written with --onnx-only and has no engine: build it with "
                f"zeroseg-export trt on a GPU machine, or serve the ONNX bundle ({source.bundle})"
            )
    kind = kind or ("gpu" if source.engine is not None else "cpu")
    planned = plan_models(source, settings, kind, log=log)
    for p in planned:  # every number of every config.pbtxt checked against Triton's schema, before writing
        config_text(p.model)
    try:
        with staged_folder(out, what="the model repository") as tmp:
            data = write_repository(tmp, source, planned, out)
    except OSError as exc:  # a full disk, a read-only folder: the staged folder is gone already
        why = (exc.strerror or type(exc).__name__).lower()
        raise ZerosegError(
            f"cannot write the model repository {out}: {why}; free space or pick another --out"
        ) from None
    for name, m in data["models"].items():
        group = m["instance_group"]
        batching = ", dynamic batching" if m["dynamic_batching"] else ""
        size = f"max_batch_size {m['max_batch_size']}{batching}"
        log(f"{name}: {m['platform']}, {size}, {group['count']} x {group['kind']}")
    log(f"wrote {out} ({len(data['models'])} models); serve: tritonserver --model-repository {out}")
    return data
