"""The ``eip2nn`` command: a thin layer over the library; every command prints a result."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from eip2nn.labelling.store import StaleLabelsError
from eip2nn.tables import format_table as _table

DEFAULT_LABELS = "outputs/labels.sqlite"


class _OldName(argparse.Action):
    """A renamed option's old spelling: still accepted, with one line on stderr naming the new one."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"eip2nn: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_labels_option(q, help_text: str = "label store") -> None:
    """``--labels PATH``, the label store (``data.labels`` in a config); ``--store`` is its old name."""
    q.add_argument("--labels", default=DEFAULT_LABELS, metavar="PATH",
                   help=f"{help_text} (default: {DEFAULT_LABELS}; --store is the old name)")
    q.add_argument("--store", dest="labels", action=_OldName, new="--labels")


def _add_dataclass_options(parser, cls) -> None:
    """One ``--field-name`` option per field of the dataclass ``cls``, typed and defaulted from it."""
    import dataclasses

    comments = _field_comments(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        help_text = comments.get(f.name, "") + f" (default: {default})"
        if isinstance(default, list):
            parser.add_argument(flag, dest=f.name, type=float, nargs="+", default=default, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=type(default), default=default, help=help_text)


def _field_comments(cls) -> dict[str, str]:
    """``# comment`` after each field in the class source: the option's help."""
    import inspect
    import re

    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+): .*?#\s*(.+)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


# -- data -------------------------------------------------------------------------
def _add_user_data_options(q) -> None:
    """Options saying how to read the user's DFT files (as a pipeline's ``data`` section does)."""
    q.add_argument("--key", action="append", default=[], metavar="FIELD=NAME",
                   help="name of a field in your files, e.g. --key forces=force --key energy=E_dft "
                        "(fields: energy, forces, stress, virial, group; default: detected from the first frame)")
    q.add_argument("--format", default="", help="ASE format name of the files (default: guessed from the name)")
    q.add_argument("--stress-units", default="eV/A^3", help="stress units in the files: eV/A^3, GPa, kbar, bar")
    q.add_argument("--stress-sign", default="tensile", choices=("tensile", "compressive"),
                   help="stress sign convention in the files (ASE: tensile positive)")
    q.add_argument("--on-bad", default="error", choices=("error", "skip"),
                   help="a bad frame stops with an error naming it (default), or is left out and listed")
    q.add_argument("--source", default="", metavar="TAG",
                   help="tag naming your data's origin: EIPs listing it in fitted_to are refused")


def _data_keys(args, path: str):
    """The files' field names: detected from ``path``'s first frame, then the --key options."""
    import dataclasses

    from eip2nn.data.user import detect_keys
    keys = detect_keys(path, args.format)
    for item in args.key:
        field, sep, name = item.partition("=")
        if not sep or field not in {f.name for f in dataclasses.fields(keys)}:
            raise ValueError(f"--key {item!r}: expected FIELD=NAME with FIELD one of energy, forces, stress, "
                             "virial, group")
        keys = dataclasses.replace(keys, **{field: name})
    return keys


def _user_data_options(args, path: str):
    from eip2nn.data.user import UserDataOptions
    return UserDataOptions(_data_keys(args, path), args.stress_units, args.stress_sign, args.format, args.on_bad)


def cmd_data_list(args) -> int:
    from eip2nn.data import get_dataset, list_datasets
    rows = [("dataset", "format", "file")]
    for name in list_datasets():
        ds = get_dataset(name)
        rows.append((name, ds.fmt, ds.files["data"].relpath + (f":{ds.member}" if ds.member else "")))
    print(_table(rows))
    return 0


def cmd_data_fetch(args) -> int:
    from eip2nn.data import get_dataset, load_dataset, resolve
    for name in args.names:
        path = resolve(get_dataset(name).files["data"])
        print(f"{name}: {len(load_dataset(name))} structures, sha256 verified, {path}")
    return 0


def cmd_data_export(args) -> int:
    from eip2nn.data import load_dataset
    from eip2nn.data.files import write_dft_extxyz
    structures = load_dataset(args.name)
    path = write_dft_extxyz(structures, args.output)
    print(f"wrote {len(structures)} structures of {args.name} with their DFT energy, forces and stress to {path}")
    return 0


# -- potentials -------------------------------------------------------------------
def cmd_potentials_list(args) -> int:
    from eip2nn.potentials.db import PotentialsDB
    db = PotentialsDB(args.db)
    specs = db.select(species=args.species, backend=args.backend, exclude_fitted_to=args.exclude_fitted_to or ())
    rows = [("id", "species", "family", "backend", "kind", "cutoff/Å", "fitted_to", "origin")]
    rows += [(s.id, ",".join(s.species), s.family, s.backend_type, s.kind, f"{s.cutoff:.3f}",
              ",".join(s.fitted_to) or "-", "discovered" if s.discovered else "potentials_db") for s in specs]
    print(_table(rows))
    n_found = sum(s.discovered for s in specs)
    print(f"{len(specs)} potential(s): {len(specs) - n_found} from {db.folder}, {n_found} discovered among the "
          "installed OpenKIM models")
    for model, why in db.discovery_failures:
        print(f"not discovered: {model}: {why}")
    return 0


