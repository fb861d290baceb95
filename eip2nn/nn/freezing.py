"""Freezing part of a backbone for fine-tuning (``finetune.freeze``)."""

from __future__ import annotations


def freeze(model, spec: str) -> list[str]:
    """Stop gradients to part of the backbone; returns the frozen parameter names.

    spec: "none"; "backbone" (all of it); "embedding" (SchNet's species
    embedding); "interactions:N" (SchNet embedding + first N interactions);
    "layers:N" (first N linear layers of the descriptor network: symmetry
    functions or bispectrum).
    """
    names = []
    bb = model.backbone
    if spec == "none":
        return names
    if spec == "backbone":
        modules = [bb]
    elif spec == "embedding" and hasattr(bb, "embedding"):
        modules = [bb.embedding]
    elif spec.startswith("interactions:") and hasattr(bb, "interactions"):
        k = int(spec.split(":", 1)[1])
        modules = [bb.embedding, *bb.interactions[:k]]
    elif spec.startswith("layers:") and hasattr(bb, "net"):
        k = int(spec.split(":", 1)[1])
        linears = [m for m in bb.net if hasattr(m, "weight")]
        modules = linears[:k]
    else:
        raise ValueError(f"finetune.freeze: {spec!r} does not apply to backbone {model.config.backbone!r}; use "
                         "none, backbone, embedding, interactions:N (schnet) or layers:N (symmetry_functions, bispectrum)")
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)
    frozen = {id(p) for m in modules for p in m.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in frozen]
