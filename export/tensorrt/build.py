"""The TensorRT build, in-process on the TensorRT Python API (no trtexec subprocess).

    network   `builder.create_network()`: strongly typed (the only mode in TensorRT 11; the
              deprecated STRONGLY_TYPED flag is passed when it exists, which NVIDIA calls "required
              on 10.x, harmless on 11.x"), so the precision is the ONNX graph's.
    parser    `trt.OnnxParser.parse_from_file`; on failure every parser error goes into the one-line
              message.
    config    workspace pool limit, one optimisation profile per dynamic input
              (`create_optimization_profile`, `set_shape`, `add_optimization_profile`), the timing
              cache loaded from and saved to `--timing-cache`, `hardware_compatibility_level`,
              `BuilderFlag.VERSION_COMPATIBLE`, and an `IProgressMonitor` driving tqdm bars.
    build     `builder.build_serialized_network`; None is an error, not an empty file.

NOT VERIFIED: TensorRT cannot be installed on the machines this was written on (no NVIDIA index, no
GPU). The API names are the ones of NVIDIA's TensorRT 11 Python docs (README "TensorRT").
"""

from __future__ import annotations

import threading
from pathlib import Path

from zeroseg.errors import ZerosegError
from zeroseg.export.tensorrt.profiles import Profile

INSTALL_HINT = "pip install 'zeroseg[gpu]' on a CUDA machine (needs NVIDIA's package index, pypi.nvidia.com)"
MIN_TENSORRT = (10, 0)


def tensorrt_unavailable() -> str | None:
    """Why an engine cannot be built or run here (one line), or None when TensorRT and a GPU are present."""
    try:
        import tensorrt as trt
    except ImportError:
        return f"TensorRT is not installed: {INSTALL_HINT}"
    version = tuple(int(v) for v in trt.__version__.split(".")[:2])
    if version < MIN_TENSORRT:
        return f"TensorRT {trt.__version__} is too old (need >= 10, written for 11): upgrade ({INSTALL_HINT})"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible: TensorRT engines are built and run on the GPU they target"
    except ImportError:
        return "zeroseg's TensorRT path needs torch (for the CUDA device and buffers)"
    return None


def gpu_identity(device: int = 0) -> tuple[str, tuple[int, int]]:
    """Name and compute capability of CUDA device `device`."""
    import torch

    return torch.cuda.get_device_name(device), tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


def trtexec_command(
    onnx_file: str,
    engine_file: str,
    profile: Profile,
    *,
    workspace_mb: int,
    timing_cache: str | None,
    hardware_compat: str,
    version_compatible: bool,
) -> str:
    """The trtexec command line equivalent to this build (TensorRT 11: no --fp16/--int8, the graph
    carries the precision).

    Args:
        onnx_file: the TensorRT-ready graph.
        engine_file: where trtexec should save the engine.
        profile: the optimisation profile.
        workspace_mb: workspace pool limit in MiB.
        timing_cache: timing-cache file, or None.
        hardware_compat: "none" or "ampere+".
        version_compatible: build a version-compatible engine.

    Returns:
        One shell line.
    """
    parts = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}", *profile.trtexec_shapes(),
             f"--memPoolSize=workspace:{workspace_mb}M"]  # fmt: skip
    if timing_cache:
        parts.append(f"--timingCacheFile={timing_cache}")
    if hardware_compat == "ampere+":
        parts.append("--hardwareCompatibilityLevel=ampere+")
    if version_compatible:
        parts.append("--versionCompatible")
    return " ".join(parts)


def _progress_monitor(trt, enabled: bool):
    """An `IProgressMonitor` showing one tqdm bar per build phase (thread-safe, as TensorRT requires)."""
    import sys

    from tqdm import tqdm

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._bars: dict[str, tqdm] = {}
            self._lock = threading.Lock()
            self.cancelled = False

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            with self._lock:
                self._bars[phase_name] = tqdm(
                    total=num_steps, desc=phase_name, position=len(self._bars), leave=False,
                    disable=not enabled, file=sys.stderr,
                )  # fmt: skip

        def step_complete(self, phase_name, step) -> bool:
            with self._lock:
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
            return not self.cancelled  # False cancels the build

        def phase_finish(self, phase_name) -> None:
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return Monitor()


def build_engine(
    onnx_path: Path,
    profiles: list[Profile],
    *,
    workspace_mb: int,
    timing_cache: Path | None,
    hardware_compat: str,
    version_compatible: bool,
    progress: bool = True,
    log=print,
) -> bytes:
    """Parse `onnx_path` and build a serialized engine (requires TensorRT and a GPU).

    Args:
        onnx_path: the TensorRT-ready graph (`zeroseg.export.tensorrt.precision`).
        profiles: one profile per dynamic input, by input name.
        workspace_mb: workspace pool limit in MiB.
        timing_cache: file to load the timing cache from (if it exists) and save it to afterwards.
        hardware_compat: "none" or "ampere+".
        version_compatible: set BuilderFlag.VERSION_COMPATIBLE.
        progress: show the build phases as progress bars.
        log: receives progress lines.

    Returns:
        The serialized engine (plan file bytes).
    """
    import tensorrt as trt

    from zeroseg.utils.atomic import atomic_write_bytes

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strong = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strong is None else 1 << int(strong))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)).strip() for i in range(parser.num_errors)) or "no details"
        raise ZerosegError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {errors[:600]}")
    by_name = {p.name: p for p in profiles}
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if all(d >= 0 for d in tensor.shape):
            continue
        p = by_name.get(tensor.name)
        if p is None:
            raise ZerosegError(f"graph input {tensor.name} is dynamic but has no profile; re-export")
        profile.set_shape(tensor.name, p.dims("min"), p.dims("opt"), p.dims("max"))
    config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    if hardware_compat == "ampere+":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    monitor = _progress_monitor(trt, progress)
    config.progress_monitor = monitor  # must outlive the build: `monitor` is alive until we return
    log(f"building the TensorRT {trt.__version__} engine (this takes minutes)")
    try:
        serialized = builder.build_serialized_network(network, config)
    except KeyboardInterrupt:
        monitor.cancelled = True
        raise
    if serialized is None:
        raise ZerosegError("TensorRT's build returned no engine (see its log above); nothing was written")
    if timing_cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)
