"""Registry of the reference DFT datasets: where each file comes from and how to read it.

A file is looked up, in order, in the mirror folder(s) named by ``$EIP2NN_DATA_DIR``
(``os.pathsep``-separated, each laid out like the upstream-relative ``relpath``),
then in the user cache (``$EIP2NN_CACHE_DIR`` or ``~/.cache/eip2nn/data``), and only
then downloaded into the cache. Every file found is checked against its pinned sha256.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ase import Atoms

from . import readers

DATA_DIR_ENV = "EIP2NN_DATA_DIR"
CACHE_DIR_ENV = "EIP2NN_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/eip2nn/data")

SOURCE_TAG = "mlearn"  # origin of the DFT data; potentials fitted to it list it in `fitted_to`
ELEMENTS = ("Si", "Mo", "Ge", "Li", "Cu", "Ni")
SPLITS = ("train", "test")

_MLEARN_COMMIT = "10c427a5480c6281c15c64efaf869b03be04818f"
_MLEARN_URL = f"https://raw.githubusercontent.com/materialsvirtuallab/mlearn/{_MLEARN_COMMIT}/data"
_ACEDATA_COMMIT = "292aa09542d4bc6bdf67c710169bf486df1dd12a"
_ACEDATA_URL = f"https://github.com/ACEsuit/ACEData/raw/{_ACEDATA_COMMIT}/minibenchmarks"

# sha256 of each mirrored file (see the data README).
_MLEARN_SHA256 = {
    ("Si", "train"): "ae6d4b0a65b00e0fcf7ba0a6fad366716710d2f0d21d70199203089c6866b500",
    ("Si", "test"): "d452b30a89f23bff76f7cc529b7b6c2d159ea81ccd5a4599fb1a18207654fa91",
    ("Mo", "train"): "b13305fca0d0d2631ab080c8fcf13c743ee79a911712fb65a34ca88fadf09f9a",
    ("Mo", "test"): "68169e2927c2115daa2f504805fcb9548ee65daf2dd015428807ba92f8e13bb8",
    ("Ge", "train"): "43dee02009a5167f94c7aafce19051222bcfc328c46181750cc2a2018187ca00",
    ("Ge", "test"): "737ea6159c9dd27ebee7fb8ffae22f15e20466884927771248ca4f5b2cd3f093",
    ("Li", "train"): "1cac01475c5a4fb85771ee1fd23366a6b8abfb9891e0c9e088b6e37228e147b3",
    ("Li", "test"): "554d0ce60b35a07b357be3a80bf04f68eb8fc97b5a88328caf08c860b5e9b260",
    ("Cu", "test"): "1805a315ce8d0ce4a18bb761df4c4f619909ce114d598d426015d0071edc98c2",
    ("Ni", "test"): "dccbfa14ddff5d1d35f658c48b68f6b431f95496a5261ef8b8f4d1d41e36008a",
}
_ACEDATA_SHA256 = "f77a80e2fb00534f42bce2ccf72833dfec316d48f2b756aa333687652dd6c589"

FMT_MLEARN_JSON = "mlearn-json"
FMT_EXTXYZ_IN_TAR = "extxyz-in-tar"


class ChecksumError(ValueError):
    """A data file's sha256 differs from the pinned one."""


class DataUnavailableError(RuntimeError):
    """A data file is in no mirror or cache and could not be downloaded."""


@dataclass(frozen=True)
class DataFile:
    """One upstream file: path relative to a mirror root, download URL, pinned sha256."""

    relpath: str
    url: str
    sha256: str


@dataclass(frozen=True)
class Dataset:
    """A named set of structures; ``files["data"]`` is the file it is read from.

    ``member`` is the archive member for ``fmt == "extxyz-in-tar"``, else ``None``.
    """

    name: str
    files: dict[str, DataFile]
    fmt: str
    source_tag: str
    element: str
    split: str
    member: str | None = None


