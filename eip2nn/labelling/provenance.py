"""What a label records about how it was made."""

from __future__ import annotations

import platform
import socket
from importlib import metadata
from pathlib import Path

from eip2nn import __version__
from eip2nn.potentials.backends import REGISTRY, backend
from eip2nn.potentials.spec import PotentialSpec

_PACKAGES = ("numpy", "ase", "matscipy")  # and each backend's package


def package_versions(packages: tuple[str, ...] | None = None) -> dict[str, str]:
    """Versions of the packages that shape the numbers ("missing" if absent); by default
    those of labelling, every backend's included."""
    if packages is None:
        packages = _PACKAGES + tuple(backend(name).package for name in REGISTRY)
    out = {"eip2nn": __version__, "python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    out["kim-api"] = _kim_api_version()
    return out


def _kim_api_version() -> str:
    for pc in (Path("/usr/lib/x86_64-linux-gnu/pkgconfig/libkim-api.pc"),
               Path("/usr/local/lib/pkgconfig/libkim-api.pc")):
        if pc.is_file():
            for line in pc.read_text().splitlines():
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
    return "unknown"


def provenance_info(spec: PotentialSpec) -> dict:
    """Backend, what the backend records of the EIP (model, or pair style + parameter-file
    hashes), versions, units, host."""
    return {"backend": spec.backend_type, "species": list(spec.species),
            "versions": package_versions(), "host": socket.gethostname(),
            "units": {"energy": "eV", "forces": "eV/Å", "stress": "eV/Å^3"},
            **backend(spec.backend_type).provenance(spec)}
