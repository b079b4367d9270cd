#!/usr/bin/env bash
# Table II rows that decide whether the default wins (docs/results.md, "Does the default
# win?"): the default Y-Net, the paper's Y-Net and the plain classifier (codes and
# float), 3 seeds, on both datasets, at the CV's step budget. Resumable like every
# experiment: stored runs are not trained again.
#
#   nohup bash scripts/table2_default.sh results/t2 > results/t2.log 2>&1 &
set -u
OUT=${1:-results/t2}
DATA=${DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-600}
SEEDS=${SEEDS:-3}
METHODS=${METHODS:-ynet ynet_paper classifier classifier_float}
DATASETS=${DATASETS:-rimone_dl jsrt}
EXTRA=${EXTRA:-}  # more run flags for every row, e.g. EXTRA="--stem-stride 2"
# One more seed on both datasets at a time, so a stopped run leaves equal seed counts.
for seeds in $(seq 1 "$SEEDS"); do
  for dataset in $DATASETS; do
    "$PY" -m keras_ynet.experiments table2 --data "$DATA/$dataset" --out "$OUT/$dataset" \
      --train-steps "$STEPS" --seeds "$seeds" --methods $METHODS $EXTRA \
      || echo "table2 on $dataset failed"
  done
done
