"""The data protocol: train/validation/test and which DFT labels an arm may see.

The dataset's training file is split once into train and validation parts
(seeded). A DFT fraction f keeps the DFT labels of a nested, seeded f-subset
of each part and *removes* them from every other structure, which becomes
unlabelled; so no code downstream can see a hidden label by mistake. The
test file is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ase import Atoms

from eip2nn.data import get_dataset, hide_dft_labels, load_dataset
from eip2nn.data.splits import nested_fractions, train_val_split
from eip2nn.keys import REF_ENERGY


@dataclass
class DataConfig:
    dataset: str = "mlearn/Si"  # registry prefix; "<dataset>/train" and "<dataset>/test" are used
    dft_fraction: float = 1.0  # share of the training file whose DFT labels may be used, (0, 1]
    val_fraction: float = 0.1  # share of the training file held out for validation
    split_seed: int = 0  # seeds the train/validation split and the fraction subsets
    labels: str = "outputs/labels.sqlite"  # EIP label store (pretrain, replay)
    eips: list[str] = field(default_factory=list)  # EIP ids for pretraining; empty = choose automatically
    n_eips: int = 3  # automatic choice: the n eligible EIPs closest to DFT on the labelled structures
    workers: int = 0  # labelling worker processes; 0 = all cores

    def __post_init__(self):
        if not 0.0 < self.dft_fraction <= 1.0:
            raise ValueError(f"data.dft_fraction must be in (0, 1], got {self.dft_fraction}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class Split:
    train: list[Atoms]  # training part; DFT labels only on the labelled ones
    val: list[Atoms]  # validation part; likewise
    test: list[Atoms]  # the dataset's test file, all labelled
    source_tag: str  # where the DFT data comes from (leakage checks)
    species: list[str] = field(default_factory=list)

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
    train_name, test_name = f"{cfg.dataset}/train", f"{cfg.dataset}/test"
    structures, test = load_dataset(train_name), load_dataset(test_name)
    tr, va = train_val_split(len(structures), cfg.val_fraction, cfg.split_seed)
    train = _keep_fraction([structures[i] for i in tr], cfg.dft_fraction, cfg.split_seed)
    val = _keep_fraction([structures[i] for i in va], cfg.dft_fraction, cfg.split_seed + 1)
    species = sorted({s for a in structures + test for s in a.get_chemical_symbols()})
    return Split(train, val, test, get_dataset(train_name).source_tag, species)
