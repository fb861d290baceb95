"""Reference DFT data: registry, readers and index splits."""

from .readers import (hide_dft_labels, mlearn_virial_to_ase_stress, read_extxyz, read_extxyz_from_tar,
                      read_mlearn_json, read_structures)
from .registry import (
    ChecksumError,
    DataFile,
    DataUnavailableError,
    Dataset,
    get_dataset,
    list_datasets,
    load_dataset,
    resolve,
)
from .splits import nested_fractions, train_val_split

__all__ = [
    "ChecksumError",
    "DataFile",
    "DataUnavailableError",
    "Dataset",
    "get_dataset",
    "hide_dft_labels",
    "list_datasets",
    "load_dataset",
    "mlearn_virial_to_ase_stress",
    "nested_fractions",
    "read_extxyz",
    "read_extxyz_from_tar",
    "read_structures",
    "read_mlearn_json",
    "resolve",
    "train_val_split",
]
