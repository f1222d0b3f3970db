"""The methods and heads `zeroseg segment` and `zeroseg eval` offer, and the refusals the engines share.

Plain Python (no torch): the loader and the torch-free runtimes normalise head names with it.
"""

from __future__ import annotations

from zeroseg.errors import ZerosegError
from zeroseg.heads import HEAD_ALIASES, HEADS, head_name

__all__ = ["BASELINES", "HEADS", "HEAD_ALIASES", "METHODS", "baseline_mode", "check_engine_head", "head_name"]

#: The training-free baselines on the teacher CLIP, each a `MaskCLIPSegmenter` mode: MaskCLIP
#: (the value path), then ClearCLIP, SCLIP and NACLIP (self-self attention in the last block;
#: `zeroseg.infer.self_attention`).
BASELINES: tuple[str, ...] = ("maskclip", "clearclip", "sclip", "naclip")
METHODS: tuple[str, ...] = ("zeroseg", *BASELINES)


def baseline_mode(method: str) -> str | None:
    """The `MaskCLIPSegmenter` mode of a baseline method: None (the tower's default) for maskclip,
    else the method's own surgery."""
    return None if method == "maskclip" else method


def check_engine_head(head: str | None, exported: str, artefact: str) -> str:
    """The head an exported artefact runs: its own (`exported`, from its manifest) when `head` is None;
    a head it was not exported with is refused in one line naming the fix."""
    own = head_name(exported)
    if head is None:
        return own
    asked = head_name(head)
    if asked != own:
        raise ZerosegError(
            f"{artefact} was exported with the {own} head, not {asked}: re-export it with --head {asked} "
            f"(or drop --head)"
        )
    return asked
