"""The EIP registry: every ``*.yaml`` file in a potentials_db folder.

The default folder is ``potentials_db/`` at the repository root; set
``EIP2NN_POTENTIALS_DB`` to use another.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from eip2nn.potentials.spec import PotentialSpec, PotentialSpecError, load_spec

DEFAULT_DB = Path(__file__).resolve().parents[2] / "potentials_db"


def db_folder() -> Path:
    return Path(os.environ.get("EIP2NN_POTENTIALS_DB", DEFAULT_DB))


class PotentialsDB:
    """All specs of one folder, by id. Duplicate ids are an error."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else db_folder()
        if not self.folder.is_dir():
            raise FileNotFoundError(f"potentials_db folder not found: {self.folder}")
        self.specs: dict[str, PotentialSpec] = {}
        for path in sorted(self.folder.glob("*.yaml")):
            spec = load_spec(path)
            if spec.id in self.specs:
                raise PotentialSpecError(
                    f"{path}: id {spec.id!r} already defined in {self.specs[spec.id].source_file}")
            self.specs[spec.id] = spec

    def __len__(self) -> int:
        return len(self.specs)

    def __iter__(self):
        return iter(self.specs.values())

    def get(self, eip_id: str) -> PotentialSpec:
        try:
            return self.specs[eip_id]
        except KeyError:
            close = [i for i in self.specs if eip_id.lower() in i.lower()][:5]
            hint = f"; did you mean {close}?" if close else ""
            raise KeyError(f"no EIP with id {eip_id!r} in {self.folder}{hint}") from None

    def select(self, species: Iterable[str] | None = None, backend: str | None = None,
               exclude_fitted_to: Iterable[str] = (), kinds: Iterable[str] | None = None
               ) -> list[PotentialSpec]:
        """Specs that support all ``species`` (and match the other filters)."""
        species = set(species or ())
        excluded = set(exclude_fitted_to)
        kinds = set(kinds) if kinds is not None else None
        return [s for s in self.specs.values()
                if s.supports(species)
                and (backend is None or s.backend_type == backend)
                and not (excluded & set(s.fitted_to))
                and (kinds is None or s.kind in kinds)]

    def eligible_for(self, species: Iterable[str], source_tag: str) -> tuple[list[PotentialSpec], list[tuple[PotentialSpec, str]]]:
        """EIPs that may label data of ``source_tag``, and the excluded ones with reasons.

        Excluded: EIPs fitted to that data (leakage), EIPs missing a species,
        EIPs with a known issue (``known_issues``) for one of the species.
        """
        species = set(species)
        ok, excluded = [], []
        for s in self.specs.values():
            issues = [f"{el}: {why}" for el, why in s.known_issues if el in species]
            if source_tag in s.fitted_to:
                excluded.append((s, f"fitted to {source_tag!r} data (leakage)"))
            elif not s.supports(species):
                excluded.append((s, f"does not support {sorted(species - set(s.species))}"))
            elif issues:
                excluded.append((s, "known issue " + "; ".join(issues)))
            else:
                ok.append(s)
        return ok, excluded