def _build_registry() -> dict[str, Dataset]:
    tarball = DataFile(
        relpath="acedata/ZuoEtAl2020.tar.gz",
        url=f"{_ACEDATA_URL}/ZuoEtAl2020.tar.gz",
        sha256=_ACEDATA_SHA256,
    )
    out: dict[str, Dataset] = {}
    for el in ELEMENTS:
        for split in SPLITS:
            member = f"ZuoEtAl2020/{el}_{split}.xyz"
            from_tar = dict(fmt=FMT_EXTXYZ_IN_TAR, source_tag=SOURCE_TAG, element=el, split=split, member=member)
            name = f"acedata/{el}/{split}"
            out[name] = Dataset(name=name, files={"data": tarball}, **from_tar)
            name = f"mlearn/{el}/{split}"
            sha = _MLEARN_SHA256.get((el, split))
            if sha is None:  # not in the mlearn mirror: same configurations from ACEData
                out[name] = Dataset(name=name, files={"data": tarball}, **from_tar)
                continue
            fname = "training.json" if split == "train" else "test.json"
            f = DataFile(relpath=f"mlearn/{el}/{fname}", url=f"{_MLEARN_URL}/{el}/{fname}", sha256=sha)
            out[name] = Dataset(
                name=name, files={"data": f}, fmt=FMT_MLEARN_JSON, source_tag=SOURCE_TAG, element=el, split=split
            )
    return out


_REGISTRY = _build_registry()


def list_datasets() -> list[str]:
    """Sorted names of all registered datasets, e.g. ``"mlearn/Si/train"``."""
    return sorted(_REGISTRY)


def get_dataset(name: str) -> Dataset:
    """The registered :class:`Dataset` called ``name``; ValueError for an unknown name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}") from None


# --- file lookup -------------------------------------------------------------

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """Hex sha256 of ``path``; memoised per (path, mtime_ns, size) for this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def _verify(path: Path, datafile: DataFile, hint: str = "") -> None:
    actual = sha256_of(path)
    if actual != datafile.sha256:
        raise ChecksumError(
            f"sha256 mismatch for {path}: expected {datafile.sha256}, got {actual}"
            + (f"; {hint}" if hint else "")
        )


def mirror_dirs() -> list[Path]:
    """Mirror roots from ``$EIP2NN_DATA_DIR`` (``os.pathsep``-separated; may be empty)."""
    raw = os.environ.get(DATA_DIR_ENV, "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p]


def cache_dir() -> Path:
    """Download cache root: ``$EIP2NN_CACHE_DIR`` or ``~/.cache/eip2nn/data``."""
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()


def _download(url: str, dest) -> None:
    """Stream ``url`` into the open binary file ``dest``."""
    with urllib.request.urlopen(url, timeout=60) as resp:
        for block in iter(lambda: resp.read(1 << 20), b""):
            dest.write(block)


def resolve(datafile: DataFile) -> Path:
    """Local path of ``datafile`` with a verified sha256, downloading it if needed.

    Raises :class:`ChecksumError` if the file found (or downloaded) has another hash,
    :class:`DataUnavailableError` if it is nowhere local and the download fails.
    """
    tried = []
    for root in mirror_dirs():
        path = root / datafile.relpath
        tried.append(str(path))
        if path.is_file():
            _verify(path, datafile)
            return path
    target = cache_dir() / datafile.relpath
    tried.append(str(target))
    if target.is_file():
        _verify(target, datafile, hint="delete the cached file to download it again")
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                _download(datafile.url, fh)
            except OSError as exc:
                raise DataUnavailableError(
                    f"download of {datafile.url} failed ({exc}); looked for {datafile.relpath} in: "
                    f"{', '.join(tried)}. Set {DATA_DIR_ENV} to a folder holding {datafile.relpath}."
                ) from exc
        _verify(tmp, datafile, hint=f"downloaded from {datafile.url}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def load_dataset(name: str) -> list[Atoms]:
    """Structures of dataset ``name`` with REF_* labels and metadata (see :mod:`eip2nn.keys`)."""
    ds = get_dataset(name)
    path = resolve(ds.files["data"])
    if ds.fmt == FMT_MLEARN_JSON:
        return readers.read_mlearn_json(path, ds.name)
    if ds.fmt == FMT_EXTXYZ_IN_TAR:
        return readers.read_extxyz_from_tar(path, ds.member, ds.name)
    raise ValueError(f"dataset {name!r}: no reader for format {ds.fmt!r}")
