"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]


def _find_data_mirror() -> Path | None:
    env = os.environ.get("EIP2NN_DATA_DIR")
    if env:
        return Path(env)
    fallback = _REPO.parent / "shared" / "data"
    return fallback if fallback.is_dir() else None


@pytest.fixture
def data_dir(monkeypatch, tmp_path) -> Path:
    """Mirror of the reference data; sets EIP2NN_DATA_DIR to it and the cache to a tmp dir."""
    mirror = _find_data_mirror()
    if mirror is None:
        pytest.skip(f"no data mirror: set EIP2NN_DATA_DIR (fallback {_REPO.parent / 'shared' / 'data'} absent)")
    monkeypatch.setenv("EIP2NN_DATA_DIR", str(mirror))
    monkeypatch.setenv("EIP2NN_CACHE_DIR", str(tmp_path / "cache"))
    return mirror


@pytest.fixture(scope="session")
def data_mirror_session():
    """Session-wide EIP2NN_DATA_DIR for module-scoped fixtures that read real data."""
    mirror = _find_data_mirror()
    if mirror is None:
        pytest.skip(f"no data mirror: set EIP2NN_DATA_DIR (fallback {_REPO.parent / 'shared' / 'data'} absent)")
    old = os.environ.get("EIP2NN_DATA_DIR")
    os.environ["EIP2NN_DATA_DIR"] = str(mirror)
    yield mirror
    if old is None:
        os.environ.pop("EIP2NN_DATA_DIR", None)
    else:
        os.environ["EIP2NN_DATA_DIR"] = old
