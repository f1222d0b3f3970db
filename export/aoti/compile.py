"""Compiling a `torch.export` program into an AOTInductor package: the Inductor options, what they
resolve to on this host (recorded in the manifest), and the compile with a ticking progress bar."""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from zeroseg.errors import ZerosegError

#: Inductor options of every package, and those --portable adds (names checked on torch 2.14.1).
BASE_OPTIONS: dict = {"freezing": True}
PORTABLE_OPTIONS: dict = {"cpp.march": "x86-64-v3", "cpp.simdlen": 256, "cpp.dynamic_threads": True}
#: Rough compile time on 2 cores (the bundled model: ~75 s static, ~90 s dynamic).
COMPILE_SECONDS = {False: 80, True: 100}


def inductor_options(portable: bool) -> dict:
    """The `inductor_configs` of `aoti_compile_and_package`.

    Args:
        portable: add `PORTABLE_OPTIONS` (any x86-64 with AVX2, run-time thread count).

    Returns:
        Option name -> value (a fresh dict).
    """
    return {**BASE_OPTIONS, **(PORTABLE_OPTIONS if portable else {})}


def describe_inductor(options: dict) -> dict:
    """The options and what they resolve to on this host: the -march flag, vector ISA, threads.

    Args:
        options: the `inductor_configs` passed to the compiler.

    Returns:
        A JSON-able dict for the manifest (`exporter.inductor`).
    """
    import torch._inductor.config as config
    from torch._inductor import cpp_builder, cpu_vec_isa

    with config.patch(options):
        arch = cpp_builder._get_cpu_arch_cflags(cpp_builder.get_cpp_compiler())
        isa = cpu_vec_isa.pick_vec_isa()
        dynamic_threads = bool(config.cpp.dynamic_threads)
    portable = all(options.get(k) == v for k, v in PORTABLE_OPTIONS.items())
    return {
        "options": dict(options),
        "portable": portable,
        "march_flags": ["-" + f for f in arch],
        "vec_isa": str(isa),
        "isa_flags": isa.build_arch_flags() if isa else "",
        "dynamic_threads": dynamic_threads,
        "threads": None if dynamic_threads else torch.get_num_threads(),
        "runs_on": "any x86-64 with AVX2 and FMA (x86-64-v3)" if portable else "CPUs with this host's ISA",
    }


@contextlib.contextmanager
def _ticker(desc: str, seconds: int, enabled: bool) -> Iterator[None]:
    """A tqdm bar that advances once a second against an estimate (compiles report no progress)."""
    bar = tqdm(total=seconds, desc=desc, unit="s", disable=not enabled, file=sys.stderr,
               bar_format="{desc}: {elapsed} (typically ~{total} s on 2 cores) {bar}")  # fmt: skip
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(1.0):
            if bar.n < bar.total - 1:
                bar.update(1)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()


def compile_package(program, path: Path, options: dict, *, dynamic: bool, progress: bool = True) -> float:
    """Compile an ExportedProgram into a `.pt2` at `path`.

    Args:
        program: the `torch.export` program.
        path: the package file to write.
        options: Inductor options (`inductor_options`).
        dynamic: whether the program has dynamic shapes (only for the time estimate).
        progress: show a ticking bar while the compiler runs.

    Returns:
        The seconds the compile took.
    """
    started = time.perf_counter()
    est = COMPILE_SECONDS[dynamic]
    with _ticker(f"compiling {path.name} with AOTInductor", est, progress), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                torch._inductor.aoti_compile_and_package(
                    program, package_path=str(path), inductor_configs=dict(options)
                )
        except Exception as exc:
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ZerosegError(f"AOTInductor could not compile the segmenter: {line[:300]}") from None
    return time.perf_counter() - started


def compiler_version() -> str | None:
    """First line of the C++ compiler's `--version` (Inductor's compiler)."""
    import subprocess

    from torch._inductor import cpp_builder

    try:
        cxx = cpp_builder.get_cpp_compiler()
        done = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30, check=False)
        return done.stdout.splitlines()[0] if done.stdout else cxx
    except (OSError, subprocess.SubprocessError):
        return None
