"""`zeroseg train`: distil a ZeroSeg student from a CLIP teacher on unlabeled images."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from zeroseg.errors import ZerosegError
from zeroseg.utils.console import parse_int_list

if TYPE_CHECKING:
    from zeroseg.train.config import TrainConfig, TrainResult


def _parse_weights(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ZerosegError(
            f"--loss-weights must be three numbers distill,match,reconstruction; got {text!r}"
        ) from None
    if len(values) != 3:
        raise ZerosegError(f"--loss-weights needs three numbers distill,match,reconstruction; got {text!r}")
    return values  # type: ignore[return-value]


#: CLI parameter -> TrainConfig field, where the names differ.
_PARAM_FIELDS: dict[str, str] = {
    "warmup": "warmup_fraction",
    "loss_weights": "weights",
    "workers": "num_workers",
    "compile_model": "compile",
    "stop_after": "stop_after_steps",
}


def _explicit_fields(ctx: typer.Context) -> set[str]:
    """The TrainConfig fields whose flags were given on the command line (or by the environment)."""
    given = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)  # by name: Typer may ship its own copy of click
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given.add(_PARAM_FIELDS.get(name, name))
    return given


def train_command(
    ctx: typer.Context,
    data: str = typer.Option(
        ..., "--data", help="Image folder (recursive), .tar shard(s), folder of shards or glob."
    ),
    out: Path = typer.Option(..., "--out", help="Run folder: config.json, metrics.jsonl, last.pt, model.pt."),
    teacher: str | None = typer.Option(
        None, "--teacher", help="CLIP teacher: MODEL:TAG, MODEL:/weights or teacher.pt."
    ),
    teacher_cache: str | None = typer.Option(
        None, "--teacher-cache", help="Features from `zeroseg cache-teacher`."
    ),
    preset: str = typer.Option(
        "tiny", "--preset", help="Student: base (the paper's) | tiny (CPU) | shapeworld."
    ),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Training crop (default: preset or cache)."
    ),
    encoder_weights: str | None = typer.Option(None, "--encoder-weights", help="timm/MAE ViT weights file."),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps (default: --epochs)."),
    epochs: float | None = typer.Option(
        None, "--epochs", help="Epochs when --steps is not given (default 1)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per device per micro-batch."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step."),
    lr: float | None = typer.Option(None, "--lr", help="Absolute LR (default: --blr x batch / 256)."),
    blr: float = typer.Option(
        1.5e-4, "--blr", help="Base LR, scaled by the effective batch (paper: 1.5e-4)."
    ),
    weight_decay: float = typer.Option(0.05, "--weight-decay", help="AdamW weight decay."),
    warmup: float = typer.Option(
        0.25, "--warmup", help="Warm-up share of the steps (paper: 20 of 80 epochs)."
    ),
    clip_grad: float = typer.Option(1.0, "--clip-grad", help="Gradient-norm clip (0 = off)."),
    mask_ratio: float | None = typer.Option(None, "--mask-ratio", help="Masked patch share (paper: 0.6)."),
    gumbel: bool = typer.Option(
        True, "--gumbel/--no-gumbel", help="Gumbel noise on group assignment in training (GroupViT)."
    ),
    match: str = typer.Option("paper", "--match", help="Segment matching: paper | two-way."),
    loss_weights: str = typer.Option("1,1,1", "--loss-weights", help="distill,match,reconstruction."),
    region_weight: float = typer.Option(
        0.0, "--region-weight", help="Region loss: cells vs segments mixed by assignment (0 = paper)."
    ),
    ema: float | None = typer.Option(
        None, "--ema", help="Save an EMA of the weights (decay, e.g. 0.99) as model.pt (ours; off = paper)."
    ),
    soft_assign: float = typer.Option(
        0.0,
        "--soft-assign",
        help="Share of the steps with soft group assignments before hard ones (ours; 0 = paper).",
    ),
    attn_window: int | None = typer.Option(
        None,
        "--attn-window",
        help="Encoder attention in windows of N patches (ours; e.g. image size / patch size: identical "
        "at the training size, linear cost at larger inputs); saved in the checkpoint.",
    ),
    norm_pix: bool = typer.Option(
        False, "--norm-pix/--no-norm-pix", help="MAE per-patch normalised targets."
    ),
    grids: str = typer.Option("1,2,3,4", "--grids", help="Teacher grid views (1 = the full image)."),
    templates: str = typer.Option(
        "imagenet", "--templates", help="Prompts: imagenet | single | shapeworld | file."
    ),
    test_short_side: int | None = typer.Option(None, "--test-short-side", help="Inference short side (448)."),
    bg_thresh: float | None = typer.Option(
        None, "--bg-thresh", min=0.0, max=1.0, help="Default background threshold to save."
    ),
    bg_prompt: bool = typer.Option(False, "--bg-prompt/--no-bg-prompt", help="Default: prompt 'background'."),
    amp: str = typer.Option("auto", "--amp", help="auto (bf16 on CUDA) | bf16 | fp16 | off."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the student."),
    workers: int = typer.Option(0, "--workers", min=0, help="DataLoader worker processes."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of initialisation, masking and data order."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    log_every: int = typer.Option(10, "--log-every", help="Steps between metrics rows."),
    save_every: int = typer.Option(500, "--save-every", help="Steps between last.pt checkpoints."),
    stop_after: int | None = typer.Option(None, "--stop-after-steps", help="Stop (resumably) after N steps."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the run in --out (that folder, even if copied or renamed) exactly where it stopped; "
        "--steps may grow, other changed settings are refused.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train ZeroSeg without labels: MAE masking + multi-scale CLIP distillation + segment matching.

    Multi-GPU / multi-node: `torchrun --nproc_per_node N -m zeroseg train ...`.
    """
    options = dict(locals())  # every option by parameter name, before anything else is bound
    cfg = _train_config({name: v for name, v in options.items() if name not in _NOT_CONFIG})
    result = _run_training(cfg, out, resume=resume, progress=not quiet, explicit=_explicit_fields(ctx))
    _report(result, out)


