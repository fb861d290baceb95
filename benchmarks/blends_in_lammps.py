"""Does every `auto` blend file a pipeline wrote run in LAMMPS, and give what `BlendCalculator` gives?

For each blend file (``outputs/pipelines/<name>/auto/*.blend.json``): `eip2nn export` into a temporary folder,
then one mlearn test cell of the pipeline's element (test set index 1) through LAMMPS (the exported lines, ASE's
LAMMPSlib) and through ``eip2nn.calculator.BlendCalculator`` (the members as trained, their EIPs through the
KIM-API or LAMMPS). Prints |ΔE| (eV) and max |ΔF| (eV/Å) per file, the sub-styles, and the files refused with
the reason (a member's EIP without a LAMMPS form).

    python benchmarks/blends_in_lammps.py                     # si-full mo-full cu-full ni-full, those present
    python benchmarks/blends_in_lammps.py cu-full
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import yaml

from eip2nn.calculator import load_calculator
from eip2nn.data import load_dataset
from eip2nn.deploy.lammps import export_for_lammps
from eip2nn.potentials.lammps_backend import import_lammps

ROOT = Path(__file__).resolve().parents[1]


def lammps_calculator(lines: list[str], element: str):
    """ASE's LAMMPSlib running the exported ``lines`` for one element."""
    import_lammps()  # the MPI library first
    from ase.calculators.lammpslib import LAMMPSlib
    return LAMMPSlib(lmpcmds=lines, atom_types={element: 1}, keep_alive=True)


def element_of(pipeline: Path) -> str:
    """The element of a pipeline folder's own mlearn dataset (its pipeline.yaml)."""
    dataset = yaml.safe_load((pipeline / "pipeline.yaml").read_text())["data"]["dataset"]
    return dataset.split("/")[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", default=["si-full", "mo-full", "cu-full", "ni-full"])
    p.add_argument("--outputs", default=str(ROOT / "outputs" / "pipelines"))
    args = p.parse_args()
    ran, refused, worst_e, worst_f = 0, [], 0.0, 0.0
    for name in args.names:
        folder = Path(args.outputs) / name
        if not (folder / "auto").is_dir():
            continue
        element = element_of(folder)
        atoms = load_dataset(f"mlearn/{element}/test")[1]
        for path in sorted((folder / "auto").glob("*.blend.json")):
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    lines = export_for_lammps(path, Path(tmp) / "export").commands()
                    a, b = atoms.copy(), atoms.copy()
                    a.calc, b.calc = load_calculator(path), lammps_calculator(lines, element)
                    de = abs(a.get_potential_energy() - b.get_potential_energy())
                    df = float(np.abs(a.get_forces() - b.get_forces()).max())
            except ValueError as exc:
                refused.append(f"{name}/{path.name}: {str(exc).splitlines()[0]}")
                print(f"{name} {path.name}: refused", flush=True)
                continue
            ran, worst_e, worst_f = ran + 1, max(worst_e, de), max(worst_f, df)
            styles = lines[1].split(maxsplit=2)[2]
            print(f"{name} {path.name}: |dE| {de:.1e} eV, max |dF| {df:.1e} eV/Å  ({styles})", flush=True)
    print(f"\n{ran} of {ran + len(refused)} blend files run in LAMMPS; largest |dE| {worst_e:.1e} eV, "
          f"max |dF| {worst_f:.1e} eV/Å against BlendCalculator")
    for line in refused:
        print("refused:", line)


if __name__ == "__main__":
    main()
