#!/usr/bin/env bash
# Install everything eip2nn needs on a fresh Debian 12 machine (run as root):
# KIM-API + the OpenKIM model collection (Debian), a project virtualenv, and
# the pinned Python stack. Idempotent: a second run only checks and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EIP2NN_VENV:-.venv}
PY=${PYTHON:-python3}

# --with-test-tools adds what the test suite drives besides Python: headless Chromium
# (the MLflow UI end-to-end test).
# g++, cmake, make: the LAMMPS plugin of pair_style eip2nn (scripts/build_lammps_plugin.sh)
apt_pkgs=(openkim-models libkim-api-dev pkg-config g++ cmake make)
[ "${1:-}" = "--with-test-tools" ] && apt_pkgs+=(chromium)
need_apt=()
for pkg in "${apt_pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[install] Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.eip2nn-installed"
want=$(cat requirements.lock setup.cfg | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[install] Python packages up to date ($VENV)"
  echo "[install] LAMMPS plugin: $(EIP2NN_VENV="$VENV" bash scripts/build_lammps_plugin.sh)"
  exit 0
fi
"$VENV/bin/python" -m pip install -q --upgrade pip wheel setuptools
# torch first and alone: 2.13.0 is the CPU wheel available here; anything else
# pulls several GB of CUDA packages.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
# numpy<2 must be in place before kimpy/kliff build against it.
"$VENV/bin/python" -m pip install -q -c requirements.lock numpy pybind11
"$VENV/bin/python" -m pip install -q -c requirements.lock -r requirements.lock
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
echo "[install] LAMMPS plugin: $(EIP2NN_VENV="$VENV" bash scripts/build_lammps_plugin.sh)"
echo "[install] done ($VENV)"
