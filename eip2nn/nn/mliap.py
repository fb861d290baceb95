"""A bispectrum-backbone model as LAMMPS ML-IAP files: ``pair_style mliap model nn ... descriptor sna ...``.

LAMMPS's ML-IAP package computes the same SNAP bispectrum as the training
descriptor (:mod:`eip2nn.nn.bispectrum`: ``compute snap`` with every element
of radius 0.5 and weight 1, bzeroflag 1, switchflag 1) and feeds each atom's
B_i, standardised, through a per-element dense network (``MLIAPModelNN``).
One head of an :class:`~eip2nn.nn.model.EnergyModel` folds into that form:

- the standardisation (mean, std) is the file's scale block;
- the species one-hot of a multi-element model becomes each element's first-layer bias;
- the backbone MLP and its output activation, then the head MLP, are the layers;
- the head's scale multiplies the last layer and its per-element offset joins the last bias.

ML-IAP's networks know linear, sigmoid, tanh and relu only, so a model trained
with ``model.activation: shifted_softplus`` cannot be written.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from eip2nn.nn.bispectrum import RFAC0
from eip2nn.nn.model import DFT_HEAD, EnergyModel
from eip2nn.snap.bispectrum import BZEROFLAG, ELEMENT_RADIUS, ELEMENT_WEIGHT, SWITCHFLAG

FORMAT = "eip2nn-mliap/1"
MLIAP_ACTIVATIONS = {"tanh": "tanh", "sigmoid": "sigmoid"}  # eip2nn name -> ML-IAP nn keyword


def _linears(sequential: nn.Sequential) -> list[nn.Linear]:
    return [m for m in sequential if isinstance(m, nn.Linear)]


def folded_layers(model: EnergyModel, head: str) -> tuple[np.ndarray, np.ndarray, list[list[tuple[np.ndarray, np.ndarray]]]]:
    """(mean (K,), std (K,), per element [(W (out, in), b (out,)), ...]) of head ``head``; the last layer
    gives the atom's energy in eV. The hidden layers use ``model.config.activation``."""
    if model.config.backbone != "bispectrum":
        raise ValueError(f"only bispectrum models run as ML-IAP networks, not {model.config.backbone!r}")
    if model.config.activation not in MLIAP_ACTIVATIONS:
        raise ValueError(
            f"this model's activation is {model.config.activation!r}; LAMMPS ML-IAP networks know "
            f"{sorted(MLIAP_ACTIVATIONS)} (and linear, relu): train with model.activation: tanh to run it as ML-IAP, "
            "or export it with --format torchscript (the plugin runs any activation)")
    if model.prior is not None and head == DFT_HEAD:
        raise ValueError("this model adds a SNAP prior (model.snap_prior) to its network, which an ML-IAP network "
                         "cannot hold: export it with --format torchscript (the plugin runs it)")
    bb, h = model.backbone, model.head(head)
    k = int(bb.mean.shape[0])
    layers = [(lin.weight.detach().double().numpy(), lin.bias.detach().double().numpy())
              for lin in _linears(bb.net) + _linears(h.net)]
    scale, offsets = float(h.scale), h.offsets.detach().double().numpy()
    per_element = []
    for e in range(len(model.species)):
        w0, b0 = layers[0]
        if bb.n_species > 1:  # one-hot input columns after the K descriptors: a per-element bias
            w0, b0 = w0[:, :k], b0 + w0[:, k + e]
        w_last, b_last = layers[-1]
        per_element.append([(w0, b0), *layers[1:-1], (scale * w_last, scale * b_last + offsets[e])])
    return bb.mean.detach().double().numpy(), bb.std.detach().double().numpy(), per_element


def mliap_model_text(model: EnergyModel, head: str) -> str:
    """The ML-IAP ``nn`` coefficient file of head ``head``."""
    mean, std, per_element = folded_layers(model, head)
    act = MLIAP_ACTIVATIONS[model.config.activation]
    sizes = [w.shape[0] for w, _ in per_element[0]]
    n_params = sum(w.shape[0] * (w.shape[1] + 1) for w, _ in per_element[0])
    kinds = [act] * (len(sizes) - 1) + ["linear"]
    lines = [f"# eip2nn {FORMAT}: species {' '.join(model.species)}, head {head}; energies in eV",
             f"{len(model.species)} {n_params}",
             # the layout, once; then per element: means, stds, and the layers' parameters
             f"NET {len(mean)} {len(sizes)} " + " ".join(f"{a} {n}" for a, n in zip(kinds, sizes))]
    for layers in per_element:
        lines += [repr(float(x)) for x in mean]
        lines += [repr(float(x)) for x in std]
        for w, b in layers:  # per node: its bias, then its input weights
            lines += [repr(float(x)) for x in np.concatenate([b[:, None], w], axis=1).ravel()]
    return "\n".join(lines) + "\n"


def mliap_descriptor_text(model: EnergyModel) -> str:
    """The ML-IAP ``sna`` descriptor file: the training descriptor's settings."""
    species, n = model.species, len(model.species)
    # ML-IAP's pair cut-off is rcutfac (R_i + R_j) = rcutfac with R = 0.5, as in compute snap
    return "\n".join([
        f"# eip2nn {FORMAT}: the bispectrum descriptor of the training (eip2nn.nn.bispectrum)",
        f"rcutfac {float(model.config.cutoff)!r}", f"twojmax {int(model.config.twojmax)}",
        f"nelems {n}", "elems " + " ".join(species), "radelems " + " ".join([repr(ELEMENT_RADIUS)] * n),
        "welems " + " ".join([repr(ELEMENT_WEIGHT)] * n), f"rfac0 {RFAC0!r}", "rmin0 0.0",
        f"bzeroflag {BZEROFLAG}", f"switchflag {SWITCHFLAG}", ""])

