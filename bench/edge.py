"""`zeroseg-bench edge`: the ExecuTorch C++ runner beside the Python runtime on the same image, and what
deploying it takes on disk against the AOTInductor runner's libtorch.

One ExecuTorch bundle (fp32 + int8; exported into the bench cache when a checkpoint is given) and one
generated ShapeWorld scene written as a PNG. For each precision and repeat, interleaved: `zeroseg_et
BUNDLE scene.png --repeat N` (its own timer around read-free `segment()`: resize + program + label
counts, after one warm-up) and `ExecuTorchSegmenter([image], classes)` N times after one warm-up (the
same work plus the result objects), both at `threads` threads. The label maps of the two are compared.
Sizes: `zeroseg.export.executorch.size.deployed_size` of `zeroseg_et` and of `zeroseg_aoti` (the
libraries each loads that are not the system's, the runner, the bundle's fp32 program).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zeroseg.bench.common import SCHEMA_VERSION, check_positive, scene_images
from zeroseg.bench.env import collect_env, mark_end
from zeroseg.errors import ZerosegError

CLASSES = "red,green,blue,yellow,magenta,cyan"
_P50 = re.compile(r"p50 ([0-9.]+) ms")


@dataclass(frozen=True)
class EdgeSettings:
    """One `zeroseg-bench edge` run."""

    source: Path | None = None  # a checkpoint or an ExecuTorch bundle (None: the bundled model)
    image_size: tuple[int, int] = (480, 640)
    iters: int = 20
    repeat: int = 3
    threads: int = 2
    classes: str = CLASSES


def _bundle(s: EdgeSettings, labels, *, log) -> Path:
    """The ExecuTorch bundle: the given folder, or the checkpoint's exported into the bench cache."""
    from zeroseg.bench.compare.engines import artefacts
    from zeroseg.bundled import bundled_checkpoint, resolve_model_path
    from zeroseg.export.core.formats import detect_format

    path = bundled_checkpoint() if s.source is None else resolve_model_path(s.source)
    if path.is_dir():
        if detect_format(path).name != "executorch":
            raise ZerosegError(f"{path} is not an ExecuTorch bundle: pass one or a checkpoint")
        return path
    return artefacts(path, {}, labels=labels, short_side=None, int8="static", threads=s.threads, log=log)(
        "executorch"
    )


def _bundle_classes(bundle: Path) -> list[str] | None:
    """The classes of the bundle's label space (synonyms joined by "|"; a background prompt first when
    it has one, as the C++ runner labels), None without a vocabulary."""
    from zeroseg.export.core.formats import BY_NAME
    from zeroseg.export.core.manifest import read_manifest

    vocab = read_manifest(bundle, fmt=BY_NAME["executorch"].key).vocab
    return ["|".join(p) for p in vocab["label_space"]["prompts"]] if vocab else None


def _time_cpp(exe: Path, bundle: Path, image: Path, out: Path, precision: str, s: EdgeSettings) -> float:
    """The runner's p50 ms over `iters` runs (after its warm-up)."""
    cmd = [str(exe), str(bundle), str(image), "--out", str(out), "--threads", str(s.threads),
           "--repeat", str(s.iters), "--precision", precision]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    found = _P50.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise ZerosegError(f"zeroseg_et failed: {(done.stderr or done.stdout).strip()[:300]}")
    return float(found.group(1))


def _time_python(seg, image, classes: list[str], iters: int) -> float:
    """p50 ms of `seg([image], classes)` over `iters` calls after one warm-up."""
    seg([image], classes)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        seg([image], classes)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _aoti_size(exe: Path) -> dict[str, Any]:
    """The AOTInductor runner and the non-system libraries it loads (libtorch's), without a package."""
    from zeroseg.export.executorch.size import SYSTEM_DIRS, linked_libraries

    libs = {n: p for n, p in linked_libraries(exe).items() if not str(p).startswith(SYSTEM_DIRS)}
    sizes = {n: p.stat().st_size for n, p in sorted(libs.items())}
    size = {"runner_bytes": exe.stat().st_size, "libraries": sizes, "bundle_bytes": 0}
    size["total_bytes"] = size["runner_bytes"] + sum(size["libraries"].values())
    return size


