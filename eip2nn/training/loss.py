"""The training loss: per-atom energy and force errors, per head, weighted."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eip2nn.nn.graph import collate
from eip2nn.training.samples import Sample


@dataclass(frozen=True)
class LossWeights:
    energy: float = 1.0  # on (ΔE / n_atoms)², eV²/atom²
    forces: float = 0.1  # on ΔF², (eV/Å)², per component


def batch_loss(model, samples: list[Sample], head_weights: dict[str, float], weights: LossWeights
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ_heads w_head (w_E ⟨(ΔE/n)²⟩ + w_F ⟨ΔF²⟩) over the samples labelled for each head."""
    heads = [h for h in head_weights if any(h in s.targets for s in samples)]
    if not heads:
        raise ValueError("batch has no sample labelled for any trained head")
    want_forces = weights.forces > 0
    preds = model(collate([s.graph for s in samples]), heads=heads, forces=want_forces)
    sizes = [s.n_atoms for s in samples]
    total = torch.zeros(())
    parts: dict[str, float] = {}
    for h in heads:
        p = preds[h]
        idx = [k for k, s in enumerate(samples) if h in s.targets]
        e_ref = torch.tensor([samples[k].targets[h].energy for k in idx], dtype=p.energy.dtype)
        n = torch.tensor([sizes[k] for k in idx], dtype=p.energy.dtype)
        loss_e = (((p.energy[idx] - e_ref) / n) ** 2).mean()
        loss = weights.energy * loss_e
        if want_forces:
            per = p.forces.split(sizes)
            pairs = [(per[k], samples[k].targets[h].forces) for k in idx if samples[k].targets[h].forces is not None]
            if pairs:
                df = torch.cat([(fp - fr.to(fp.dtype)).reshape(-1) for fp, fr in pairs])
                loss = loss + weights.forces * (df ** 2).mean()
        total = total + head_weights[h] * loss
        parts[h] = float(loss.detach())
    return total, parts
