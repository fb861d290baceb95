"""The EIP registry: every ``*.yaml`` file in a potentials_db folder, plus the installed OpenKIM models.

The default folder is ``potentials_db/`` at the repository root; set
``EIP2NN_POTENTIALS_DB`` to use another. Every installed OpenKIM portable
model without an entry there is *discovered* (:mod:`eip2nn.potentials.discover`)
and described like one, with ``source_file`` = ``DISCOVERED_SOURCE``.

Machine-learned potentials (SNAP, GAP, NN...) are often fitted to public DFT
sets and may have seen a user's test structures: they label data only when
named explicitly, and then with a :class:`MachineLearnedEIPWarning`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from eip2nn.potentials.spec import PotentialSpec, PotentialSpecError, load_spec

DEFAULT_DB = Path(__file__).resolve().parents[2] / "potentials_db"
ML_KIND = "machine-learned"
ML_REASON = "machine-learned; name it explicitly to use it"


class MachineLearnedEIPWarning(UserWarning):
    """A machine-learned potential was named to label data; it may have been fitted to data like it."""


def db_folder() -> Path:
    return Path(os.environ.get("EIP2NN_POTENTIALS_DB", DEFAULT_DB))


def ml_warning(spec: PotentialSpec) -> str:
    """The warning (and note) for a machine-learned EIP named explicitly: what it was fitted to, if known."""
    fitted = (f"fitted to {', '.join(spec.fitted_to)} data" if spec.fitted_to
              else "fitted to unknown DFT data (no fitted_to tags)")
    return (f"{spec.id} is machine-learned ({spec.family}), {fitted}: if that data overlaps yours (same "
            "structures or the same public set), its labels carry your test answers. Used because it was named.")


class PotentialsDB:
    """All specs of one folder by id, then the installed OpenKIM models no entry describes.

    Duplicate ids in the folder are an error. Discovery runs on first use of
    :attr:`specs` (not for :meth:`get` of a registered id) and costs a few
    milliseconds once the model metadata is cached; ``discover_installed=False``
    keeps to the folder.
    """

    def __init__(self, folder: str | Path | None = None, discover_installed: bool = True):
        self.folder = Path(folder) if folder is not None else db_folder()
        if not self.folder.is_dir():
            raise FileNotFoundError(f"potentials_db folder not found: {self.folder}")
        self.discover_installed = discover_installed
        self.registered: dict[str, PotentialSpec] = {}
        for path in sorted(self.folder.glob("*.yaml")):
            spec = load_spec(path)
            if spec.id in self.registered:
                raise PotentialSpecError(
                    f"{path}: id {spec.id!r} already defined in {self.registered[spec.id].source_file}")
            self.registered[spec.id] = spec
        self._specs: dict[str, PotentialSpec] | None = None
        self._discovery = None
        self._skipped: list[tuple[str, str]] = []

    def _discovered(self) -> dict[str, PotentialSpec]:
        if self._specs is None:
            self._discover()
        return self._specs

    def _discover(self) -> None:
        from eip2nn.potentials.discover import Discovery, discover_installed, discovered_specs
        self._specs = dict(self.registered)
        if not self.discover_installed:
            self._discovery = Discovery([])
            return
        self._discovery = discover_installed()
        found, self._skipped = discovered_specs(self._discovery.models, self.registered)
        for eip_id, spec in found.items():
            self._specs.setdefault(eip_id, spec)

    @property
    def specs(self) -> dict[str, PotentialSpec]:
        """Every EIP by id: the folder's entries first, then the discovered installed models."""
        return self._discovered()

    @property
    def discovery(self):
        """The :class:`~eip2nn.potentials.discover.Discovery` behind :attr:`specs` (``loaded``: models read now)."""
        self._discovered()
        return self._discovery

    @property
    def discovery_failures(self) -> list[tuple[str, str]]:
        """(model, reason) for each installed model that could not be read ("KIM-API" if kimpy is missing)."""
        return list(self.discovery.failures)

    @property
    def discovery_skipped(self) -> list[tuple[str, str]]:
        """(model, reason) for each installed model read but not discovered: generic, example, odd species."""
        self._discovered()
        return list(self._skipped)

    def __len__(self) -> int:
        return len(self.specs)

    def __iter__(self):
        return iter(self.specs.values())

    def get(self, eip_id: str) -> PotentialSpec:
        if eip_id in self.registered:
            return self.registered[eip_id]
        try:
            return self.specs[eip_id]
        except KeyError:
            close = [i for i in self.specs if eip_id.lower() in i.lower()][:5]
            hint = f"; did you mean {close}?" if close else ""
            where = f"{self.folder} or the installed OpenKIM models" if self.discover_installed else self.folder
            raise KeyError(f"no EIP with id {eip_id!r} in {where}{hint}") from None

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

    def eligible_for(self, species: Iterable[str], source_tag: str | None, named: Iterable[str] = ()
                     ) -> tuple[list[PotentialSpec], list[tuple[PotentialSpec, str]]]:
        """EIPs that may label data of ``source_tag``, and the excluded ones with reasons.

        Excluded, in this order of reasons: EIPs fitted to that data (leakage;
        an empty tag refuses nothing), EIPs missing a species, EIPs with a known
        issue (``known_issues``) for one of the species, and machine-learned
        EIPs whose id is not in ``named`` (:data:`ML_REASON`). Callers that use a
        named machine-learned EIP warn with :func:`ml_warning`.
        """
        species, named = set(species), set(named)
        ok, excluded = [], []
        for s in self.specs.values():
            issues = [f"{el}: {why}" for el, why in s.known_issues if el in species]
            if source_tag and source_tag in s.fitted_to:
                excluded.append((s, f"fitted to {source_tag!r} data (leakage)"))
            elif not s.supports(species):
                excluded.append((s, f"does not support {sorted(species - set(s.species))}"))
            elif issues:
                excluded.append((s, "known issue " + "; ".join(issues)))
            elif s.kind == ML_KIND and s.id not in named:
                excluded.append((s, ML_REASON))
            else:
                ok.append(s)
        return ok, excluded


def warn_machine_learned(specs: Iterable[PotentialSpec], stacklevel: int = 3) -> list[str]:
    """Warn (:class:`MachineLearnedEIPWarning`) for each machine-learned spec; returns the warnings as notes."""
    import warnings
    notes = [ml_warning(s) for s in specs if s.kind == ML_KIND]
    for note in notes:
        warnings.warn(note, MachineLearnedEIPWarning, stacklevel=stacklevel)
    return notes