def cmd_potentials_check(args) -> int:
    from eip2nn.potentials.check import check_potential
    from eip2nn.potentials.db import PotentialsDB
    db = PotentialsDB(args.db)
    rows = [("id", "el", "crystal", "a0/Å", "a_exp/Å", "E/atom eV", "max|F| eV/Å", "k atoms/s", "status")]
    failed = 0
    for eip in args.ids:
        for c in check_potential(db.get(eip)):
            failed += not c.ok
            rows.append((eip, c.element, c.crystal, f"{c.a0:.4f}", c.a_exp, f"{c.energy_per_atom:.4f}",
                         f"{c.max_force:.1e}", f"{c.atoms_per_second / 1e3:.1f}",
                         "ok" if c.ok else c.problem))
    print(_table(rows))
    return 1 if failed else 0


def cmd_potentials_discover(args) -> int:
    import yaml

    from eip2nn.potentials.discover import find_models, spec_dict
    infos = find_models(args.species)
    rows = [("OpenKIM model", "species", "cutoff/Å", "kind")]
    for info in infos:
        d = spec_dict(info)
        rows.append((info.model, ",".join(info.species), f"{info.cutoff:.3f}", d["kind"]))
        if args.write:
            out = Path(args.write) / f"{d['id']}.yaml"
            if out.exists() and not args.overwrite:
                continue
            out.write_text(yaml.safe_dump(d, sort_keys=False, allow_unicode=True, width=100))
    print(_table(rows))
    print(f"{len(infos)} installed portable model(s) support {args.species}")
    return 0


# -- labelling ---------------------------------------------------------------------
def _load_structures(args):
    from eip2nn.data import load_dataset, read_structures
    structures = []
    for name in args.dataset or ():
        structures += load_dataset(name)
    for path in args.file or ():
        structures += read_structures(path)
    if not structures:
        raise SystemExit("nothing to label: give --dataset NAME and/or --file PATH")
    return structures


def cmd_label(args) -> int:
    from eip2nn.labelling.engine import LabellingInterrupted, label
    from eip2nn.potentials.db import PotentialsDB
    db = PotentialsDB(args.db)
    structures = _load_structures(args)
    if args.eip:
        from eip2nn.potentials.db import warn_machine_learned
        specs = [db.get(i) for i in args.eip]
        warn_machine_learned(specs)
    else:
        species = {s for a in structures for s in a.get_chemical_symbols()}
        specs, excluded = db.eligible_for(species, args.exclude_fitted_to)
        for s, why in excluded:
            print(f"excluded {s.id}: {why}")
    try:
        report = label(structures, specs, args.labels, workers=args.workers,
                       chunk_size=args.chunk_size, progress=not args.no_progress,
                       retry_failed=args.retry_failed, scheduler=args.scheduler,
                       local_energies=args.local_energies)
    except LabellingInterrupted as e:
        print(e.report.table())
        return 130
    print(report.table())
    for line in report.failure_lines():
        print("failed:", line)
    return 0


def cmd_generate(args) -> int:
    import dataclasses

    import numpy as np

    from eip2nn.generate.generator import GenerateConfig, generate, write_generated
    seeds = _load_structures(args)
    if args.select and args.select < len(seeds):
        pick = np.random.default_rng(args.seed).choice(len(seeds), args.select, replace=False)
        seeds = [seeds[i] for i in sorted(pick)]
    cfg = GenerateConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(GenerateConfig)})
    result = generate(seeds, cfg)
    path, provenance = write_generated(result, args.output, cfg, (args.dataset or []) + (args.file or []))
    rows = [("method", "structures")] + [(m, n) for m, n in result.counts.items()]
    print(_table(rows))
    for r in result.rejected:
        print(f"rejected: {r['seed_structure']} {r['method']} #{r['repeat']}: {r['reason']}")
    print(f"{len(result.structures)} structures from {len(seeds)} seed structures -> {path} "
          f"(provenance {provenance}); label them with: eip2nn label --file {path}")
    return 0


def cmd_labels_alignments(args) -> int:
    from eip2nn.labelling.store import LabelStore
    with LabelStore(args.labels) as store:
        rows = [("EIP", "aligned to", "structures", "offsets eV/atom", "E MAE meV/atom", "F MAE eV/Å")]
        rows += [(r["eip_id"], r["reference"], r["n_structures"],
                  " ".join(f"{s}:{o:+.4f}" for s, o in zip(r["species"], r["offsets_eV_per_atom"])),
                  f"{r['energy_mae_meV_per_atom']:.1f}", f"{r['force_mae_eV_per_A']:.3f}")
                 for r in store.alignments(args.eip)]
    print(_table(rows) if len(rows) > 1 else "no alignments stored (run a weak stage first)")
    return 0


def cmd_labels_summary(args) -> int:
    from eip2nn.labelling.store import LabelStore
    with LabelStore(args.labels) as store:
        counts = store.counts()
        kinds = sorted({k for c in counts.values() for k in c if k.startswith("failed:")})
        rows = [("EIP", "labels", *kinds, "claimed")]
        rows += [(eip, c.get("labels", 0), *(c.get(k, 0) for k in kinds), c.get("claimed", 0))
                 for eip, c in sorted(counts.items())]
        print(f"{args.labels}: {store.n_structures()} structures")
        print(_table(rows) if len(rows) > 1 else "no labels yet")
    return 0


