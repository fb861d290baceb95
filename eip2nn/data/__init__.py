"""DFT data: the registry of reference sets, readers, a user's own files and their checks, splits, the protocol."""

from .checks import CheckedData, check_dft_data, close_pairs, structure_fingerprints
from .files import STRESS_UNITS, BadFrame, DataError, DataKeys, FileData, read_dft_file
from .readers import (
    hide_dft_labels,
    mlearn_virial_to_ase_stress,
    read_extxyz,
    read_extxyz_from_tar,
    read_mlearn_json,
    read_structures,
)
from .registry import ChecksumError, DataFile, Dataset, DataUnavailableError, get_dataset, list_datasets, load_dataset, resolve
from .splits import nested_fractions, train_val_split

__all__ = [
    "BadFrame",
    "CheckedData",
    "ChecksumError",
    "DataError",
    "DataFile",
    "DataKeys",
    "DataUnavailableError",
    "Dataset",
    "FileData",
    "STRESS_UNITS",
    "check_dft_data",
    "close_pairs",
    "get_dataset",
    "hide_dft_labels",
    "list_datasets",
    "load_dataset",
    "mlearn_virial_to_ase_stress",
    "nested_fractions",
    "read_dft_file",
    "read_extxyz",
    "read_extxyz_from_tar",
    "read_structures",
    "read_mlearn_json",
    "resolve",
    "structure_fingerprints",
    "train_val_split",
]
