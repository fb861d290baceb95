"""The floor plan (docs: ARCHITECTURE.md): each floor imports only from its own floor and those below.

Config dataclasses sit where importing them is cheap: reading a pipeline or
sweep YAML file must not import torch, MLflow or scikit-learn.
"""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "eip2nn"

# lowest first; a module belongs to the floor of the longest name here that prefixes its own
FLOORS = [
    # the shared ground floor; "eip2nn" is the package's __init__ (__version__)
    ("ground", ["eip2nn", "eip2nn.keys", "eip2nn.config", "eip2nn.tracking", "eip2nn.locks", "eip2nn.tables",
                "eip2nn.plots", "eip2nn.alignment"]),
    ("potentials", ["eip2nn.potentials"]),
    ("data", ["eip2nn.data"]),
    # generate/ makes structures with the EIPs (potentials) and records versions with labelling.provenance
    ("labelling", ["eip2nn.labelling", "eip2nn.generate"]),
    # calculator.py: a trained model (nn.checkpoint) as an ASE calculator, plus its Δ-learning EIP (potentials);
    # tracking only to fetch runs:/ checkpoints. snap/: the other kind of model, a SNAP fitted by linear algebra
    # deploy/: a trained model exported for LAMMPS (with its Δ-learning EIP's LAMMPS form) and run as MD
    ("nn", ["eip2nn.nn", "eip2nn.calculator", "eip2nn.snap", "eip2nn.deploy"]),
    ("weak", ["eip2nn.weak", "eip2nn.diagnostics"]),  # diagnostics/: adversarial validation on the selector's features
    # evaluation.py: scores a model or an EIP with training.metrics and training.samples
    ("training", ["eip2nn.training", "eip2nn.evaluation"]),
    ("pipeline", ["eip2nn.pipeline"]),
    ("sweep", ["eip2nn.sweep"]),  # Optuna over a pipeline's knobs: a floor above pipeline/
    ("cli", ["eip2nn.cli", "eip2nn.__main__"]),
]
FLOOR_OF = {name: k for k, (_, names) in enumerate(FLOORS) for name in names}

# (importing module, imported module): why it may look up; empty is the goal
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor(name: str) -> int | None:
    """The floor index of module ``name`` (longest matching prefix), None if it has none."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in FLOOR_OF:
            return FLOOR_OF[".".join(parts[:k])]
    return None


def imports(name: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported eip2nn module) for every import in the file, module- and function-level alike."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            # "from eip2nn.labelling import worker" imports the module eip2nn.labelling.worker
            found += [(node.lineno, f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
                      for a in node.names]
    return sorted({(line, t) for line, t in found if t == "eip2nn" or t.startswith("eip2nn.")})


def test_every_module_has_a_floor():
    assert [m for m in modules() if floor(m) is None] == []


def test_no_module_imports_from_a_floor_above_its_own():
    known = set(modules())
    upward = []
    for name, path in modules().items():
        for line, target in imports(name, path, known):
            if floor(target) is None:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}, a module with no floor")
            elif floor(target) > floor(name) and (name, target) not in KNOWN_EXCEPTIONS:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({FLOORS[floor(name)][0]}) imports "
                              f"{target} ({FLOORS[floor(target)][0]})")
    assert not upward, "imports from a floor above:\n" + "\n".join(upward)


def test_known_exceptions_are_still_needed():
    known = set(modules())
    seen = {(name, t) for name, path in modules().items() for _, t in imports(name, path, known)}
    assert set(KNOWN_EXCEPTIONS) <= seen


def test_reading_a_pipeline_or_sweep_config_imports_no_torch_mlflow_or_sklearn():
    code = ("import sys, eip2nn.pipeline.config, eip2nn.sweep.config, eip2nn.training.config; "
            "print([m for m in ('torch', 'mlflow', 'sklearn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]"