def cmd_labels_forget_stale(args) -> int:
    from eip2nn.labelling.store import LabelStore
    from eip2nn.potentials.db import PotentialsDB
    db = PotentialsDB(args.db)
    with LabelStore(args.labels) as store:
        eips = args.eip or sorted(store.counts())
        for eip in eips:
            if eip not in db.specs:
                print(f"{eip}: not in {db.folder}; its labels are kept")
                continue
            spec = db.get(eip)
            n = store.forget_stale(spec.id, spec.content_hash())
            if n or args.eip:
                print(f"{spec.id}: dropped {n} labels made with an older definition")
    return 0


def cmd_labels_failures(args) -> int:
    from eip2nn.labelling.store import LabelStore
    with LabelStore(args.labels) as store:
        rows = [("EIP", "structure", "first read as", "kind", "reason")]
        rows += [(f.eip_id, f.structure_hash, f.first_source, f.kind, f.reason) for f in store.failures(args.eip)]
    print(_table(rows) if len(rows) > 1 else "no failures recorded")
    return 0


def cmd_labels_export(args) -> int:
    from eip2nn.labelling.export import export_extxyz
    from eip2nn.labelling.store import LabelStore
    structures = _load_structures(args)
    with LabelStore(args.labels) as store:
        eips = args.eip or sorted(store.counts())
        path = export_extxyz(structures, store, eips, args.output)
    print(f"wrote {len(structures)} structures with labels of {len(eips)} EIP(s) to {path}")
    return 0


# -- scoring the EIPs against DFT -------------------------------------------------------
def cmd_score_eips(args) -> int:
    """Label a benchmark element (or the user's DFT files) with every eligible EIP; compare each with DFT."""
    from eip2nn.labelling.benchmark_job import label_against_dft, label_benchmark
    from eip2nn.labelling.engine import LabellingInterrupted
    try:
        if args.file:
            sources = _labelled_sources(args)
            structures = [a for s, _ in sources.values() for a in s]
            result = label_against_dft(structures, list(sources), args.source, args.labels, args.workers,
                                       not args.no_progress, scheduler=args.scheduler)
        else:
            result = label_benchmark(args.element, args.labels, workers=args.workers, progress=not args.no_progress,
                                     scheduler=args.scheduler)
    except LabellingInterrupted as e:
        print(e.report.table())
        return 130
    species = {el for a in structures for el in a.get_chemical_symbols()} if args.file else {args.element}
    print(f"\nLabelled {', '.join(result.datasets)} with {len(result.eligible)} eligible EIP(s).")
    for spec, why in result.excluded:
        if spec.supports(species):
            print(f"  excluded {spec.id}: {why}")
    print("\nAgreement with DFT (energies after per-element offsets; forces per component):")
    print(result.table())
    print("\n" + result.report.table())
    return 0


def cmd_run_deprecated(args) -> int:
    print("eip2nn: `eip2nn run` is deprecated; use `eip2nn score-eips` (same options)", file=sys.stderr)
    return cmd_score_eips(args)


# -- training and evaluation -----------------------------------------------------
def cmd_train(args) -> int:
    from eip2nn.training.config import load_stage_config
    from eip2nn.training.stages import run_stage
    cfg = load_stage_config(args.config, args.set)
    result = run_stage(cfg)
    print(result.table())
    print(f"model: {result.model_path}" + (f"   MLflow run: {result.run_id}" if result.run_id else ""))
    return 0


def cmd_evaluate(args) -> int:
    from eip2nn.evaluation import evaluate_eip, evaluate_model
    if bool(args.model) == bool(args.eip):
        raise SystemExit("give exactly one of --model REF or --eip ID")
    if not (args.dataset or args.file):
        raise SystemExit("give --dataset NAME and/or --file PATH to evaluate on")
    sources = _labelled_sources(args)
    if args.model:
        result = evaluate_model(args.model, sources, args.head, args.labels, args.workers)
    else:
        result = evaluate_eip(args.eip, sources, args.labels, args.workers)
    print(result.table())
    return 0


def cmd_export(args) -> int:
    from eip2nn.deploy.lammps import PAIR_FILE, export_for_lammps
    d = export_for_lammps(args.model, args.output, args.head, args.dtype, args.format, args.filter_spacing)
    m = d.metadata
    print(f"exported {args.model} (head {m['head']}, {m['backbone']}, {m['dtype']}, species {' '.join(d.species)}, "
          f"cut-off {m['cutoff']} Å, interaction range {m['interaction_range']} Å) to {args.output}")
    if "filter_table" in m:
        table = m["filter_table"]
        print(f"filters tabulated every {table['spacing']} Å for LAMMPS (largest relative error: values "
              f"{table['max_relative_error']['filter']:.1e}, r-derivatives {table['max_relative_error']['derivative']:.1e}"
              "; `pair_style eip2nn ... filter network` runs the network instead)")
    for item in m.get("blend", []):
        print(f"blend member {item['name']}: weight {item['weight']:.4g}, exported to "
              f"{Path(args.output) / item['folder']}")
    if m.get("committee", 1) > 1:
        print(f"a committee of {m['committee']} networks: the file gives their mean"
              + (", the descriptor computed once" if m.get("native_descriptor") else ""))
    if d.eip is not None:
        print(f"Δ-learning model: it runs on {d.eip.id} ({d.eip.backend.pair_style}) with pair_style hybrid/overlay")
    print(f"\nLAMMPS lines (units metal; atom types = {' '.join(d.species)}), also in "
          f"{Path(args.output) / PAIR_FILE} for `include`:\n")
    print("\n".join(d.commands()))
    return 0


