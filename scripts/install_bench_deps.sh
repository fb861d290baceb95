#!/usr/bin/env bash
# Extra packages only the benchmarks need (schnetpack for the training-throughput
# comparison), installed beside the project venv in .bench-site/ so the pinned
# environment stays untouched. schnetpack 2.1.1's metadata asks for numpy>=2 and
# sympy<=1.12, which the pinned stack (numpy 1.26, torch 2.13 -> sympy 1.14) cannot
# meet; neither matters at run time, hence --no-deps with its run-time deps listed.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.bench-site/.installed
want="schnetpack==2.1.1 pytorch-lightning==2.6.6 torchmetrics==1.9.0 lightning-utilities==0.15.3 h5py==3.16.0 omegaconf==2.4.0 torch-ema==0.3 dirsync==2.2.6 fasteners==0.20"
if [[ -f $stamp && "$(cat $stamp)" == "$want" ]]; then exit 0; fi
rm -rf .bench-site
.venv/bin/pip install --quiet --no-deps --target .bench-site $want
echo "$want" > $stamp
