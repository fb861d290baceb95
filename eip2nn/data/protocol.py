"""The data protocol: train/validation/test and which DFT labels an arm may see.

The data is a registered benchmark (``data.dataset``) or the user's own files
(``data.train``, optionally ``data.test``; without a test file a seeded share
of the training file is held out as the test set). The training structures
are split once into train and validation parts (seeded). A DFT fraction f
keeps the DFT labels of a nested, seeded f-subset of each part and *removes*
them from every other structure, which becomes unlabelled; so no code
downstream can see a hidden label by mistake. The test set is never touched.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

from ..keys import REF_ENERGY
from .checks import ON_BAD
from .files import STRESS_SIGNS, STRESS_UNITS, BadFrame, DataKeys
from .readers import hide_dft_labels
from .registry import get_dataset, load_dataset
from .splits import nested_fractions, train_val_split
from .user import UserDataOptions, load_user_data


@dataclass
class DataConfig:
    dataset: str = "mlearn/Si"  # registry prefix ("<dataset>/train", "<dataset>/test"); unused with data.train
    train: str = ""  # the user's DFT training file (any format ASE reads, or mlearn JSON); replaces dataset
    test: str = ""  # the user's DFT test file; "" = hold out test_fraction of the training file
    test_fraction: float = 0.1  # without data.test: share of the training file held out as the test set
    test_seed: int = 0  # seeds that held-out test split (one test set for every seed of a study)
    format: str = ""  # ASE format name of the files; "" = guess from the file name
    keys: DataKeys = field(default_factory=DataKeys)  # names of energy, forces, stress, virial, group in the files
    stress_units: str = "eV/A^3"  # units of the files' stress: eV/A^3 | GPa | kbar | bar (virial: always eV)
    stress_sign: str = "tensile"  # "tensile" (ASE: positive = tensile) | "compressive" (VASP: positive = compressive)
    on_bad: str = "error"  # a bad frame: "error" (stop, naming file, frame, problem) | "skip" (leave out, listed)
    source: str = ""  # a tag naming where the data comes from: EIPs with it in fitted_to are refused
    dft_fraction: float = 1.0  # share of the training file whose DFT labels may be used, (0, 1]
    val_fraction: float = 0.1  # share of the training file held out for validation
    split_seed: int = 0  # seeds the train/validation split and the fraction subsets
    labels: str = "outputs/labels.sqlite"  # EIP label store (pretrain, replay)
    eips: list[str] = field(default_factory=list)  # EIP ids for pretraining; empty = choose automatically
    n_eips: int = 3  # automatic choice: the n eligible EIPs closest to DFT on the labelled structures
    workers: int = 0  # labelling worker processes; 0 = all cores
    scheduler: str = ""  # a Dask scheduler address ("tcp://host:8786") to label on; "" = local worker processes

    def __post_init__(self):
        if not 0.0 < self.dft_fraction <= 1.0:
            raise ValueError(f"data.dft_fraction must be in (0, 1], got {self.dft_fraction}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.on_bad not in ON_BAD:
            raise ValueError(f"data.on_bad must be one of {ON_BAD}, got {self.on_bad!r}")
        if self.stress_units not in STRESS_UNITS:
            raise ValueError(f"data.stress_units must be one of {list(STRESS_UNITS)}, got {self.stress_units!r}")
        if self.stress_sign not in STRESS_SIGNS:
            raise ValueError(f"data.stress_sign must be one of {STRESS_SIGNS}, got {self.stress_sign!r}")
        if self.test and not self.train:
            raise ValueError("data.test needs data.train (the registered datasets bring their own test file)")

    @property
    def is_files(self) -> bool:
        """True for the user's own files, False for a registered dataset."""
        return bool(self.train)

    @property
    def name(self) -> str:
        """A short name of the data: the registered dataset, or the training file's name."""
        return Path(self.train).name if self.train else self.dataset

    @property
    def options(self) -> UserDataOptions:
        return UserDataOptions(self.keys, self.stress_units, self.stress_sign, self.format, self.on_bad,
                               self.test_fraction, self.test_seed)

    EXECUTION_FIELDS = ("scheduler",)  # never in a stage's hash: where labels are computed, not what they are
    # fields added after stage hashes were first written: left out of a stage's hash while at their default,
    # so finished stages of registered datasets keep being reused
    LATE_FIELDS = ("train", "test", "test_fraction", "test_seed", "format", "keys", "stress_units", "stress_sign",
                   "on_bad", "source")


