"""Checkpoints: weights + resolved config + package versions, never pickled modules.

Loaded with ``torch.load(weights_only=True)``; the model is rebuilt from its
config and species and the weights are loaded into it. A committee's checkpoint
holds one such record per member (``"committee"``) besides member 0's (``"model"``). A version mismatch
with the running packages is a warning, not an error.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import torch

from eip2nn.labelling.provenance import package_versions
from eip2nn.nn.committee import Committee
from eip2nn.nn.config import ModelConfig
from eip2nn.nn.model import EnergyModel

FORMAT = "eip2nn-checkpoint/1"
NN_PACKAGES = ("torch", "numpy", "ase", "matscipy", "kliff")


def model_record(model: EnergyModel) -> dict:
    return {"config": dataclasses.asdict(model.config), "species": list(model.species),
            "heads": model.head_names, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "state_dict": model.state_dict(), "reference_eip": model.reference_eip}


def save_checkpoint(path: str | Path, model: EnergyModel | Committee, config: dict | None = None,
                    training: dict | None = None) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a half checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    members = list(model.members) if isinstance(model, Committee) else [model]
    payload = {"format": FORMAT, "model": model_record(members[0]), "config": config or {},
               "versions": package_versions(NN_PACKAGES), "training": training}
    if isinstance(model, Committee):
        payload["committee"] = [model_record(m) for m in members]
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt file
        raise ValueError(f"{path} is not a readable eip2nn checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an eip2nn checkpoint (format {FORMAT!r} expected)")
    running = package_versions(NN_PACKAGES)
    changed = {k: (v, running.get(k)) for k, v in payload["versions"].items() if running.get(k) != v}
    if changed:
        warnings.warn(f"{path} was written with other package versions (saved, running): {changed}", stacklevel=2)
    return payload


def model_from_record(record: dict) -> EnergyModel:
    model = EnergyModel(ModelConfig(**record["config"]), record["species"], record["heads"],
                        record.get("reference_eip", ""))
    model.to(getattr(torch, record["dtype"]))
    model.load_state_dict(record["state_dict"])
    return model


def load_model(path: str | Path) -> EnergyModel | Committee:
    """The model (or committee) saved in checkpoint ``path``, in eval mode."""
    payload = read_checkpoint(path)
    if "committee" in payload:
        return Committee([model_from_record(r) for r in payload["committee"]]).eval()
    return model_from_record(payload["model"]).eval()
