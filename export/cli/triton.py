"""`zeroseg-export triton`: a thin layer over `zeroseg.export.triton_server.repo.export_triton`.

zeroseg-export triton BUNDLE --out REPO [--max-batch N] [--instances N] [--kind cpu|gpu] [--force]
"""

from __future__ import annotations

from pathlib import Path

import typer

from zeroseg.export.cli import options


def triton_command(
    bundle: Path = typer.Argument(..., help="A folder zeroseg-export onnx (or trt) wrote."),
    out: Path = options.out_option("Model repository"),
    max_batch: int | None = typer.Option(
        None, "--max-batch", min=0, help="max_batch_size of batchable models (default 8; 0 = no batching)."
    ),
    instances: int = typer.Option(1, "--instances", help="Model instances per device (instance_group)."),
    kind: str | None = typer.Option(
        None, "--kind", help="cpu | gpu (default: cpu, gpu for a TensorRT folder)."
    ),
    force: bool = options.force_option(),
) -> None:
    """Write a Triton Inference Server model repository (config.pbtxt + model files) for a bundle."""
    from zeroseg.export.triton_server.repo import TritonSettings, export_triton

    settings = TritonSettings(
        source=bundle, out=out, max_batch=max_batch, instances=instances, kind=kind, force=force
    )
    export_triton(settings, log=typer.echo)


def register(app: typer.Typer) -> None:
    """Add the `triton` command to the `zeroseg-export` app."""
    app.command("triton")(triton_command)
