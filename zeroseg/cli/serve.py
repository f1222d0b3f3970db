"""`zeroseg serve`: POST /segment over HTTP on Ray Serve, batched, bound to 127.0.0.1 by default."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from zeroseg.cli import options as opts
from zeroseg.errors import ZerosegError


def serve_command(
    checkpoint: str | None = opts.CHECKPOINT_OPTION,
    engine: Path | None = opts.ENGINE,
    precision: str | None = opts.PRECISION,
    runtime: str | None = opts.RUNTIME,
    short_side: int | None = opts.SHORT_SIDE,
    device: str | None = opts.DEVICE,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address the HTTP proxy binds (loopback by default)."
    ),
    port: int = typer.Option(8000, "--port", help="HTTP port."),
    replicas: int = typer.Option(1, "--replicas", help="Model replicas (each gets a share of the CPUs)."),
    max_batch: int = typer.Option(8, "--max-batch", help="Requests segmented together at most."),
    batch_wait_ms: float = typer.Option(10.0, "--batch-wait-ms", help="How long a batch waits to fill."),
    max_body_mb: float = typer.Option(32.0, "--max-body-mb", help="Largest request body (MiB); more: 413."),
    max_pixels: int = typer.Option(16_777_216, "--max-pixels", help="Largest image (pixels); more: 413."),
    ray: str = typer.Option(
        "local", "--ray", help="'local' (a loopback cluster here), 'auto' or an address (ray://head:10001)."
    ),
) -> None:
    """Serve the page at GET /, POST /segment, GET /healthz and GET /metadata until Ctrl-C."""
    from zeroseg.serve.cluster import check_address, check_port, connected
    from zeroseg.serve.model import ModelSpec
    from zeroseg.serve.web.protocol import Limits
    from zeroseg.utils.device import resolve_device

    for value, option in ((replicas, "--replicas"), (max_batch, "--max-batch"), (max_pixels, "--max-pixels")):
        if value <= 0:
            raise ZerosegError(f"{option} must be positive, got {value}")
    if batch_wait_ms < 0:
        raise ZerosegError(f"--batch-wait-ms must be zero or positive, got {batch_wait_ms}")
    if max_body_mb <= 0:
        raise ZerosegError(f"--max-body-mb must be positive, got {max_body_mb}")
    if not 0 < port < 65536:
        raise ZerosegError(f"--port must be in 1..65535, got {port}")
    address = check_address(ray)
    if device not in (None, "auto"):
        resolve_device(device)
    spec = ModelSpec.from_options(
        checkpoint, engine, precision=precision, short_side=short_side, device=device, runtime=runtime
    )
    limits = Limits(max_body_bytes=int(max_body_mb * 2**20), max_pixels=max_pixels)
    check_port(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(
            f"warning: --host {host} exposes the server beyond this machine; it has no authentication",
            err=True,
        )
    spec.build()  # a broken checkpoint or bundle is one line here, before Ray starts
    with connected(address):
        from zeroseg.serve.web.app import start_server, stop_server

        url = start_server(
            spec, host=host, port=port, replicas=replicas, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
            limits=limits,
        )  # fmt: skip
        typer.echo(
            f"serving {spec.describe()['backend']} on {url} (POST /segment, GET /healthz, GET /metadata)"
        )
        typer.echo(f"the page: open {url}/ in a browser; Ctrl-C stops the server")
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            typer.echo("stopping")
        finally:
            stop_server()


def register(app: typer.Typer) -> None:
    """Add `serve` to the `zeroseg` CLI."""
    app.command("serve")(serve_command)
