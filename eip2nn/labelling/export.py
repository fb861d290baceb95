"""Attach stored EIP labels to structures and write them as extended XYZ."""

from __future__ import annotations

from pathlib import Path

from ase import Atoms
from ase.io import write

from eip2nn.keys import ENERGY, FORCES, LOCAL_ENERGIES, STRESS, eip_failure_key, eip_key
from eip2nn.labelling.hashing import structure_hashes
from eip2nn.labelling.store import LabelStore


def attach_labels(structures: list[Atoms], store: LabelStore, eip_ids: list[str]) -> list[Atoms]:
    """Copies of ``structures`` carrying each EIP's labels under ``<eip_id>_<quantity>``.

    Energy (eV) and stress (eV/Å³, Voigt) go to ``info``, forces (eV/Å) and,
    where stored, local energies (eV per atom) to ``arrays``. A structure an EIP failed on gets ``info["<eip_id>_failure"]``
    with the recorded reason; one never attempted gets neither.
    """
    hashes = structure_hashes(structures)
    wanted = set(hashes)
    out = [a.copy() for a in structures]
    for a in out:
        a.calc = None
    index: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        index.setdefault(h, []).append(i)
    for eip in eip_ids:
        for lab in store.labels(eip, hashes=wanted):
            for i in index[lab.structure_hash]:
                out[i].info[eip_key(eip, ENERGY)] = lab.energy
                out[i].arrays[eip_key(eip, FORCES)] = lab.forces.copy()
                if lab.stress is not None:
                    out[i].info[eip_key(eip, STRESS)] = lab.stress.copy()
                if lab.local_energies is not None:
                    out[i].arrays[eip_key(eip, LOCAL_ENERGIES)] = lab.local_energies.copy()
        for fail in store.failures(eip):
            for i in index.get(fail.structure_hash, ()):
                out[i].info[eip_failure_key(eip)] = f"{fail.kind}: {fail.reason}"
    return out


def export_extxyz(structures: list[Atoms], store: LabelStore, eip_ids: list[str], path: str | Path) -> Path:
    """Write ``structures`` with their EIP labels (and REF labels) to an extxyz file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, attach_labels(structures, store, eip_ids), format="extxyz")
    return path
