"""Keep the calling thread's alternate signal stack across OpenVINO calls.

OpenVINO's CPU plugin (2026.4, `libopenvino_intel_cpu_plugin.so`) installs an alternate signal stack
(`sigaltstack`) on the thread that compiles or runs a model and leaves it pointing at memory of its
own, which is later freed or reused. CPython installs its signal handlers with `SA_ONSTACK`, and
`faulthandler` sets its own alternate stack, so the next handled signal on that thread (a child's
SIGCHLD, an alarm) was pushed onto memory that was no longer a stack: the kernel killed the process
with SIGSEGV (`si_code` SI_KERNEL) inside a later `waitpid` or `sleep`, far from OpenVINO. Seen as
random worker crashes in the test suite; found by reading the thread's `sigaltstack` before and
after `compile_model` / `infer`. `kept_signal_stack()` saves the thread's setting before the call and
puts it back after, so OpenVINO runs as before and the process keeps a valid alternate stack.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _libc():
    """libc's `sigaltstack`, or None where there is none to call (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).sigaltstack
    except (OSError, AttributeError):
        return None


_SIGALTSTACK = _libc()
#: ss_flags value of a thread with no alternate stack (SS_DISABLE).
SS_DISABLE = 2


def current_signal_stack() -> tuple[int | None, int, int] | None:
    """(address, size, flags) of the calling thread's alternate signal stack; None if unknown."""
    if _SIGALTSTACK is None:
        return None
    got = _Stack()
    if _SIGALTSTACK(None, ctypes.byref(got)) != 0:
        return None
    return got.ss_sp, int(got.ss_size), int(got.ss_flags)


@contextlib.contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Run the block, then restore the calling thread's alternate signal stack as it was before."""
    before = _Stack()
    saved = _SIGALTSTACK is not None and _SIGALTSTACK(None, ctypes.byref(before)) == 0
    try:
        yield
    finally:
        if saved:
            restore = _Stack(before.ss_sp, before.ss_flags & SS_DISABLE, before.ss_size)
            _SIGALTSTACK(ctypes.byref(restore), None)
