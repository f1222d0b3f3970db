"""`OnnxSegmenter`: a bundle from `zeroseg-export onnx` run by ONNX Runtime, `zeroseg.Segmenter`'s call.

It subclasses `SegmenterBase`, so batching by input size, the label space and the argument checks
are the library's own; only the stages differ:

    embed_prompts  vocab.npz lookup (no model at all), else text_encoder.onnx on the checkpoint's
                   tokenizer (which needs open_clip, hence torch: refused clearly without them);
    preprocess     the numpy port of PyTorch's antialiased bicubic resize (`zeroseg.export.core.resize`);
    forward        passes the pixels on: the end-to-end graph needs the text and the output size,
                   so the network runs in `head`;
    head           segmenter.onnx (or segmenter.int8.onnx), once per distinct image size in the
                   batch, straight to each image's own size; the graph holds the head it was
                   exported with (`head_mode`, the manifest's `head`): with the dense head a
                   result's segment labels and probabilities are per patch, as `name_patches`'.

Before a graph is opened its sha256 is checked, and so is its count of fused attention ops against
the manifest's (`fused_ops`, or `int8_fused_ops` for an int8 file): a graph whose fused ops were
expanded or stripped after export is refused even if someone re-signed the checksums
(`check_fused_ops`; bundles from before fusion, without the field, are not checked).

Imports numpy, onnxruntime, onnx (for the op count, never protobuf-free) and pillow only: with a
`vocab.npz` holding the requested classes it runs with torch and open_clip uninstalled.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from zeroseg.errors import ZerosegError
from zeroseg.export.core.formats import RUNTIMES, cuda_index, device_type
from zeroseg.export.core.manifest import VOCAB_NAME, load_vocabulary, read_manifest, verified_file
from zeroseg.export.core.resize import preprocess_images
from zeroseg.export.core.specs import segmenter_feed
from zeroseg.infer.base import SegmenterBase
from zeroseg.infer.labels import DEFAULT_BG_THRESH, LabelSpace, SegmentationResult


def device_providers(device=None) -> list:
    """ONNX Runtime execution providers for a zeroseg device: the CPU's, or CUDA's (index N) first."""
    if device is None or device_type(device) == "cpu":
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": cuda_index(device)}), "CPUExecutionProvider"]


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def session_options(threads: int | None = None):
    """ONNX Runtime options tuned for latency on few cores (see README, "Export").

    Explicit intra-op threads (default: the usable CPUs; an explicit count also leaves the threads
    unpinned, so a busy neighbour cannot stall a pinned one), one inter-op thread with sequential
    execution (these graphs are a chain: parallel branches only add scheduling), every graph
    optimisation on, and no spin-waiting between ops (ONNX Runtime's counterpart of
    OMP_WAIT_POLICY=PASSIVE: on 2 shared cores a spinning worker steals the core the other one needs).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads) if threads else usable_cpus()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def open_session(
    path: str | os.PathLike, *, providers: Sequence[str] | None = None, threads: int | None = None
):
    """An `onnxruntime.InferenceSession` on `path` with `session_options(threads)`."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(
            str(path),
            sess_options=session_options(threads),
            providers=list(providers or ["CPUExecutionProvider"]),
        )
    except Exception as exc:  # onnxruntime raises its own exception types (InvalidGraph, Fail, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZerosegError(f"ONNX Runtime cannot load {path}: {first[:200]}") from None


def check_fused_ops(manifest, graph: str, precision: str, path: Path) -> None:
    """Refuse `path` (graph `graph` at `precision`) if its fused-op counts differ from the manifest's.

    Raises:
        ZerosegError: one line naming the graph, both counts and the fix.
    """
    entry = manifest.graphs.get(graph, {})
    want = entry.get("fused_ops" if precision == "fp32" else "int8_fused_ops")
    if want is None:  # a bundle exported before attention fusion was recorded
        return
    from zeroseg.export.onnx.fuse import file_op_counts

    got = file_op_counts(path)
    if got != dict(want):
        show = lambda c: ", ".join(f"{n} x{k}" for n, k in sorted(c.items())) or "none"  # noqa: E731
        raise ZerosegError(
            f"{path.name} holds fused ops {show(got)} but the manifest says {show(want)}: the graph was "
            "altered after export; re-export the bundle"
        )


class OnnxSegmenter(SegmenterBase):
    """Zero-shot segmentation with an exported bundle; the same call and results as `zeroseg.Segmenter`."""

    def __init__(
        self,
        bundle_dir: str | os.PathLike,
        *,
        device=None,
        precision: str | None = None,
        threads: int | None = None,
        short_side: int | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        """Open a bundle after checking its manifest and the graphs' checksums.

        Args:
            bundle_dir: the folder `zeroseg-export onnx --out` wrote.
            device: "cpu" (default) or "cuda[:N]" (ONNX Runtime's CUDA provider, onnxruntime-gpu).
            precision: "fp32" (default) or "int8" (the bundle must have been exported with --int8).
            threads: intra-op threads (default: the CPUs this process may use).
            short_side: network input short side (default: the one the bundle was exported for).
            providers: explicit ONNX Runtime execution providers (overrides `device`).
        """
        RUNTIMES["onnxruntime"].check(
            device=device, precision=precision, threads=threads, short_side=short_side
        )
        precision = precision or "fp32"
        self.bundle = Path(bundle_dir)
        self.manifest = manifest = read_manifest(self.bundle)
        self.precision = precision
        self.providers = list(providers or device_providers(device))
        self.threads = threads
        self.patch = manifest.patch
        self.short_side = manifest.short_side if short_side is None else int(short_side)
        if self.short_side < self.patch:
            raise ZerosegError(f"short side {self.short_side} is smaller than the patch size {self.patch}")
        self.max_side = int(manifest.preprocess["max_side"])
        inference = manifest.model.get("inference", {})
        self.default_bg_thresh = float(inference.get("bg_thresh", DEFAULT_BG_THRESH))
        self.default_bg_prompt = bool(inference.get("bg_prompt", False))
        self.head_mode = manifest.head  # the head inside segmenter.onnx ("paper" or "dense")
        self.session = self._open("segmenter", precision)
        self.vocabulary = None
        if VOCAB_NAME in manifest.files:
            self.vocabulary = load_vocabulary(verified_file(self.bundle, manifest, VOCAB_NAME))
        self._text_session = None
        self._encoder_session = None
        self._tokenizer = None
        self._cache: dict[tuple, np.ndarray] = {}

    # ---- stages -------------------------------------------------------------------------------

    def embed_prompts(self, prompts: Sequence[Sequence[str]]) -> np.ndarray:
        """(C, D) unit-norm class embeddings: from vocab.npz, else through text_encoder.onnx."""
        key = tuple(tuple(p) for p in prompts)
        if key not in self._cache:
            if self.vocabulary is None:
                found, missing = None, [" | ".join(p) for p in key]
            else:
                found, missing = self.vocabulary.lookup(key)
            self._cache[key] = found if found is not None else self._encode_with_text_graph(key, missing)
        return self._cache[key].copy()

    def preprocess(self, images: Sequence[Image.Image], size: tuple[int, int]) -> np.ndarray:
        """(B, 3, H, W) float32 pixels in [0, 1] at `size`, resized as `zeroseg.Segmenter` does."""
        return preprocess_images(list(images), size)

    def forward(self, pixels: np.ndarray) -> np.ndarray:
        """The pixels themselves: segmenter.onnx runs in `head`, which has the text and the sizes."""
        return pixels

    def head(
        self,
        out: np.ndarray,
        text: np.ndarray,
        sizes: Sequence[tuple[int, int]],
        *,
        bg_thresh: float,
        space: LabelSpace,
    ) -> list[SegmentationResult]:
        """Run segmenter.onnx on the batch, once per distinct image size; one result per image."""
        results: list[SegmentationResult | None] = [None] * len(sizes)
        for size in dict.fromkeys(sizes):
            idx = [i for i, s in enumerate(sizes) if s == size]
            feed = segmenter_feed(out[idx], text, bg_thresh, space.label_offset, size)
            labels, seg_labels, seg_probs = self.session.run(None, feed)
            for j, i in enumerate(idx):
                results[i] = SegmentationResult(
                    labels=labels[j].astype(np.int32, copy=False),
                    class_names=space.names,
                    segment_labels=seg_labels[j].astype(np.int64),
                    segment_probs=seg_probs[j],
                )
        return [r for r in results if r is not None]

    # ---- extra entry points -------------------------------------------------------------------

    def encode(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """image_encoder.onnx on [0, 1] pixels: unit segment embeddings (B, K, D), assignment (B, K, h, w)."""
        if self._encoder_session is None:
            self._encoder_session = self._open("image_encoder", self.precision)
        segments, maps = self._encoder_session.run(None, {"pixels": np.ascontiguousarray(pixels, np.float32)})
        return segments, maps

    def _open(self, graph: str, precision: str):
        """A session on one of the bundle's graphs, after checking its files' sha256."""
        name = self.manifest.graph_file(graph, precision)
        if precision == "fp32":  # external weights of a graph over 2 GB are checked too
            for other in self.manifest.graphs[graph].get("files", []):
                if other != name:
                    verified_file(self.bundle, self.manifest, other)
        path = verified_file(self.bundle, self.manifest, name)
        check_fused_ops(self.manifest, graph, precision, path)
        return open_session(path, providers=self.providers, threads=self.threads)

    def _encode_with_text_graph(self, prompts: tuple[tuple[str, ...], ...], missing: list[str]) -> np.ndarray:
        tokenizer = self._text_tokenizer(missing)  # refuses clearly without torch
        from zeroseg.text import check_known_words

        check_known_words(tokenizer, [name for names in prompts for name in names])
        templates = list(self.manifest.text["templates"])
        strings = [t.format(name) for names in prompts for name in names for t in templates]
        if self._text_session is None:
            self._text_session = self._open("text_encoder", "fp32")
        tokens = np.asarray(tokenizer(strings).numpy(), dtype=np.int64)
        feats = self._text_session.run(None, {"token_ids": tokens})[0]
        # zeroseg.text.encode_classes: unit prompt embeddings averaged per class, re-normalised
        counts = [len(names) * len(templates) for names in prompts]
        ends = np.cumsum(counts)
        means = np.stack([feats[e - c : e].mean(axis=0) for c, e in zip(counts, ends, strict=True)])
        return (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def _text_tokenizer(self, missing: list[str]):
        if self._tokenizer is None:
            text = self.manifest.text
            try:
                from zeroseg.text import make_tokenizer

                tok = make_tokenizer(
                    str(text["tokenizer"]), int(text["context_length"]), text.get("token_subset")
                )
            except ImportError:
                names = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
                where = "the bundle has no vocab.npz" if self.vocabulary is None else "not in vocab.npz"
                raise ZerosegError(
                    f"classes {names}: {where}, and encoding new class names needs torch and open_clip "
                    "(the tokenizer); install them or re-export with --labels listing these classes"
                ) from None
            self._tokenizer = tok
        return self._tokenizer
