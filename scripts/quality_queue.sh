#!/usr/bin/env bash
# The quality experiments of the fifth session, one after another (2 CPU cores run one
# training at a time best). Each step is resumable (stored runs are skipped), so the
# queue can be stopped and started again. Figures land in docs/results.md.
# (The fourth session's queue: git show a7c203b:scripts/quality_queue.sh.)
#
#   nohup bash scripts/quality_queue.sh > results/queue.log 2>&1 &
set -u
here=$(dirname "$0")
# 1. The wide encoder with twice the resolution into every stage (no stem max-pool),
#    cross-validated on both train splits against the earlier candidates.
CANDIDATES="ce_grid ce_guided ce_guided_augment paper ce_embedding ce_embedding_wide ce_embedding_wide_s2" \
  bash "$here/cv_search.sh" results/cv
# 2. Table II (600 steps, 3 seeds) of that encoder: Y-Net and the classifier rows share it.
SEEDS=3 METHODS="ynet classifier classifier_float" EXTRA="--stem-stride 2" \
  bash "$here/table2_default.sh" results/t2_s2
