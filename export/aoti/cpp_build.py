"""Build a C++ runner: `export/aoti/cpp/` against the libtorch inside the installed torch wheel, or
`export/executorch/cpp/` (`runtime="executorch"`) against the ExecuTorch runtime inside the executorch
wheel (no libtorch; it shares the AOTInductor runner's torch-free sources).

`build_runner()` configures and builds with CMake (Ninja when present) into a folder keyed by a
hash of the C++ sources, the torch version and ABI and the compiler, under
`$XDG_CACHE_HOME/zeroseg/cpp-build/` (default `~/.cache/zeroseg/cpp-build/`), so a second call (or a
second test session) costs nothing; `--out DIR` builds into DIR instead. The system libraries it
needs (libpng, libjpeg-turbo, nlohmann-json, OpenSSL's libcrypto, and cmake / g++ themselves) are
installed with apt-get when missing and this process is root; otherwise the error names the
packages. Concurrent builders of the same folder wait for each other, and a build counts as complete
once its stamp is written (`zeroseg.utils.cache.build_once`: `.<folder>.lock` and `.<folder>.built`
beside the folder).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from zeroseg.errors import ZerosegError
from zeroseg.utils.cache import build_once, cache_dir, source_digest

SOURCE_DIR = Path(__file__).resolve().parent / "cpp"
EXECUTABLE = "zeroseg_aoti"
ET_SOURCE_DIR = Path(__file__).resolve().parents[1] / "executorch" / "cpp"
ET_EXECUTABLE = "zeroseg_et"
RUNTIMES = ("aoti", "executorch")
#: header or tool -> Debian package providing it
SYSTEM_HEADERS = {
    "png.h": "libpng-dev",
    "jpeglib.h": "libjpeg62-turbo-dev",
    "nlohmann/json.hpp": "nlohmann-json3-dev",
    "openssl/evp.h": "libssl-dev",
}
TOOLS = {"cmake": "cmake", "g++": "g++"}
_INCLUDE_DIRS = (Path("/usr/include"), Path("/usr/local/include"), Path("/usr/include/x86_64-linux-gnu"))


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/zeroseg/cpp-build` (default `~/.cache/zeroseg/cpp-build`)."""
    return cache_dir("cpp-build")


def torch_paths() -> tuple[Path, int, str]:
    """The torch package folder, its C++11 ABI flag and its version."""
    import torch

    return Path(torch.__file__).resolve().parent, int(torch._C._GLIBCXX_USE_CXX11_ABI), torch.__version__


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if "error" in ln.lower()]
        first = (lines or (done.stderr + done.stdout).strip().splitlines() or ["no output"])[0]
        raise ZerosegError(f"{what} failed (exit {done.returncode}): {first.strip()[:300]}")
    return done.stdout


def executorch_root() -> Path:
    """The executorch package folder (its C++ runtime, headers and CMake config); one line when absent."""
    from zeroseg.export.executorch.lower import require_executorch

    require_executorch()
    import executorch

    return Path(list(executorch.__path__)[0]).resolve()


def build_key(runtime: str = "aoti") -> str:
    """Hash of the C++ sources, the runtime's version (torch's and its ABI, or executorch's), the compiler."""
    if runtime == "executorch":
        from zeroseg.export.executorch.lower import executorch_version

        root = SOURCE_DIR.parent.parent
        sources = sorted(p for d in (SOURCE_DIR, ET_SOURCE_DIR) for p in d.rglob("*") if p.is_file())
        what = f"executorch {executorch_version()}|{executorch_root()}|{_compiler_line()}"
        return "et-" + source_digest(what, *sources, root=root)
    folder, abi, version = torch_paths()
    sources = sorted(p for p in SOURCE_DIR.rglob("*") if p.is_file())
    return source_digest(f"{version}|{abi}|{folder}|{_compiler_line()}", *sources, root=SOURCE_DIR)


def _compiler_line() -> str:
    cxx = shutil.which(os.environ.get("CXX", "g++")) or ""
    if not cxx:
        return ""
    return subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[
        0
    ]


