"""Local prediction rigidity (LPR): how firmly the training data pins down each atom's energy.

Chong et al., "Robustness of local predictions in atomistic machine learning
models" (J. Chem. Theory Comput. 2023). For a model linear in its weights w,
trained by minimising a loss L(w), the LPR of atom i's local energy
ε_i = φ_i · w is the curvature of the optimal loss along ε_i:

    LPR_i = 1 / (φ_i^T H^{-1} φ_i),    H = ∂²L/∂w²

(a large LPR: moving ε_i costs a lot of training loss; a small one: the
data hardly constrain it). For a network, the *last-layer approximation*
treats everything but a head's last linear layer as fixed features:
φ_i = scale · [z_i, 1], z_i the head's last hidden activations of atom i
(the 1 is the bias), so ε_i = scale · (w·z_i + b) + offset.

H is the Gauss–Newton Hessian of eip2nn's own loss on the head's training
structures A: ``w_E Σ_A Φ_A Φ_A^T / n_A² + w_F Σ_A J_A^T J_A + λ I``, with
Φ_A = Σ_{i∈A} φ_i, J_A = ∂F_A/∂w (3n_A × (h+1), eV/Å per unit weight) and
λ = ``ridge`` × trace(H₀)/(h+1) (H₀: H without the ridge). Units: LPR is
in 1/eV² (×the loss weights' units); compare LPRs of one model, or of models
with the same loss weights, not across loss settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from eip2nn.nn.graph import collate
from eip2nn.nn.model import DFT_HEAD, EnergyModel

DEFAULT_RIDGE = 1e-8  # λ relative to the mean diagonal of the unregularised Hessian


@dataclass
class LPRResult:
    """LPR of every atom of the query structures (one array per structure), and the Hessian used."""

    per_structure: list[np.ndarray]  # (n_atoms,) per query structure, 1/eV²
    hessian: np.ndarray  # (h+1, h+1)
    n_train: int

    @property
    def all_atoms(self) -> np.ndarray:
        return np.concatenate(self.per_structure) if self.per_structure else np.zeros(0)


def lpr_from_features(hessian: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """LPR (n,) of local energies with feature rows phi (n, p), for a loss of Hessian ``hessian`` (p, p)."""
    solved = np.linalg.solve(hessian, phi.T)  # (p, n)
    return 1.0 / np.einsum("np,pn->n", phi, solved)


def hessian_from_features(phi_sums: list[np.ndarray], n_atoms: list[int], force_jacobians: list[np.ndarray] | None,
                          energy_weight: float, force_weight: float, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """The Gauss–Newton Hessian (p, p) of the energy (and force) loss of a model linear in its weights.

    phi_sums: per training structure Φ_A (p,); n_atoms: n_A; force_jacobians: per structure J_A (3n_A, p), or None.
    """
    p = len(phi_sums[0])
    h = np.zeros((p, p))
    for phi, n in zip(phi_sums, n_atoms):
        h += energy_weight * np.outer(phi, phi) / n**2
    if force_jacobians is not None and force_weight > 0:
        for jac in force_jacobians:
            h += force_weight * jac.T @ jac
    return h + ridge * np.trace(h) / p * np.eye(p)


def _head_hidden(model: EnergyModel, head: str, batch, positions: torch.Tensor) -> torch.Tensor:
    """(N, h+1) scale · [z, 1] of every atom of ``batch`` at ``positions``."""
    from eip2nn.nn.derivatives import edge_vectors
    features = model.backbone(batch, edge_vectors(batch, positions))
    net = model.head(head).net
    z = net[:-1](features)  # everything but the last linear layer
    scale = model.head(head).scale
    return scale * torch.cat([z, torch.ones_like(z[:, :1])], dim=1)


def last_layer_features(model: EnergyModel, structures: list[Atoms], head: str = DFT_HEAD,
                        forces: bool = False) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per structure φ (n, h+1) and, with ``forces``, J = ∂F/∂w (3n, h+1) = −∂(Σ_i φ_i)/∂r."""
    model = model.eval()
    weight = next(model.parameters())
    phis, jacobians = [], [] if forces else None
    for k, atoms in enumerate(structures):
        batch = collate([model.graph(atoms)]).to(weight.dtype, weight.device)
        positions = batch.positions.detach().clone().requires_grad_(forces)
        phi = _head_hidden(model, head, batch, positions)
        if forces:
            total = phi.sum(0)
            rows = [torch.autograd.grad(total[c], positions, retain_graph=c < len(total) - 1, allow_unused=True)[0]
                    for c in range(len(total))]
            jac = torch.stack([-(r if r is not None else torch.zeros_like(positions)).reshape(-1) for r in rows], 1)
            jacobians.append(jac.detach().cpu().double().numpy())
        phis.append(phi.detach().cpu().double().numpy())
    return phis, jacobians


def local_prediction_rigidity(model: EnergyModel, train: list[Atoms], query: list[Atoms], head: str = DFT_HEAD,
                              energy_weight: float = 1.0, force_weight: float = 0.1, forces: bool = True,
                              ridge: float = DEFAULT_RIDGE) -> LPRResult:
    """LPR of every atom of ``query`` for head ``head`` of ``model`` trained on ``train`` (last-layer
    approximation; energy_weight and force_weight as in training: ``train.energy_weight``, ``train.force_weight``)."""
    if not train:
        raise ValueError("LPR needs the structures the head was trained on")
    phis, jacobians = last_layer_features(model, train, head, forces)
    hessian = hessian_from_features([p.sum(0) for p in phis], [len(p) for p in phis], jacobians, energy_weight,
                                    force_weight, ridge)
    query_phis, _ = last_layer_features(model, query, head, False)
    return LPRResult([lpr_from_features(hessian, p) for p in query_phis], hessian, len(train))
