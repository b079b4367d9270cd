#!/usr/bin/env bash
# The quality experiments of the fourth session, one after another (2 CPU cores run one
# training at a time best). Each step is resumable (stored runs are skipped), so the
# queue can be stopped and started again. Figures land in docs/results.md.
#
#   nohup bash scripts/quality_queue.sh > results/queue.log 2>&1 &
set -u
here=$(dirname "$0")
# 1. The third seed of the Table II rows that decide whether the default wins (600 steps).
SEEDS=3 bash "$here/table2_default.sh" results/t2
# 2. The default schedule (1800 steps) on JSRT, where the default falls short: the
#    default against the classifier row, one seed.
STEPS=1800 SEEDS=1 DATASETS=jsrt METHODS="ynet classifier" \
  bash "$here/table2_default.sh" results/t2_1800
# 3. The wider backbone with the default's settings, cross-validated on both train splits.
CANDIDATES="ce_grid ce_guided ce_guided_augment paper ce_embedding ce_embedding_wide" \
  bash "$here/cv_search.sh" results/cv
