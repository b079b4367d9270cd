#!/usr/bin/env bash
# The cross-validated search behind the default of `python -m keras_ynet.train`
# (docs/results.md, "Choosing the default by cross-validation"). Resumable: every fold
# run is stored under OUT/<dataset>/runs/ and skipped when it is already there, so the
# script can be stopped and started again. Candidates run one at a time on both
# datasets, so a stopped search holds whole candidates; cv.md is rewritten after each.
#
#   nohup bash scripts/cv_search.sh results/cv > results/cv.log 2>&1 &
set -u
OUT=${1:-results/cv}
DATA=${DATA:-../shared/data}
PY=${PY:-.venv/bin/python}
FOLDS=${FOLDS:-3}
STEPS=${STEPS:-600}
CANDIDATES=${CANDIDATES:-ce_grid ce_guided ce_guided_augment paper ce_embedding ce_embedding_wide ce_embedding_wide_s2 circle_guided ce_guided_wide}
done_so_far=()
for candidate in $CANDIDATES; do
  done_so_far+=("$candidate")
  for dataset in rimone_dl jsrt; do
    "$PY" -m keras_ynet.experiments cv --data "$DATA/$dataset" --out "$OUT/$dataset" \
      --cv-folds "$FOLDS" --train-steps "$STEPS" --cv-candidates "${done_so_far[@]}" \
      || echo "cv of $candidate on $dataset failed"
  done
done
