#!/usr/bin/env bash
# Memory check of every LAMMPS-backend EIP in potentials_db/: valgrind memcheck while it
# labels the first 15 mlearn training structures of its first element. Prints one line per
# EIP with the number of invalid reads/writes inside LAMMPS (the dynamic loader's known
# false positives are ignored). Needs Debian's valgrind; about 30 minutes on 2 cores.
#   bash scripts/valgrind_lammps.sh [ID ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ids=("$@")
[ ${#ids[@]} -eq 0 ] && ids=($(ls potentials_db | sed -n 's/^\(lmp_.*\)\.yaml$/\1/p'))
out=$(mktemp -d)
for id in "${ids[@]}"; do
  PYTHONMALLOC=malloc valgrind --error-limit=no --undef-value-errors=no "$PY" - "$id" > "$out/$id.log" 2>&1 <<'PYEOF'
import sys
from eip2nn.data import load_dataset
from eip2nn.potentials.db import PotentialsDB
from eip2nn.potentials.evaluator import EvaluationError, make_evaluator
spec = PotentialsDB().get(sys.argv[1])
try:
    structures = load_dataset(f"mlearn/{spec.species[0]}/train")[:15]
except (KeyError, ValueError) as exc:
    sys.exit(f"no mlearn data for {spec.species[0]}: {exc}")
evaluator = make_evaluator(spec)
for atoms in structures:
    try:
        evaluator.evaluate(atoms)
    except EvaluationError as exc:
        print("failure:", exc)
evaluator.close()
PYEOF
  n=$(grep -A1 "Invalid read\|Invalid write" "$out/$id.log" | grep -v "strncmp\|Invalid\|^--" | wc -l || true)
  echo "$id invalid_accesses_in_lammps=$n log=$out/$id.log"
done