def _md_start_frame(path: str, frame: int):
    """Frame `frame` of the file ASE reads at `path`; errors name the file and the frame."""
    from ase.io import read
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        frames = read(path, ":")
    except Exception as e:  # ASE's readers raise anything from a malformed file; say which one
        raise ValueError(f"{path}: ASE cannot read it ({type(e).__name__}: {e})") from e
    if not -len(frames) <= frame < len(frames):
        raise ValueError(f"{path} has {len(frames)} frame(s); there is no frame {frame}")
    return frames[frame]


def cmd_md(args) -> int:
    from eip2nn.deploy.lammps import EXPORT_INFO, export_for_lammps, load_deployment
    from eip2nn.deploy.md import run_md
    atoms = _md_start_frame(args.structure, args.frame)
    exported = None
    if (Path(args.model) / EXPORT_INFO).is_file():  # an `eip2nn export` folder
        deployment = load_deployment(args.model)
    else:  # a checkpoint, blend file or runs:/<id>: exported beside the trajectory, so the input file reruns
        output = Path(args.output)
        exported = output.with_name(output.stem + ".export")
        deployment = export_for_lammps(args.model, exported, args.head)
    try:
        result = run_md(deployment, atoms, args.temperature, args.steps, args.timestep, args.output,
                        args.every, args.ensemble, args.seed, progress=not args.no_progress)
    except ValueError as e:
        raise ValueError(f"{args.structure} frame {args.frame}: {e}") from None
    e = result.total_energies
    print(f"{result.steps} steps of {args.timestep} fs ({args.ensemble.upper()}, {args.temperature} K) of "
          f"{result.n_atoms} atoms from {args.structure} frame {args.frame}: {result.seconds:.1f} s, "
          f"{result.atom_steps_per_second:,.0f} atom-steps/s")
    drift = (f" (NVE drift {(e[-1] - e[0]) / result.n_atoms * 1e3:+.4f} meV/atom)"
             if args.ensemble == "nve" else "")
    print(f"temperature {result.temperatures[0]:.0f} -> {result.temperatures[-1]:.0f} K; total energy "
          f"{e[0]:.6f} -> {e[-1]:.6f} eV{drift}")
    print(f"trajectory: {result.trajectory} ({len(e)} frames); LAMMPS input: {result.input_file}"
          + (f"; the model as LAMMPS runs it: {exported}" if exported else ""))
    return 0


def _structure_set(source: str) -> list:
    """A registered dataset's structures, or those of a file ASE reads."""
    from eip2nn.data import get_dataset, load_dataset, read_structures
    try:
        get_dataset(source)
    except ValueError:  # not a registered name
        if not Path(source).is_file():
            raise SystemExit(f"{source}: neither a registered dataset (`eip2nn data list`) nor a file") from None
        return read_structures(source)
    return load_dataset(source)


def cmd_diagnose_lpr(args) -> int:
    import numpy as np
    from ase.io import write

    from eip2nn.calculator import EIP2NNCalculator
    from eip2nn.data import hide_dft_labels
    from eip2nn.diagnostics.lpr import local_prediction_rigidity
    from eip2nn.keys import GROUP, structure_name
    model = EIP2NNCalculator.load(args.model, args.head).model
    train, query = _structure_set(args.train), [hide_dft_labels(a) for a in _structure_set(args.structures)]
    result = local_prediction_rigidity(model, train, query, args.head, args.energy_weight, args.force_weight)
    print(f"model {args.model} (head {args.head}); Hessian from {args.train} ({len(train)} structures); "
          f"LPR of the atoms of {args.structures} ({len(query)} structures), 1/eV²")
    rows = [("structure", "group", "atoms", "median LPR", "min LPR")]
    for k, (atoms, lpr) in enumerate(zip(query, result.per_structure)):
        rows.append((structure_name(atoms, k), str(atoms.info.get(GROUP, "-")), str(len(atoms)),
                     f"{np.median(lpr):.3g}", f"{lpr.min():.3g}"))
    print(_table(rows))
    if args.output:
        for atoms, lpr in zip(query, result.per_structure):
            atoms.arrays["lpr"] = lpr
            atoms.info = {k: v for k, v in atoms.info.items() if isinstance(v, (str, int, float))}
        write(args.output, query, format="extxyz")
        print(f"wrote every atom's LPR (array 'lpr', 1/eV²) to {args.output}")
    return 0


def cmd_diagnose_adversarial(args) -> int:
    from eip2nn.diagnostics import adversarial_validation
    a, b = _structure_set(args.a), _structure_set(args.b)
    result = adversarial_validation(a, b, folds=args.folds, repeats=args.repeats, seed=args.seed)
    print(f"A = {args.a} ({len(a)} structures), B = {args.b} ({len(b)} structures)")
    print(result.table())
    for title, rows in ((f"structures of A that look most like B ({args.a})", result.most_b_like(a, args.top)),
                        (f"structures of B least like A ({args.b})", result.most_out_of_domain(b, args.top))):
        print(f"\n{title}:")
        for index, name, prob in rows:
            print(f"  {name} (#{index}): P(B) {prob:.2f}")
    return 0


