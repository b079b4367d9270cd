#!/usr/bin/env bash
# Table II / III rows on the cross-validation folds of a train split: each fold's held-out
# third queried against the other two (the test split is never read). With about 74
# queries a fold (223 over three folds on JSRT, against 24 in its test split) this
# separates rows that the test split cannot. Fold-major and resumable: a stopped run
# leaves whole folds, and stored runs are skipped. The summary (mean over the folds of
# mAP@10 (c)) is printed by scripts/fold_summary.py and written to OUT/summary.md.
#
#   nohup bash scripts/fold_tables.sh results/folds1800/jsrt jsrt > results/folds.log 2>&1 &
set -u
OUT=${1:-results/folds/jsrt}
DATASET=${2:-jsrt}
DATA=${DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-1800}
FOLDS=${FOLDS:-3}
# Each table is rewritten with the rows named here (their stored runs are reused), so
# name every row the table should keep.
T2=${T2:-ynet classifier plain_cnn}  # Table II methods
T3=${T3:-seg_detached}               # Table III rows (over the same default)
mkdir -p "$OUT"
# The folds, written once with absolute paths (their rows name the dataset's own files).
"$PY" - "$DATA/$DATASET" "$OUT" "$FOLDS" <<'PYEOF'
import sys
from pathlib import Path
from keras_ynet.dataset import load_dataset
from keras_ynet.experiments.cv import fold_datasets
data, out, folds = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), int(sys.argv[3])
for folder in fold_datasets(load_dataset(data), folds, 0, out / "data"):
    print("fold dataset", folder)
PYEOF
for i in $(seq 1 "$FOLDS"); do
  fold="$OUT/data/fold$i"
  "$PY" -m keras_ynet.experiments table2 --data "$fold" --out "$OUT/fold$i" \
    --train-steps "$STEPS" --seeds 1 --methods $T2 || echo "table2 on fold $i failed"
  if [ -n "$T3" ]; then
    "$PY" -m keras_ynet.experiments table3 --data "$fold" --out "$OUT/fold$i" \
      --train-steps "$STEPS" --seeds 1 --methods ynet $T3 || echo "table3 on fold $i failed"
  fi
  "$PY" scripts/fold_summary.py "$OUT" > "$OUT/summary.md.tmp" && mv "$OUT/summary.md.tmp" "$OUT/summary.md"
done
cat "$OUT/summary.md"
