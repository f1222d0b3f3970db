"""`zeroseg cache-teacher`: encode every training image's grid views with the frozen CLIP teacher, once.

Single process:  zeroseg cache-teacher --data D --teacher ViT-L-14:openai --out C
Sharded:         torchrun --nproc_per_node 8 $(which zeroseg) cache-teacher --data D --teacher T --out C
Re-running the same command resumes an interrupted cache.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import typer

from zeroseg.errors import ZerosegError
from zeroseg.utils.console import Interrupted, parse_int_list


def register(app: typer.Typer) -> None:
    @app.command("cache-teacher")
    def cache_teacher(
        data: str = typer.Option(
            ..., "--data", help="Folder of images, folder of .tar shards, or a .tar glob."
        ),
        teacher: str = typer.Option(
            ..., "--teacher", help="MODEL:TAG, MODEL:/path/to/weights, or a teacher file."
        ),
        out: Path = typer.Option(
            ..., "--out", help="Cache folder (created; resumed if it holds this cache)."
        ),
        grids: str = typer.Option("1,2,3,4", "--grids", help="Grid sizes; views = sum of g*g (paper: 30)."),
        image_size: int = typer.Option(224, "--image-size", help="Centre-crop side of the training images."),
        batch_size: int = typer.Option(64, "--batch-size", help="Images per batch (x views per forward)."),
        dtype: str = typer.Option("float16", "--dtype", help="Storage dtype: float16 or float32."),
        device: str = typer.Option(
            "auto", "--device", help="auto, cpu or cuda (cuda:LOCAL_RANK under torchrun)."
        ),
        workers: int | None = typer.Option(
            None,
            "--workers",
            min=0,
            help="DataLoader worker processes per rank (default: min(4, CPU cores - 1)).",
        ),
        max_views: int = typer.Option(
            0, "--max-views", min=0, help="Max views per teacher forward (0: whole batch)."
        ),
        amp: bool = typer.Option(True, "--amp/--no-amp", help="float16 autocast for the teacher on CUDA."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing cache at --out first."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    ) -> None:
        """Cache the teacher's CLIP features of every image's grid views (resumable, shardable)."""
        import torch

        from zeroseg.data.sources import ImageSource
        from zeroseg.teacher.cache import build_cache
        from zeroseg.teacher.cache_files import check_cache_args
        from zeroseg.teacher.load import load_teacher
        from zeroseg.utils.atomic import clean_stale_temps
        from zeroseg.utils.device import init_distributed, local_rank, resolve_device
        from zeroseg.utils.lock import folder_lock
        from zeroseg.utils.writable import ensure_writable_dir

        grid_values = check_cache_args(parse_int_list(grids, "--grids"), image_size, dtype, batch_size)
        if workers is None:
            workers = min(4, max(0, (os.cpu_count() or 1) - 1))
        if workers < 0 or max_views < 0:
            raise ZerosegError("--workers and --max-views must not be negative")
        dev = resolve_device(device, local_rank=local_rank())
        main_rank = int(os.environ.get("RANK", "0") or 0) == 0
        if main_rank:
            ensure_writable_dir(out, "--out")
        joined = init_distributed(dev).joined
        try:
            source = ImageSource.open(data)
            model = load_teacher(teacher, device=dev)
            with folder_lock(out, what="teacher cache") if main_rank else nullcontext():
                if main_rank:
                    clean_stale_temps(out)
                summary = build_cache(
                    source,
                    model,
                    out,
                    grids=grid_values,
                    image_size=image_size,
                    batch_size=batch_size,
                    dtype=dtype,
                    num_workers=workers,
                    overwrite=overwrite,
                    max_batch=max_views or None,
                    amp=amp,
                    progress=progress,
                )
            if summary.rank == 0:
                typer.echo(summary.line())
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted: {out} keeps every finished batch; run the same command again to resume"
            ) from None
        finally:
            if joined:
                torch.distributed.destroy_process_group()
