"""An exponential moving average of a model's weights (Polyak averaging), swapped in to evaluate.

Averaged weights generalise better than the last step's and make the
validation curve smoother, so early stopping and the returned epoch are less
at the mercy of one noisy step (as in MACE, NequIP, Allegro).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class WeightAverage:
    """shadow ← decay · shadow + (1 − decay) · weights, after every optimiser step; floating entries only."""

    def __init__(self, model: torch.nn.Module, decay: float, state: dict | None = None):
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        if state:
            for k, v in state.items():
                self.shadow[k].copy_(v)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)

    def state_dict(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.shadow.items()}

    @contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """Inside the block the model holds the averaged weights; its own come back afterwards."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(own, strict=False)