@dataclass
class Split:
    train: list[Atoms]  # training part; DFT labels only on the labelled ones
    val: list[Atoms]  # validation part; likewise
    test: list[Atoms]  # the dataset's test file, all labelled
    source_tag: str  # where the DFT data comes from (leakage checks)
    species: list[str] = field(default_factory=list)
    omitted: list[BadFrame] = field(default_factory=list)  # bad frames left out (data.on_bad: skip)
    hashes: dict[str, str] = field(default_factory=dict)  # sha256 of the data files and contents (MLflow tags)
    test_note: str = "the dataset's own test file"

    @staticmethod
    def labelled(structures: list[Atoms]) -> list[Atoms]:
        return [a for a in structures if REF_ENERGY in a.info]

    @staticmethod
    def unlabelled(structures: list[Atoms]) -> list[Atoms]:
        return [a for a in structures if REF_ENERGY not in a.info]


def _keep_fraction(structures: list[Atoms], fraction: float, seed: int) -> list[Atoms]:
    if not structures:
        return []
    keep = set(nested_fractions(len(structures), [fraction], seed)[fraction].tolist())
    return [a if i in keep else hide_dft_labels(a) for i, a in enumerate(structures)]


def make_split(cfg: DataConfig) -> Split:
    """The split of ``cfg``. User files are checked first, their elements against :func:`candidate_species`."""
    if cfg.is_files:
        data = load_user_data(cfg.train, cfg.test, cfg.options, candidate_species())
        structures, test, omitted, test_note = data.train, data.test, data.omitted, data.test_note
        source_tag = cfg.source
        hashes = {f"{split}_file_sha256": sha for split, sha in data.sha256.items()}
        hashes.update({f"{split}_content_sha256": sha for split, sha in data.content_sha256.items()})
    else:
        train_name, test_name = f"{cfg.dataset}/train", f"{cfg.dataset}/test"
        structures, test = load_dataset(train_name), load_dataset(test_name)
        omitted, test_note = [], "the dataset's own test file"
        source_tag = get_dataset(train_name).source_tag
        if cfg.source and cfg.source != source_tag:
            raise ValueError(f"data.source {cfg.source!r}: the registered dataset {cfg.dataset} is {source_tag!r} "
                             "data; data.source applies to your own files (data.train)")
        hashes = {f"{split}_{key}_sha256": datafile.sha256 for split in ("train", "test")
                  for key, datafile in get_dataset(f"{cfg.dataset}/{split}").files.items()}
    tr, va = train_val_split(len(structures), cfg.val_fraction, cfg.split_seed)
    train = _keep_fraction([structures[i] for i in tr], cfg.dft_fraction, cfg.split_seed)
    val = _keep_fraction([structures[i] for i in va], cfg.dft_fraction, cfg.split_seed + 1)
    species = sorted({s for a in structures + test for s in a.get_chemical_symbols()})
    return Split(train, val, test, source_tag, species, omitted, hashes, test_note)


def candidate_species() -> frozenset[str]:
    """Every element some empirical potential (registered or installed) supports; once per registry folder."""
    from eip2nn.potentials.db import db_folder
    return _candidate_species(str(db_folder()))


@functools.lru_cache(maxsize=4)
def _candidate_species(folder: str) -> frozenset[str]:
    from eip2nn.potentials.db import PotentialsDB
    return frozenset(el for spec in PotentialsDB(folder) if spec.kind == "empirical" for el in spec.species)
