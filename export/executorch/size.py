"""What deploying the ExecuTorch C++ runner takes: the runner, the libraries it loads, the program.

`deployed_size` reads the runner's dynamic dependencies with `ldd` and counts the ones a device has to
be given (those not from the system's own library folders: ExecuTorch's runtime, kernels, XNNPACK
delegate and threadpool from the wheel), the runner itself and the bundle's fp32 program and
vocabulary. The system libraries it also links (libpng, libjpeg, libcrypto, libstdc++) are listed
apart: every Linux image has them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from zeroseg.errors import ZerosegError

SYSTEM_DIRS = ("/lib", "/usr/lib", "/lib64", "/usr/lib64")


def linked_libraries(executable: str | os.PathLike) -> dict[str, Path]:
    """name -> resolved path of every shared library `ldd` lists for `executable`."""
    done = subprocess.run(["ldd", str(executable)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ZerosegError(f"ldd failed on {executable}: {done.stderr.strip()[:200]}")
    libs = {}
    for line in done.stdout.splitlines():
        name, arrow, rest = line.strip().partition(" => ")
        path = rest.split(" (")[0].strip() if arrow else ""
        if path and path != "not found":
            libs[name] = Path(path).resolve()
    return libs


def deployed_size(executable: str | os.PathLike, bundle: str | os.PathLike) -> dict:
    """Bytes of the runner, of the non-system libraries it loads and of the bundle's program + vocabulary."""
    libs = linked_libraries(executable)
    shipped = {n: p for n, p in libs.items() if not str(p).startswith(SYSTEM_DIRS)}
    system = sorted(n for n in libs if n not in shipped)
    files = [Path(bundle) / name for name in ("segmenter.pte", "vocab.bin", "manifest.json")]
    sizes = {
        "runner_bytes": Path(executable).stat().st_size,
        "libraries": {n: p.stat().st_size for n, p in sorted(shipped.items())},
        "bundle_bytes": sum(f.stat().st_size for f in files if f.is_file()),
        "system_libraries": system,
    }
    sizes["total_bytes"] = sizes["runner_bytes"] + sum(sizes["libraries"].values()) + sizes["bundle_bytes"]
    return sizes
