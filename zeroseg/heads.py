"""The heads that paint a label map from a student's output, by public name (plain Python, no torch).

"paper" (the paper's: upsample the segments' assignment) or "dense" (ours: name every patch,
upsample the class probabilities). A checkpoint may record the head it was tuned for
(`CheckpointConfig.head`); every entry point normalises names with `head_name`, so a head has one
spelling everywhere after it.
"""

from __future__ import annotations

from zeroseg.errors import ZerosegError

#: The heads, by public name.
HEADS: tuple[str, ...] = ("paper", "dense")
#: Older names still accepted, normalised by `head_name`.
HEAD_ALIASES: dict[str, str] = {"segments": "paper"}
#: The head of a checkpoint that records none (every checkpoint written before heads were recorded).
DEFAULT_HEAD = "paper"


def head_name(head: str) -> str:
    """The public name of a head ("paper" or "dense"; "segments" is the paper's older name).

    Raises:
        ZerosegError: in one line for anything else.
    """
    text = head.strip().lower() if isinstance(head, str) else None
    text = HEAD_ALIASES.get(text, text) if text is not None else None
    if text not in HEADS:
        raise ZerosegError(f"--head must be {' or '.join(HEADS)}, got {head!r}")
    return text
