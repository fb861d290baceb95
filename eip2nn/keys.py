"""Names of every per-structure quantity eip2nn stores on an ``ase.Atoms``.

Units are fixed at the boundary and never change inside the package:
energies in eV, lengths in Å, forces in eV/Å, stress in eV/Å³ in ASE's Voigt
order (xx, yy, zz, yz, xz, xy) with ASE's sign (positive = tensile).

Reference (DFT) labels live under explicit keys, never only on ``atoms.calc``.
EIP labels use the same suffixes behind the EIP's id (see :func:`eip_key`).
"""

# Reference (DFT) labels ------------------------------------------------------
REF_ENERGY = "REF_energy"  # atoms.info, float, total energy, eV
REF_FORCES = "REF_forces"  # atoms.arrays, (n_atoms, 3), eV/Å
REF_STRESS = "REF_stress"  # atoms.info, (6,), Voigt, eV/Å³, positive = tensile

# Weak (pseudo-DFT) labels, from the EIP the selector chose ---------------------
WEAK_ENERGY = "WEAK_energy"  # atoms.info, float, the chosen EIP's energy aligned to DFT, eV
WEAK_FORCES = "WEAK_forces"  # atoms.arrays, (n_atoms, 3), that EIP's forces, eV/Å
WEAK_SOURCE = "WEAK_source"  # atoms.info, str, the chosen EIP's id, or "none" (no weak label)

# Metadata --------------------------------------------------------------------
DATASET = "dataset"  # atoms.info, str, registry name of the source dataset
CONFIG_ID = "config_id"  # atoms.info, str, stable id "<dataset>/<split>/<index>"
GROUP = "group"  # atoms.info, str, e.g. "AIMD-NVT", "Vacancy", "Surface", "Elastic"
DESCRIPTION = "description"  # atoms.info, str, free text from the source
STRUCTURE_HASH = "structure_hash"  # atoms.info, str, see labelling.hashing
CONFIG_TYPE = "config_type"  # atoms.info in extxyz files, str: GROUP under the name other codes read and write

# Provenance of a generated structure (``eip2nn generate``) ---------------------
GEN_METHOD = "gen_method"  # atoms.info, str, "md" | "strain" | "vacancy" | "rattle"
GEN_SEED_STRUCTURE = "gen_seed_structure"  # atoms.info, str, the seed structure's name (see structure_name)
GEN_RNG_SEED = "gen_rng_seed"  # atoms.info, int, the generate config's seed
GEN_PARAMS = "gen_params"  # atoms.info, str, JSON of the method's parameters (units in their names: _K, _fs, _A)
GEN_VERSION = "gen_eip2nn_version"  # atoms.info, str, the eip2nn version that made it

# Quantities an EIP provides -------------------------------------------------
ENERGY = "energy"  # float, eV
FORCES = "forces"  # (n_atoms, 3), eV/Å
STRESS = "stress"  # (6,), Voigt, eV/Å³, positive = tensile
LOCAL_ENERGIES = "local_energies"  # (n_atoms,), eV, each atom's share of the energy (atoms.arrays)
QUANTITIES = (ENERGY, FORCES, STRESS, LOCAL_ENERGIES)
FAILURE = "failure"  # suffix of eip_failure_key: atoms.info, str, "<failure kind>: <reason>"


def eip_key(eip_id: str, quantity: str) -> str:
    """Key under which one EIP's label is stored, e.g. ``"SW_Si_kim_energy"``."""
    if quantity not in QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; expected one of {QUANTITIES}")
    return f"{eip_id}_{quantity}"


def eip_failure_key(eip_id: str) -> str:
    """Key under which an EIP's failure on a structure is stored, e.g. ``"SW_Si_kim_failure"``."""
    return f"{eip_id}_{FAILURE}"


def structure_name(atoms, index: int, unnamed: str = "structure") -> str:
    """A structure's name in messages: its CONFIG_ID, else ``"<unnamed> <index>"`` (its place in its list)."""
    return str(atoms.info.get(CONFIG_ID, f"{unnamed} {index}"))