def missing_system_packages() -> list[str]:
    """Debian packages whose headers or tools are absent."""
    missing = [
        pkg for hdr, pkg in SYSTEM_HEADERS.items() if not any((d / hdr).is_file() for d in _INCLUDE_DIRS)
    ]
    missing += [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    return missing


def ensure_system_packages(log=print) -> None:
    """Install the missing Debian packages with apt-get (as root, non-interactive), or say which.

    Raises:
        ZerosegError: packages are missing and cannot be installed here.
    """
    missing = missing_system_packages()
    if not missing:
        return
    hint = f"install them: sudo apt-get install -y {' '.join(missing)}"
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise ZerosegError(f"the C++ runner needs {', '.join(missing)} ({hint})")
    log(f"installing {' '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if subprocess.run(install, capture_output=True, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
        if subprocess.run(install, capture_output=True, env=env, check=False).returncode != 0:
            raise ZerosegError(f"apt-get could not install {' '.join(missing)} ({hint})")
    still = missing_system_packages()
    if still:
        raise ZerosegError(f"the C++ runner still lacks {', '.join(still)} after apt-get ({hint})")


def cmake_command(build_dir: Path, runtime: str = "aoti") -> list[str]:
    """The `cmake` configure line (also what the README shows)."""
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    if runtime == "executorch":
        return ["cmake", "-S", str(ET_SOURCE_DIR), "-B", str(build_dir), *generator,
                "-DCMAKE_BUILD_TYPE=Release", f"-DEXECUTORCH_ROOT={executorch_root()}"]  # fmt: skip
    folder, abi, _ = torch_paths()
    return ["cmake", "-S", str(SOURCE_DIR), "-B", str(build_dir), *generator, "-DCMAKE_BUILD_TYPE=Release",
            f"-DTORCH_DIR={folder}", f"-DTORCH_CXX11_ABI={abi}"]  # fmt: skip


def build_runner(out: str | os.PathLike | None = None, *, runtime: str = "aoti", log=print) -> Path:
    """Build (or reuse) a C++ runner and return the path of its executable.

    Args:
        out: build folder (default: the cache folder of `build_key(runtime)`); reused when it holds
            a build of the same key.
        runtime: "aoti" (zeroseg_aoti, libtorch) or "executorch" (zeroseg_et, the ExecuTorch runtime).
        log: receives progress lines.

    Returns:
        Path of `zeroseg_aoti` or `zeroseg_et`.

    Raises:
        ZerosegError: an unusable build folder (`check_out_folder`: a file, a read-only folder, a
            path under a file, the sources), missing system packages that cannot be installed, or a
            failed build.
    """
    from zeroseg.export.core.folders import check_out_folder

    if runtime not in RUNTIMES:
        raise ZerosegError(f"--runtime is one of {', '.join(RUNTIMES)}, not {runtime!r}")
    executable = ET_EXECUTABLE if runtime == "executorch" else EXECUTABLE
    key = build_key(runtime)
    build_dir = Path(out).absolute() if out is not None else cache_root() / key
    # a file, a read-only folder, a path under a file or the sources themselves: one line, no build
    flag = "--out" if out is not None else "the build cache (XDG_CACHE_HOME)"
    check_out_folder(build_dir, False, inputs={"the C++ sources": SOURCE_DIR}, reuse=True, flag=flag)
    if not (build_dir / executable).is_file():  # stamped but emptied by hand: build it again
        build_dir.with_name(f".{build_dir.name}.built").unlink(missing_ok=True)

    def build(folder: Path) -> None:
        """Configure and build in `folder`; a failed build of a cache folder is removed, never half kept."""
        ensure_system_packages(log=log)
        try:
            _cmake_build(folder, runtime, executable, log=log)
        except BaseException:
            if out is None:
                shutil.rmtree(folder, ignore_errors=True)
            raise

    return build_once(build_dir, build, key=key, in_place=True) / executable


def _cmake_build(folder: Path, runtime: str, executable: str, *, log=print) -> None:
    """Configure and build the runner in `folder` with CMake, checking that the executable came out.

    Raises:
        ZerosegError: a failed configure or build (its first error line), or no executable.
    """
    log(f"building the {runtime} C++ runner in {folder} (CMake, ~1-2 min on 2 cores)")
    _run(cmake_command(folder, runtime), "cmake configure")
    _run(["cmake", "--build", str(folder), "-j", str(min(4, os.cpu_count() or 1))], "the C++ build")
    if not (folder / executable).is_file():
        raise ZerosegError(f"the C++ build did not produce {folder / executable}")


def main() -> None:  # pragma: no cover - `python -m zeroseg.export.aoti.cpp_build`
    """Build and print the executable's path."""
    print(build_runner(sys.argv[1] if len(sys.argv) > 1 else None, log=lambda m: print(m, file=sys.stderr)))


if __name__ == "__main__":  # pragma: no cover
    main()
