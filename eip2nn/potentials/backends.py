"""The registry of EIP backends: name -> :class:`~eip2nn.potentials.evaluator.Backend`.

Each backend module declares its own entry (``BACKEND``); the registry
imports that module only when the entry is asked for, so importing this
module imports neither kimpy nor LAMMPS. The names are those of
:data:`eip2nn.potentials.spec.BACKENDS`, in the same order.
"""

from __future__ import annotations

from collections.abc import Callable

from eip2nn.potentials.evaluator import Backend, Evaluator
from eip2nn.potentials.spec import PotentialSpec


def _kim() -> Backend:
    from eip2nn.potentials.kim_backend import BACKEND
    return BACKEND


def _lammps() -> Backend:
    from eip2nn.potentials.lammps_backend import BACKEND
    return BACKEND


REGISTRY: dict[str, Callable[[], Backend]] = {"kim": _kim, "lammps": _lammps}


def backend(name: str) -> Backend:
    """The entry of backend ``name`` (a spec's ``backend_type``); imports its module."""
    if name not in REGISTRY:
        raise ValueError(f"unknown EIP backend {name!r}; registered: {list(REGISTRY)}")
    return REGISTRY[name]()


def make_evaluator(spec: PotentialSpec) -> Evaluator:
    """A ready evaluator for ``spec``."""
    return backend(spec.backend_type).evaluator(spec)


def md_backends() -> tuple[str, ...]:
    """Names of the backends whose evaluator can drive MD."""
    return tuple(name for name in REGISTRY if backend(name).runs_md)