def run_edge(s: EdgeSettings, *, log=print) -> dict[str, Any]:
    """Time and size the edge runner (see the module docstring); the result dict of `zeroseg-bench edge`."""
    from PIL import Image

    import zeroseg
    from zeroseg.export.aoti.cpp_build import build_runner
    from zeroseg.export.executorch.size import deployed_size

    for value, flag in ((s.iters, "--iters"), (s.repeat, "--repeat"), (s.threads, "--threads")):
        check_positive(value, flag)
    classes = [c.strip() for c in s.classes.split(",") if c.strip()]
    env = collect_env()
    bundle = _bundle(s, [[c] for c in classes], log=log)
    classes = _bundle_classes(bundle) or classes  # the C++ runner labels with the bundle's vocabulary
    et_exe = build_runner(runtime="executorch", log=log)
    aoti_exe = build_runner(runtime="aoti", log=log)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="zeroseg-edge-") as work:
        image_path = Path(work) / "scene.png"
        scene_images(1, s.image_size, seed=0)[0].save(image_path)
        image = Image.open(image_path).convert("RGB")
        for precision in ("fp32", "int8"):
            seg = zeroseg.load(bundle, precision=precision, threads=s.threads)
            cpp, py = [], []
            for r in range(s.repeat):
                cpp.append(_time_cpp(et_exe, bundle, image_path, Path(work) / precision, precision, s))
                py.append(_time_python(seg, image, classes, s.iters))
                log(f"  {precision} repeat {r + 1}: C++ {cpp[-1]:.1f} ms, Python {py[-1]:.1f} ms")
            cpp_labels = np.array(Image.open(Path(work) / precision / "scene_labels.png"))
            agreement = float((cpp_labels == seg([image], classes)[0].labels).mean())
            rows[precision] = {
                "cpp_p50_ms": cpp, "python_p50_ms": py, "cpp_median_ms": statistics.median(cpp),
                "python_median_ms": statistics.median(py), "label_agreement": agreement,
            }  # fmt: skip
    result = {
        "schema": f"zeroseg-bench/edge/v{SCHEMA_VERSION}", "command": "edge", "bundle": str(bundle),
        "image_hw": list(s.image_size), "threads": s.threads, "iters": s.iters, "repeat": s.repeat,
        "rows": rows,
        "size": {"zeroseg_et": deployed_size(et_exe, bundle), "zeroseg_aoti": _aoti_size(aoti_exe)},
        "env": env,
    }  # fmt: skip
    mark_end(result["env"])
    return result


def report_lines(result: dict[str, Any]) -> list[str]:
    """The table `zeroseg-bench edge` prints."""
    (h, w), n = result["image_hw"], result["repeat"]
    lines = [
        f"ExecuTorch C++ runner vs Python runtime, {w}x{h} image, {result['threads']} threads, "
        f"median of {n} repeats of p50 over {result['iters']}:"
    ]
    for precision, row in result["rows"].items():
        lines.append(
            f"  {precision}: C++ {row['cpp_median_ms']:.1f} ms, Python {row['python_median_ms']:.1f} ms, "
            f"labels equal on {row['label_agreement']:.4%} of pixels"
        )
    for name, size in result["size"].items():
        libs = ", ".join(f"{lib} {b / 1e6:.1f} MB" for lib, b in size["libraries"].items())
        lines.append(
            f"  {name}: {size['total_bytes'] / 1e6:.1f} MB deployed (runner {size['runner_bytes'] / 1e6:.2f} "
            f"MB, program {size['bundle_bytes'] / 1e6:.1f} MB, libraries: {libs})"
        )
    return lines
