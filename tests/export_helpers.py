"""Helpers of the export tests: run the exporter in-process, its CLI, and Python without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import helpers
import numpy as np
from PIL import Image

from zeroseg.export.core.manifest import MANIFEST_NAME, canonical_sha256
from zeroseg.export.onnx.bundle import export_onnx
from zeroseg.export.onnx.export import ExportSettings

#: The vocabulary of the shared ShapeWorld bundle: the six colours (background is implicit).
COLOURS = [["red"], ["green"], ["blue"], ["yellow"], ["magenta"], ["cyan"]]

ROOT = Path(__file__).resolve().parents[1]


def export(checkpoint: Path, out: Path, **options) -> tuple[Path, list[str]]:
    """`export_onnx` with progress bars off; returns the bundle and the lines it logged."""
    lines: list[str] = []
    export_onnx(ExportSettings(checkpoint=checkpoint, out=out, progress=False, **options), log=lines.append)
    return out, lines


def scenes(n: int, seed: int = 5, size: int = 128) -> list[Image.Image]:
    """ShapeWorld scenes as PIL images."""
    from zeroseg.data.scenes import generate_scene

    return [Image.fromarray(generate_scene(seed, size, index=i).image) for i in range(n)]


def smooth_image(height: int, width: int, seed: int) -> Image.Image:
    """A smooth random picture (random blocks, bilinearly enlarged)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, height // 7), max(1, width // 7), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BILINEAR)


def write_voc(root: Path, n: int, seed: int = 77) -> Path:
    """A small ShapeWorld data set in VOC layout (all val)."""
    from zeroseg.shapeworld.write import write_scenes

    write_scenes(root, n=n, seed=seed, size=128, val_fraction=1.0)
    return root


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_manifest(bundle: Path, change, *, resign: bool) -> None:
    """Apply `change(data)` to a bundle's manifest; resign=True recomputes its own checksum."""
    path = bundle / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    if resign:
        data["manifest_sha256"] = canonical_sha256(data)
    path.write_text(json.dumps(data, indent=2))


#: A meta-path finder that makes torch, open_clip, torchvision and timm unimportable.
NO_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class _NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "open_clip", "torchvision", "timm"):
                raise ImportError(f"{name} is not installed (blocked by the test)")
            return None

    sys.meta_path.insert(0, _NoTorch())
    """
)


def run_without_torch(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python in which torch & co. cannot be imported."""
    script = NO_TORCH + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def leftovers(parent: Path) -> list[str]:
    """Temporary bundle folders left next to an output (there must be none)."""
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def parse_miou(out: str) -> float:
    """The overall mIoU of `zeroseg eval`'s summary line ("mIoU 0.7246, foreground mIoU ...")."""
    import re

    match = re.search(r"^mIoU ([0-9.]+)", out, flags=re.MULTILINE)
    assert match, out
    return float(match.group(1))


def shared_bundle(tmp_path_factory, name: str, build) -> Path:
    """A folder (a bundle, a data set) built once per test run, shared by the xdist workers (file lock).

    Under xdist every worker has its own base temp inside the run's folder, so the lock and the
    bundle sit one level up; alone, in the run's own base temp. `build(path)` writes the bundle
    (in place: some builders write their log beside it), after what a failed build left is removed.
    """
    import os

    from zeroseg.utils.cache import build_once

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base

    def fresh(target: Path) -> None:
        shutil.rmtree(target, ignore_errors=True)
        build(target)

    return build_once(root / f"shared-{name}", fresh, in_place=True)


#: The classes of the tiny checkpoint's shared bundle (`tiny_bundle`).
TINY_CLASSES = [["cat"], ["dog", "puppy"], ["traffic light"]]


def tiny_bundle(checkpoint: Path, tmp_path_factory) -> tuple[Path, list[str]]:
    """The tiny checkpoint's default fp32 bundle with `TINY_CLASSES`, exported once per test run and
    shared by the ONNX, fusion and Triton tests; and the export's log lines."""

    def build(out: Path) -> None:
        with helpers.torch_threads(1):
            _, lines = export(checkpoint, out, labels=TINY_CLASSES, threads=1)
        (out.parent / f"{out.name}.log").write_text("\n".join(lines))

    path = shared_bundle(tmp_path_factory, "tiny", build)
    return path, (path.parent / f"{path.name}.log").read_text().splitlines()


def shared_calib(tmp_path_factory) -> Path:
    """8 ShapeWorld scenes in VOC layout, once per test run."""
    return shared_bundle(tmp_path_factory, "calib", lambda root: write_voc(root, 8))


def shapeworld_bundle(tmp_path_factory) -> tuple[Path, list[str]]:
    """The bundled checkpoint's ONNX bundle at its short side (512) and head (dense), with a
    vocabulary of the six colours and static int8, once per test run (shared by the export and bench
    tests); and the export's log lines."""
    from zeroseg.bundled import bundled_checkpoint

    calib = shared_calib(tmp_path_factory)

    def build(out: Path) -> None:
        with helpers.torch_threads(1):
            _, lines = export(
                bundled_checkpoint(), out, labels=COLOURS, int8="static", calib=calib, threads=1
            )
        (out.parent / f"{out.name}.log").write_text("\n".join(lines))

    path = shared_bundle(tmp_path_factory, "shapeworld", build)
    return path, (path.parent / f"{path.name}.log").read_text().splitlines()
