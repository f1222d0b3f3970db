"""Connecting to Ray: a local loopback cluster, `auto`, or a remote one (`ray://head:10001`).

A local cluster is pinned to 127.0.0.1: by default Ray binds the machine's network address (and turns
`_node_ip_address="127.0.0.1"` back into it); `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` makes it use
loopback, and `connect` checks that every node reports 127.0.0.1. Workers inherit
`OMP_WAIT_POLICY=PASSIVE` (spinning OpenMP threads starve the other jobs on few shared cores).
If Ray is already initialised in this process (a test, a notebook) that session is used as it is.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from zeroseg.errors import ZerosegError

LOOPBACK = "127.0.0.1"
#: What `--ray` accepts besides an address.
LOCAL, AUTO = "local", "auto"
#: Set in this process (and so inherited by a local cluster's workers) before Ray starts.
WORKER_ENV: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def import_ray():
    """`ray`, or a one-line error saying how to install it (`WORKER_ENV` is set first: Ray reads
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported)."""
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import ray
    except ImportError:
        raise ZerosegError(
            "Ray is not installed: pip install 'zeroseg[ray]' (or 'ray[data,serve]>=2.60,<3')"
        ) from None
    return ray


def check_address(address: str) -> str:
    """`--ray`'s value, checked: local, auto, ray://HOST:PORT or HOST:PORT."""
    text = address.strip()
    if text in (LOCAL, AUTO):
        return text
    rest = text.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ZerosegError(
            f"--ray must be local, auto, ray://HOST:PORT or HOST:PORT, got {address!r} "
            "(e.g. ray://head:10001 for a remote cluster)"
        )
    return text


def node_addresses() -> list[str]:
    """The addresses of the cluster's live nodes."""
    ray = import_ray()
    return sorted({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive", True)})


def assert_loopback() -> None:
    """Refuse a local cluster that bound anything but 127.0.0.1."""
    addresses = node_addresses()
    if addresses != [LOOPBACK]:
        raise ZerosegError(
            f"the local Ray cluster bound {', '.join(addresses)} instead of {LOOPBACK}; "
            "set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray starts"
        )


def start_local(num_cpus: int | None = None, **kwargs) -> None:
    """Start a local single-node Ray cluster on 127.0.0.1 (no dashboard) and check its address.

    Args:
        num_cpus: CPUs it schedules (default: the CPUs this process may use).
        kwargs: more `ray.init` arguments.
    """
    ray = import_ray()
    if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] != "0":
        raise ZerosegError("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER must be 0 for a loopback-only local cluster")
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # in case Ray was imported before the variable was set
    if num_cpus is None:
        num_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import logging

    kwargs.setdefault("logging_level", logging.WARNING)
    kwargs.setdefault("log_to_driver", False)
    ray.init(address="local", num_cpus=int(num_cpus or 1), include_dashboard=False, **kwargs)
    assert_loopback()


@contextlib.contextmanager
def connected(address: str) -> Iterator[bool]:
    """Ray for the block: reuse this process's session, start a local cluster, or connect.

    Args:
        address: `local` (a new loopback cluster, shut down afterwards), `auto` (the cluster
            `ray start` runs on this machine) or a cluster address (`ray://head:10001`).

    Yields:
        True when the block runs on a cluster it started itself (a local one).

    Raises:
        ZerosegError: Ray is missing, the address is malformed or nothing answers there.
    """
    address = check_address(address)
    ray = import_ray()
    if ray.is_initialized():
        yield False
        return
    started = address == LOCAL
    try:
        if started:
            start_local()
        else:
            import logging

            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except ZerosegError:
        ray.shutdown()
        raise
    except Exception as exc:  # ConnectionError, RuntimeError, TimeoutError: Ray's own types vary
        ray.shutdown()
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ZerosegError(
            f"cannot connect to the Ray cluster at {address}: {first}; check --ray (or use --ray local)"
        ) from None
    try:
        yield started
    finally:
        ray.shutdown()


def cluster_cpus() -> float:
    """CPUs the connected cluster schedules."""
    return float(import_ray().cluster_resources().get("CPU", 1.0))


def actor_cpus(total_cpus: float, actors: int) -> float:
    """CPUs to reserve per actor so that `actors` of them leave room for Ray's own tasks.

    Two actors at 1 CPU each on a 2-CPU node starve the other tasks and hang, so actors share what is
    left after half a CPU, at most one each, never less than 0.05.
    """
    if actors <= 0:
        raise ZerosegError(f"--actors must be positive, got {actors}")
    share = (max(total_cpus, 1.0) - 0.5) / actors
    return round(max(0.05, min(1.0, share)), 2)


def default_actors(total_cpus: float) -> int:
    """One actor per CPU of the cluster (at most 64)."""
    return max(1, min(64, int(total_cpus)))


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken (before Serve tries it and fails less clearly)."""
    if not 0 < port < 65536:
        raise ZerosegError(f"--port must be in 1..65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ZerosegError(
                f"cannot listen on {host}:{port} ({(exc.strerror or str(exc)).lower()}); pass another --port"
            ) from None