def cmd_suggest(args) -> int:
    from ase.io import write

    from eip2nn.data import get_dataset, hide_dft_labels, load_dataset
    from eip2nn.diagnostics.suggest import suggest
    try:
        get_dataset(args.labelled)
        labelled, source = load_dataset(args.labelled), get_dataset(args.labelled).source_tag
    except ValueError:  # not a registered name: the user's DFT file
        if not Path(args.labelled).is_file():
            raise SystemExit(f"{args.labelled}: neither a registered dataset (`eip2nn data list`) nor a file") from None
        labelled, source = _read_labelled_file(args, args.labelled), args.source
    pool = [hide_dft_labels(a) for a in _structure_set(args.pool)]
    weights = {}
    for item in args.weight:
        name, _, value = item.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            raise SystemExit(f"--weight {item!r}: expected SIGNAL=NUMBER") from None
    model = None
    if args.model:
        from eip2nn.calculator import EIP2NNCalculator
        model = EIP2NNCalculator.load(args.model)
    species = sorted({s for a in labelled + pool for s in a.get_chemical_symbols()})
    result = suggest(labelled, pool, species, args.labels, source_tag=source, eips=args.eips, n_eips=args.n_eips,
                     model=model, weights=weights, seed=args.seed, workers=args.workers)
    k = min(args.n, len(pool))
    print(f"labelled: {args.labelled} ({len(labelled)} structures); pool: {args.pool} ({len(pool)} structures); "
          f"committee: {', '.join(result.eips)}")
    for note in result.notes:
        print(f"  {note}")
    print(result.table(k))
    chosen = []
    for rank, i in enumerate(result.picked[:k], start=1):
        atoms = pool[i].copy()
        atoms.info = {key: v for key, v in atoms.info.items() if isinstance(v, (str, int, float))}
        atoms.info.update(suggest_rank=rank, suggest_pool_index=i, suggest_acquisition=float(result.acquisition[i]))
        chosen.append(atoms)
    write(args.output, chosen, format="extxyz")
    print(f"wrote the top {k} to {args.output} (positions, cell, pbc; no labels): compute them with your DFT code")
    return 0


def _read_labelled_file(args, path: str) -> list:
    """The DFT-labelled structures of the user's file ``path`` (read as the data options say); frames left out
    (``--on-bad skip``) are printed."""
    from eip2nn.data.user import load_labelled_file
    structures, omitted = load_labelled_file(path, _user_data_options(args, path))
    for bad in omitted:
        print(f"left out: {bad}", file=sys.stderr)
    return structures


def _labelled_sources(args):
    """{name: (structures, source tag)} of the registered datasets and the user's files, in order."""
    from eip2nn.data import get_dataset, load_dataset
    out = {}
    for name in getattr(args, "dataset", None) or ():
        out[name] = (load_dataset(name), get_dataset(name).source_tag)
    for path in args.file or ():
        out[path] = (_read_labelled_file(args, path), args.source)
    return out


def cmd_init(args) -> int:
    from eip2nn.data.protocol import DataConfig
    from eip2nn.pipeline.guided_start import start_pipeline
    options = _user_data_options(args, args.train)
    data = DataConfig(train=args.train, test=args.test or "", test_fraction=args.test_fraction, format=args.format,
                      keys=options.keys, stress_units=args.stress_units, stress_sign=args.stress_sign,
                      on_bad=args.on_bad, source=args.source, labels=args.labels, workers=args.workers or 0)
    result = start_pipeline(data, args.name, args.workers)
    print(result.summary.table())
    for bad in result.summary.omitted:
        print(f"  left out: {bad}")
    print(f"\nEligible EIPs against your DFT labels ({result.summary.n_train} training structures; energies after "
          "per-element offsets, forces per component), best first:")
    print(result.eip_table() if result.scores else "  none")
    for eip, why in result.excluded:
        print(f"  excluded {eip}: {why}")
    for note in result.notes:
        print("note: " + note)
    out = Path(args.output or f"{result.pipeline.name}.yaml")
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} exists; give -o PATH or --overwrite")
    out.write_text(result.yaml_text(" ".join(["eip2nn", *sys.argv[1:]]) if sys.argv[1:2] == ["init"] else ""))
    print(f"\nwrote {out}: arms {result.pipeline.study.arms}, fractions {result.pipeline.study.fractions}, "
          f"seeds {result.pipeline.study.seeds}\nnext: eip2nn pipeline run {out}")
    return 0


def cmd_pipeline_run(args) -> int:
    from eip2nn.pipeline.config import load_pipeline
    from eip2nn.pipeline.runner import run_pipeline, summary_text
    cfg = load_pipeline(args.file, args.set)
    result = run_pipeline(cfg)
    print("\n" + summary_text(result))
    for n in result.notes:
        print("  note: " + n)
    print(f"\nwritten: {', '.join(str(p) for p in result.files.values())}")
    if result.run_id:
        print(f"MLflow parent run {result.run_id} in experiment {cfg.experiment!r}")
    print(f"wall time {result.wall_seconds:.0f} s")
    if result.failed:
        print(f"{len(result.failed)} cell(s) failed; see {result.files['table_md']}", file=sys.stderr)
        return 1
    return 0


