"""An exponential moving average of the student's weights (`zeroseg train --ema DECAY`).

Ours, not the paper's: on ShapeWorld the seed-to-seed spread of short runs was as large as the
margin over the training-free baseline, and averaging the last few hundred steps' weights is the
usual cheap way to take the noise of the final steps out of a short run (timm's `ModelEmaV3`,
MAE's fine-tuning recipes). The average covers every floating-point tensor of the state dict
(parameters and float buffers); integer buffers are copied. A warm-up, `(1 + n) / (10 + n)`, keeps
the first updates from being dominated by the random initialisation.
"""

from __future__ import annotations

import torch


class WeightEMA:
    """A shadow copy of a module's state, moved towards the live weights after every optimizer step."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        """Start the average at the model's current weights.

        Args:
            model: the student (not its DDP / compiled wrapper).
            decay: the per-step decay in (0, 1); the average spans about 1 / (1 - decay) steps.
        """
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay of the next update: `decay`, warmed up over the first updates."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards `model`'s weights by one step."""
        decay = self.current_decay()
        for key, value in model.state_dict().items():
            shadow = self.shadow[key]
            if shadow.is_floating_point():
                shadow.lerp_(value.detach().to(shadow.dtype), 1.0 - decay)
            else:
                shadow.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict:
        """What a resumable checkpoint keeps: the average and the number of updates."""
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of `state_dict` (the shadow tensors are copied into this average's own)."""
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        for key, value in state["shadow"].items():
            self.shadow[key].copy_(value)
