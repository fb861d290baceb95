"""The training loss: per-atom energy, force and stress errors, per target, weighted.

A *loss term* ties a target (a key of ``Sample.targets``: "dft", an EIP id,
"weak") to the model head that predicts it. Squared errors by default; a
term with a Tukey biweight scale ``c`` uses the robust ρ instead, whose
gradient vanishes for residuals beyond c, so wrong weak labels stop pulling.
Stress (squared error only) enters when its weight is positive, on the
samples whose target carries a stress (periodic structures; never weak labels);
the model is asked for stress only then, so a zero weight costs nothing.
Local energies (squared error per atom) likewise enter when their weight is
positive, on the samples whose target carries them (EIP labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eip2nn.nn.graph import collate
from eip2nn.training.config import LossWeights
from eip2nn.training.samples import Sample


@dataclass(frozen=True)
class LossTerm:
    target: str  # key of Sample.targets
    head: str  # model head predicting it
    weight: float = 1.0
    tukey_energy: float = 0.0  # Tukey c on ΔE/n_atoms, eV/atom; 0 = squared error
    tukey_forces: float = 0.0  # Tukey c on each ΔF component, eV/Å; 0 = squared error
    forces: bool = True  # include this target's forces (when it has them)
    stress: bool = True  # include this target's stress (when it has one and LossWeights.stress > 0)


def as_terms(head_weights: dict[str, float] | list[LossTerm]) -> list[LossTerm]:
    """``{head: weight}`` (each target predicted by the head of its name) or terms as they are."""
    if isinstance(head_weights, dict):
        return [LossTerm(h, h, w) for h, w in head_weights.items()]
    return list(head_weights)


def tukey_rho(r: torch.Tensor, c: float) -> torch.Tensor:
    """Tukey's biweight ρ, scaled to equal r² for |r| ≪ c and c²/3 for |r| ≥ c."""
    x = torch.clamp((r / c) ** 2, max=1.0)
    return (c * c / 3.0) * (1.0 - (1.0 - x) ** 3)


def _penalty(r: torch.Tensor, c: float) -> torch.Tensor:
    return tukey_rho(r, c) if c > 0 else r ** 2


def batch_loss(model, samples: list[Sample], terms, weights: LossWeights
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ_terms w (w_E ⟨ρ(ΔE/n)⟩ + w_F ⟨ρ(ΔF)⟩ + w_σ ⟨Δσ²⟩ + w_e ⟨Δe_i²⟩) over the samples carrying each
    term's target (e_i: each atom's energy)."""
    terms = [t for t in as_terms(terms) if any(t.target in s.targets for s in samples)]
    if not terms:
        raise ValueError("batch has no sample labelled for any trained target")
    want_forces = weights.forces > 0 and any(t.forces for t in terms)
    stressed = {t.target: _with_stress(samples, t.target) for t in terms if weights.stress > 0 and t.stress}
    want_stress = any(stressed.values())
    preds = model(collate([s.graph for s in samples]), heads=sorted({t.head for t in terms}), forces=want_forces,
                  stress=want_stress)
    sizes = [s.n_atoms for s in samples]
    total = torch.zeros((), device=next(model.parameters()).device)
    parts: dict[str, float] = {}
    for t in terms:
        p = preds[t.head]
        idx = [k for k, s in enumerate(samples) if t.target in s.targets]
        e_ref = torch.tensor([samples[k].targets[t.target].energy for k in idx], dtype=p.energy.dtype,
                             device=p.energy.device)
        n = torch.tensor([sizes[k] for k in idx], dtype=p.energy.dtype, device=p.energy.device)
        loss = weights.energy * _penalty((p.energy[idx] - e_ref) / n, t.tukey_energy).mean()
        if want_forces and t.forces:
            per = p.forces.split(sizes)
            pairs = [(per[k], samples[k].targets[t.target].forces) for k in idx
                     if samples[k].targets[t.target].forces is not None]
            if pairs:
                df = torch.cat([(fp - fr.to(fp)).reshape(-1) for fp, fr in pairs])
                loss = loss + weights.forces * _penalty(df, t.tukey_forces).mean()
        if stressed.get(t.target):
            ks = stressed[t.target]
            s_ref = torch.stack([samples[k].targets[t.target].stress for k in ks]).to(p.stress)
            loss = loss + weights.stress * ((p.stress[ks] - s_ref) ** 2).mean()
        if weights.local > 0:
            per = p.atom_energies.split(sizes)
            pairs = [(per[k], samples[k].targets[t.target].local_energies) for k in idx
                     if samples[k].targets[t.target].local_energies is not None]
            if pairs:
                de = torch.cat([ep - er.to(ep) for ep, er in pairs])
                loss = loss + weights.local * (de ** 2).mean()
        total = total + t.weight * loss
        parts[t.target] = float(loss.detach())
    return total, parts


def _with_stress(samples: list[Sample], target: str) -> list[int]:
    """Indices of the periodic samples whose ``target`` carries a stress (the model's is NaN elsewhere)."""
    return [k for k, s in enumerate(samples)
            if target in s.targets and s.targets[target].stress is not None and s.graph.periodic]
