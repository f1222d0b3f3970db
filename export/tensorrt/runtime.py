"""`TRTSegmenter`: an engine folder from `zeroseg-export trt` on the GPU, `zeroseg.Segmenter`'s call.

It subclasses `SegmenterBase`, so batching by input size, the label space and the argument checks
are the library's own; the stages:

    embed_prompts  the copied ONNX bundle's text side (`OnnxSegmenter`: vocab.npz, else
                   text_encoder.onnx), opened on first use, moved to the GPU;
    preprocess     the bundle's resize (`zeroseg.export.core.resize`), moved to the GPU;
    forward        the engine, with TensorRT's name-based API: `set_input_shape`,
                   `set_tensor_address` per I/O tensor, `execute_async_v3` on torch's stream, in
                   chunks of at most the profile's max batch; inputs outside the profile are refused;
    head           engine.json's `head` (`--head` at export), in PyTorch as `Segmenter` runs it:
                   `name_segments` (the paper's, fused Triton kernels on CUDA) or `name_patches`.

Loading checks engine.json (format, its own checksum, the engine's and graph's sha256) before
TensorRT is imported, then refuses an engine built for another TensorRT version or GPU
(`trt_manifest.check_compatible`). NOT VERIFIED on a GPU (README "TensorRT").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from zeroseg.errors import ZerosegError
from zeroseg.export.core.formats import RUNTIMES, cuda_index
from zeroseg.export.tensorrt.manifest import check_compatible, read_engine_json
from zeroseg.export.tensorrt.profiles import Profile, check_input
from zeroseg.infer.base import SegmenterBase
from zeroseg.infer.factory import head_name
from zeroseg.infer.labels import LabelSpace


class TRTSegmenter(SegmenterBase):
    """Zero-shot segmentation with a TensorRT engine; the same call and results as `zeroseg.Segmenter`."""

    def __init__(
        self,
        engine_dir: str | os.PathLike,
        *,
        device=None,
        precision: str | None = None,
        threads: int | None = None,
        short_side: int | None = None,
        backend=None,
    ) -> None:
        """Open an engine folder after checking engine.json, the TensorRT version and the GPU.

        Args:
            engine_dir: the folder `zeroseg-export trt --out` wrote.
            device: "cuda", "cuda:N" or a CUDA index (default: device 0).
            precision: the engine's own precision (default); another one is refused (rebuild).
            threads: host threads for torch's share of the work (pre/post-processing).
            short_side: network input short side (default: the bundle's); must fit the profile.
            backend: head backend for `zeroseg.kernels.segment_head` (default: its own choice).
        """
        RUNTIMES["tensorrt"].check(device=device, precision=precision, threads=threads, short_side=short_side)
        from zeroseg.export.core.manifest import read_manifest
        from zeroseg.export.tensorrt.build import tensorrt_unavailable

        self.folder = Path(engine_dir)
        self.meta = meta = read_engine_json(self.folder)
        built = meta.get("precision")
        if precision is not None and built is not None and precision != built:
            raise ZerosegError(
                f"{self.folder} is a {built} engine, not {precision}: rebuild it with --precision"
            )
        self.profile = Profile.from_dict(meta["profiles"][0])
        bundle = read_manifest(self.folder / meta["bundle"])
        self.patch = bundle.patch
        self.short_side = bundle.short_side if short_side is None else int(short_side)
        self.max_side = max(self.profile.max[1:])
        inference = bundle.model.get("inference", {})
        self.default_bg_thresh = float(inference.get("bg_thresh", 0.5))
        self.default_bg_prompt = bool(inference.get("bg_prompt", False))
        self.logit_scale = float(bundle.text["logit_scale"])
        self.head_mode = head_name(meta.get("head", "paper"))
        self.backend = backend
        if meta.get("engine") is None:
            check_compatible(meta, tensorrt="", gpu="", compute_capability=(0, 0))  # the --onnx-only refusal
        reason = tensorrt_unavailable()
        if reason is not None:
            raise ZerosegError(f"cannot run {self.folder}: {reason}")
        import tensorrt as trt
        import torch

        from zeroseg.export.tensorrt.build import gpu_identity

        device = cuda_index(device)
        if threads is not None:
            torch.set_num_threads(threads)
        name, cc = gpu_identity(device)
        check_compatible(meta, tensorrt=trt.__version__, gpu=name, compute_capability=cc)
        self.device = torch.device("cuda", device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if meta["tensorrt"].get("version_compatible"):
            self._runtime.engine_host_code_allowed = True  # the lean runtime inside a VC plan
        plan = (self.folder / meta["engine"]["file"]).read_bytes()
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise ZerosegError(
                f"TensorRT could not deserialize {meta['engine']['file']} (see its log); rebuild it"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        if self.inputs != [self.profile.name] or set(self.outputs) != {"segment_embeddings", "assignment"}:
            raise ZerosegError(f"the engine's tensors {names} are not the image encoder's; rebuild it")
        self._text = None

    # ---- stages -------------------------------------------------------------------------------

    def embed_prompts(self, prompts: Sequence[Sequence[str]]):
        """(C, D) unit-norm class embeddings on the GPU, from the copied bundle's text side."""
        import torch

        from zeroseg.export.onnx.runtime import OnnxSegmenter

        if self._text is None:
            self._text = OnnxSegmenter(self.folder / self.meta["bundle"])
        return torch.from_numpy(self._text.embed_prompts(prompts)).to(self.device)

    def preprocess(self, images: Sequence[Image.Image], size: tuple[int, int]):
        """(B, 3, H, W) float32 pixels in [0, 1] on the GPU, resized as the bundle's runtime does."""
        import torch

        from zeroseg.export.core.resize import preprocess_images

        return torch.from_numpy(preprocess_images(list(images), size)).to(self.device)

    def forward(self, pixels):
        """The engine on the pixels, in chunks of at most the profile's max batch."""
        import torch

        from zeroseg.model.student import SegmentationOutput

        check_input(self.profile, (min(pixels.shape[0], self.profile.max[0]), *pixels.shape[1:]))
        stream = torch.cuda.current_stream(self.device)
        segments, maps = [], []
        for start in range(0, pixels.shape[0], self.profile.max[0]):
            chunk = pixels[start : start + self.profile.max[0]].float().contiguous()
            check_input(self.profile, tuple(chunk.shape))
            self.context.set_input_shape(self.profile.name, tuple(chunk.shape))
            self.context.set_tensor_address(self.profile.name, chunk.data_ptr())
            outs = {}
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                outs[name] = torch.empty(shape, dtype=torch.float32, device=self.device)
                self.context.set_tensor_address(name, outs[name].data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise ZerosegError("TensorRT failed to run the engine (see its log)")
            segments.append(outs["segment_embeddings"])
            maps.append(outs["assignment"])
        stream.synchronize()
        return SegmentationOutput(torch.cat(segments), torch.cat(maps))

    def head(self, out, text, sizes: Sequence[tuple[int, int]], *, bg_thresh: float, space: LabelSpace):
        """Name each image's segments (or patches) and paint its labels at its own (H, W)."""
        from zeroseg.infer.segmenter import name_patches, name_segments

        name = name_patches if self.head_mode == "dense" else name_segments
        return name(
            out,
            text,
            sizes,
            logit_scale=self.logit_scale,
            bg_thresh=bg_thresh,
            space=space,
            backend=self.backend,
        )
