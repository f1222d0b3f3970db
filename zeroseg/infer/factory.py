"""The methods `zeroseg segment` and `zeroseg eval` offer, and the refusal the engines share."""

from __future__ import annotations

from zeroseg.errors import ZerosegError

METHODS: tuple[str, ...] = ("zeroseg", "maskclip")


def check_engine_head(head: str, templates: str | None = None) -> None:
    """Refuse a head other than the paper's on an exported engine (the engines run only that one),
    and MaskCLIP's `--templates` (an engine's vocabulary and templates come from its bundle)."""
    if head != "segments":
        raise ZerosegError("--head dense runs in PyTorch only (engines run the paper's head): drop --head")
    if templates is not None:
        raise ZerosegError("--templates is a --method maskclip option: an engine carries its own templates")