def cmd_pipeline_report(args) -> int:
    from eip2nn.pipeline.config import load_pipeline
    from eip2nn.pipeline.runner import report_so_far, summary_text
    result = report_so_far(load_pipeline(args.file, args.set), log=lambda s: None)
    print(summary_text(result) if result.rows else "no cell has finished yet")
    for n in result.notes:
        print("  note: " + n)
    print(f"\nwritten: {', '.join(str(p) for p in result.files.values())}")
    return 0


def cmd_pipeline_config(args) -> int:
    from eip2nn.pipeline.config import load_pipeline
    print(load_pipeline(args.file, args.set).to_yaml(), end="")
    return 0


def cmd_sweep(args) -> int:
    from eip2nn.sweep.config import load_sweep
    from eip2nn.sweep.runner import run_sweep
    sweep = load_sweep(args.file, args.set)
    result = run_sweep(sweep, n_trials=args.n_trials, storage=args.storage)
    print(result.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:  # long by design: every command's options in one table, like --help
    p = argparse.ArgumentParser(prog="eip2nn", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def add_db(q):
        q.add_argument("--db", help="potentials_db folder (default: the repo's potentials_db/ or "
                                    "$EIP2NN_POTENTIALS_DB)")

    def add_sources(q):
        q.add_argument("--dataset", action="append", help="registered dataset, e.g. mlearn/Si/train")
        q.add_argument("--file", action="append", help="any structure file ASE reads (extxyz, ...)")

    data = sub.add_parser("data", help="reference datasets").add_subparsers(dest="sub", required=True)
    data.add_parser("list", help="registered datasets").set_defaults(func=cmd_data_list)
    q = data.add_parser("fetch", help="resolve (mirror, cache or download) and verify datasets")
    q.add_argument("names", nargs="+")
    q.set_defaults(func=cmd_data_fetch)
    q = data.add_parser("export", help="write a registered dataset as extxyz with its DFT labels (as your own file)")
    q.add_argument("name", help="e.g. mlearn/Si/train")
    q.add_argument("-o", "--output", required=True, help="extxyz file to write")
    q.set_defaults(func=cmd_data_export)

    pot = sub.add_parser("potentials", help="the EIP registry").add_subparsers(dest="sub", required=True)
    q = pot.add_parser("list", help="table of EIPs")
    q.add_argument("--species", nargs="+", help="only EIPs supporting all these elements")
    q.add_argument("--backend", choices=("kim", "lammps"))
    q.add_argument("--exclude-fitted-to", nargs="+", metavar="TAG")
    add_db(q)
    q.set_defaults(func=cmd_potentials_list)
    q = pot.add_parser("check", help="energy/atom, lattice constant and speed on ground-state crystals")
    q.add_argument("ids", nargs="+")
    add_db(q)
    q.set_defaults(func=cmd_potentials_check)
    q = pot.add_parser("discover", help="installed OpenKIM portable models for given species")
    q.add_argument("--species", nargs="+", required=True)
    q.add_argument("--write", metavar="DIR", help="write a potentials_db entry per model into DIR")
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=cmd_potentials_discover)

    q = sub.add_parser("label", help="label structures with EIPs into a label store")
    add_sources(q)
    q.add_argument("--eip", nargs="+", help="EIP ids (default: every eligible EIP)")
    q.add_argument("--exclude-fitted-to", default="mlearn", metavar="TAG",
                   help="with the default EIP choice, skip EIPs fitted to this data (default: mlearn)")
    _add_labels_option(q)
    q.add_argument("--workers", type=int, help="worker processes (default: all cores)")
    q.add_argument("--chunk-size", type=int, help="structures per unit of work")
    q.add_argument("--retry-failed", action="store_true",
                   help="try recorded failures (crashes included) of these EIPs again")
    q.add_argument("--local-energies", action="store_true",
                   help="also evaluate again structures labelled before the store kept per-atom energies "
                        "(label store schema 2 and older), to add theirs")
    q.add_argument("--scheduler", metavar="ADDRESS",
                   help="label on a Dask cluster: its scheduler's address, e.g. tcp://host:8786 "
                        "(default: local worker processes)")
    q.add_argument("--no-progress", action="store_true")
    add_db(q)
    q.set_defaults(func=cmd_label)

    q = sub.add_parser("generate", help="new unlabelled structures from seed structures: LAMMPS MD, strains, "
                                        "vacancies, rattling (extxyz with provenance)")
    add_sources(q)
    q.add_argument("--select", type=int, help="use this many randomly chosen seed structures (default: all)")
    q.add_argument("-o", "--output", required=True, help="extxyz file to write")
    from eip2nn.generate.generator import GenerateConfig
    _add_dataclass_options(q, GenerateConfig)
    q.set_defaults(func=cmd_generate)

    lab = sub.add_parser("labels", help="inspect a label store").add_subparsers(dest="sub", required=True)
    q = lab.add_parser("alignments", help="per-EIP energy offsets to DFT fitted by weak-supervision runs")
    _add_labels_option(q)
    q.add_argument("--eip")
    q.set_defaults(func=cmd_labels_alignments)
    q = lab.add_parser("summary", help="labels and failures per EIP")
    _add_labels_option(q)
    q.set_defaults(func=cmd_labels_summary)
    q = lab.add_parser("forget-stale", help="drop labels made with an older definition of an EIP (it changed since)")
    _add_labels_option(q)
    q.add_argument("--eip", action="append", help="EIP id (repeatable); default: every EIP in the store")
    add_db(q)
    q.set_defaults(func=cmd_labels_forget_stale)
    q = lab.add_parser("failures", help="every recorded failure with its reason")
    _add_labels_option(q)
    q.add_argument("--eip")
    q.set_defaults(func=cmd_labels_failures)
    q = lab.add_parser("export", help="write structures with their EIP labels as extxyz")
    add_sources(q)
    _add_labels_option(q)
    q.add_argument("--eip", nargs="+")
    q.add_argument("-o", "--output", required=True)
    q.set_defaults(func=cmd_labels_export)

    for name, func, text in (
            ("score-eips", cmd_score_eips, "label a benchmark element (or your DFT files) with every eligible EIP "
                                           "and compare each with DFT"),
            ("run", cmd_run_deprecated, "deprecated: the old name of score-eips")):
        q = sub.add_parser(name, help=text, description=text)
        q.add_argument("--element", default="Si", help="mlearn element (without --file)")
        q.add_argument("--file", action="append", help="your DFT file(s) instead of the benchmark (repeatable)")
        _add_user_data_options(q)
        _add_labels_option(q)
        q.add_argument("--workers", type=int)
        q.add_argument("--scheduler", metavar="ADDRESS", help="label on a Dask cluster (tcp://host:8786)")
        q.add_argument("--no-progress", action="store_true")
        q.set_defaults(func=func)

    q = sub.add_parser("train", help="run one training stage (baseline, pretrain, finetune) from a YAML config")
    q.add_argument("config", help="stage config YAML, e.g. pipelines/stages/si_baseline.yaml")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=50 (repeatable)")
    q.set_defaults(func=cmd_train)

    pipe = sub.add_parser("pipeline", help="whole studies: arms x DFT fractions x seeds").add_subparsers(
        dest="sub", required=True)
    for name, func, text in (("run", cmd_pipeline_run, "run (or resume) a pipeline end to end"),
                             ("report", cmd_pipeline_report, "the tables of the stages finished so far, without "
                              "training (a running or interrupted pipeline), in <output>/so_far/"),
                             ("config", cmd_pipeline_config, "print the resolved pipeline config")):
        q = pipe.add_parser(name, help=text)
        q.add_argument("file", help="pipeline YAML, e.g. pipelines/si_quick.yaml")
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set study.seeds=[0] (repeatable)")
        q.set_defaults(func=func)

    q = sub.add_parser("sweep", help="tune a pipeline's knobs with Optuna (several processes may share a study)")
    q.add_argument("file", help="sweep YAML, e.g. pipelines/sweeps/si_weak_alpha.yaml")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a sweep value")
    q.add_argument("--n-trials", type=int, help="trials for this process (default: the file's n_trials); 0: none, "
                   "only write best.yaml from the trials in storage")
    q.add_argument("--storage", help="Optuna storage URL (default: the file's, else sqlite under mlruns/)")
    q.set_defaults(func=cmd_sweep)

    q = sub.add_parser("evaluate", help="score a model or an EIP on dataset splits against DFT")
    q.add_argument("--model", help="checkpoint path, runs:/<MLflow run id>, a blend file (*.blend.json) or a snap "
                                   "stage's snap_model.json")
    q.add_argument("--head", default="dft", help="model head to score (default: dft)")
    q.add_argument("--eip", help="potentials_db id of an EIP to score instead of a model")
    q.add_argument("--dataset", action="append", help="registry name, e.g. mlearn/Si/test")
    q.add_argument("--file", action="append", help="your DFT file with energies and forces (repeatable)")
    _add_user_data_options(q)
    _add_labels_option(q, "label store for --eip")
    q.add_argument("--workers", type=int)
    q.set_defaults(func=cmd_evaluate)

    q = sub.add_parser("export", help="a trained model for LAMMPS: TorchScript file and the pair_style lines")
    q.add_argument("--model", required=True, help="checkpoint path, runs:/<MLflow run id> or a blend file "
                                                  "(*.blend.json)")
    q.add_argument("-o", "--output", required=True, help="folder to write (model.pt, pair.lmp, export.json)")
    q.add_argument("--head", default="dft", help="model head to export (default: dft)")
    q.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="float64 (default: the model to round-off) or float32 (1.5-3x faster in LAMMPS, ~1e-6 relative)")
    q.add_argument("--format", choices=["auto", "torchscript", "mliap"], default="auto",
                   help="torchscript (and auto, the default): pair_style eip2nn, the plugin (every model); mliap: "
                        "LAMMPS's own ML-IAP network, no plugin (bispectrum models with tanh or sigmoid layers, "
                        "float64; slower)")
    q.add_argument("--filter-spacing", type=float, default=None, metavar="Å",
                   help="SchNet: tabulate the filters every this many Å for LAMMPS, in quintic Hermite pieces (default 0.02: "
                        "forces within ~1e-8 eV/Å of the network's; 0: no table, the plugin runs the filter network)")
    q.set_defaults(func=cmd_export)

    q = sub.add_parser("md", help="molecular dynamics of a trained model in LAMMPS (pair_style eip2nn); "
                                  "trajectory as extxyz")
    q.add_argument("--model", required=True, help="an `eip2nn export` folder, a checkpoint path, runs:/<id> or a "
                                                  "blend file (*.blend.json)")
    q.add_argument("--head", default="dft", help="model head, for a checkpoint (default: dft)")
    q.add_argument("--structure", required=True, help="start structure (any file ASE reads; periodic)")
    q.add_argument("--frame", type=int, default=0, help="frame of --structure to start from (default: 0)")
    q.add_argument("--temperature", type=float, required=True, help="K")
    q.add_argument("--steps", type=int, required=True)
    q.add_argument("--timestep", type=float, default=1.0, help="fs (default: 1)")
    q.add_argument("--ensemble", choices=["nvt", "nve"], default="nvt",
                   help="nvt: Nosé–Hoover at --temperature; nve: velocities drawn at --temperature (default: nvt)")
    q.add_argument("--every", type=int, default=10, help="steps between frames written (default: 10)")
    q.add_argument("--seed", type=int, default=0, help="seeds the initial velocities")
    q.add_argument("-o", "--output", default="md.extxyz", help="trajectory (extxyz); the LAMMPS input is written beside it")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=cmd_md)

    diag = sub.add_parser("diagnose", help="diagnostics of data sets").add_subparsers(dest="sub", required=True)
    q = diag.add_parser("adversarial", help="can a classifier tell set B (a test set, a pool) from set A "
                                            "(training)? ROC AUC, and the structures that differ")
    q.add_argument("a", help="set A: a registered dataset (mlearn/Si/train) or a structure file")
    q.add_argument("b", help="set B: the same kinds")
    q.add_argument("--folds", type=int, default=5)
    q.add_argument("--repeats", type=int, default=3)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--top", type=int, default=5, help="structures to list on each side (default: 5)")
    q.set_defaults(func=cmd_diagnose_adversarial)
    q = diag.add_parser("lpr", help="local prediction rigidity of each atom's energy: how firmly the training "
                                    "structures pin it down (last-layer approximation)")
    q.add_argument("--model", required=True, help="checkpoint path or runs:/<MLflow run id>")
    q.add_argument("train", help="the structures the head was trained on: a registered dataset or a file")
    q.add_argument("structures", help="the structures whose atoms to score: a registered dataset or a file")
    q.add_argument("--head", default="dft")
    q.add_argument("--energy-weight", type=float, default=1.0, help="train.energy_weight of the training")
    q.add_argument("--force-weight", type=float, default=0.1, help="train.force_weight of the training")
    q.add_argument("-o", "--output", help="extxyz with each atom's LPR as the array 'lpr' (e.g. for OVITO)")
    q.set_defaults(func=cmd_diagnose_lpr)

    q = sub.add_parser("suggest", help="which unlabelled structures to compute next with DFT: EIP committee "
                                       "disagreement, out-of-domain score, model gap; writes the top N as extxyz")
    q.add_argument("labelled", help="your DFT-labelled structures: a registered dataset or a DFT file")
    q.add_argument("pool", help="unlabelled candidates: a registered dataset or a structure file (labels ignored)")
    q.add_argument("--n", type=int, default=10, help="structures to suggest (default: 10)")
    q.add_argument("-o", "--output", default="suggested.extxyz")
    q.add_argument("--model", help="a trained model (checkpoint or runs:/<id>) for the model-gap signal")
    q.add_argument("--eips", nargs="+", help="the EIP committee (default: the --n-eips closest to DFT)")
    q.add_argument("--n-eips", type=int, default=4)
    q.add_argument("--weight", action="append", default=[], metavar="SIGNAL=W",
                   help="weight of a signal: committee_energy, committee_force, energy_novelty, pool_density, "
                        "out_of_domain, model_gap, model_spread (default 1 each; energy_novelty and pool_density "
                        "0; 0 drops it)")
    q.add_argument("--seed", type=int, default=0)
    _add_user_data_options(q)
    _add_labels_option(q)
    q.add_argument("--workers", type=int)
    q.set_defaults(func=cmd_suggest)

    q = sub.add_parser("init", help="inspect your DFT files, score the eligible EIPs on them, write a pipeline YAML")
    q.add_argument("train", help="your DFT training file (extxyz, OUTCAR, vasprun.xml, ASE db, mlearn JSON, ...)")
    q.add_argument("--test", help="your DFT test file (default: hold out --test-fraction of the training file)")
    q.add_argument("--test-fraction", type=float, default=0.1)
    q.add_argument("-o", "--output", help="pipeline YAML to write (default: <training file name>.yaml)")
    q.add_argument("--overwrite", action="store_true")
    q.add_argument("--name", default="", help="pipeline name (default: from the training file's name)")
    _add_user_data_options(q)
    _add_labels_option(q)
    q.add_argument("--workers", type=int)
    q.set_defaults(func=cmd_init)
    return p


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print one line (set EIP2NN_DEBUG=1 for the traceback)."""
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # kill = Ctrl-C: save, then stop
    try:
        return args.func(args)
    except (FileNotFoundError, KeyError, ValueError, StaleLabelsError, FloatingPointError) as e:  # ConfigError is a ValueError
        if os.environ.get("EIP2NN_DEBUG"):
            raise
        print(f"eip2nn: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