#: Parameters of `train_command` that are not TrainConfig settings.
_NOT_CONFIG = frozenset({"ctx", "resume", "quiet"})


def _train_config(options: dict[str, Any]) -> TrainConfig:
    """The run's TrainConfig from the command's options (by parameter name; `_PARAM_FIELDS` maps
    the names that differ), with the text options parsed.

    Raises:
        ZerosegError: a count that must be positive is not, or unparsable --loss-weights / --grids.
    """
    from zeroseg.train.config import TrainConfig

    checks = (
        (options["log_every"], "--log-every"),
        (options["save_every"], "--save-every"),
        (options["workers"] + 1, "--workers"),
    )
    for value, name in checks:
        if value <= 0:
            raise ZerosegError(f"{name} must be positive, got {value}")
    fields = {_PARAM_FIELDS.get(name, name): value for name, value in options.items()}
    fields.update(
        out=str(options["out"]),
        clip_grad=options["clip_grad"] or None,
        weights=_parse_weights(options["loss_weights"]),
        grids=parse_int_list(options["grids"], "--grids"),
    )
    return TrainConfig(**fields)


def _run_training(
    cfg: TrainConfig, out: Path, *, resume: bool, progress: bool, explicit: set[str]
) -> TrainResult:
    """`zeroseg.train.loop.train`, its warnings on stderr; a second Ctrl-C becomes `Interrupted`."""
    from zeroseg.train.loop import train

    try:
        return train(
            cfg, resume=resume, progress=progress, explicit=explicit,
            on_warning=lambda m: typer.echo(f"warning: {m}", err=True),
        )  # fmt: skip
    except KeyboardInterrupt:  # the second Ctrl-C: stop at once, without saving
        from zeroseg.utils.console import Interrupted

        raise Interrupted(
            f"interrupted twice: stopped at once without saving; {out / 'last.pt'} holds the last saved "
            "step (continue with --resume)"
        ) from None


def _report(result: TrainResult, out: Path) -> None:
    """Say where the run stopped; a signal-interrupted run exits with the signal's status."""
    if result.interrupted:
        typer.echo(
            f"interrupted at step {result.step}: saved {out / 'last.pt'}; continue with --resume", err=True
        )
        sys.exit(result.exit_code)
    done = "finished" if result.step >= result.total_steps else "paused"
    typer.echo(
        f"{done} at step {result.step}/{result.total_steps}, loss {result.last_loss:.4f}; run folder {out}"
    )


def register(app: typer.Typer) -> None:
    """Add `train` to the `zeroseg` CLI."""
    app.command("train")(train_command)
