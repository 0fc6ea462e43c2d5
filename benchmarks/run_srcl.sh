#!/usr/bin/env bash
# SRCL (issue 21): supervised, Mean Teacher, SRC-MT, SRCL joint and SRCL two-stage on the skin phantom (default 1000
# images, 7:1:2 split, the first N training images labelled) at 5, 10 and 20 % labels, 3 seeds. The two-stage
# contrastive pretraining runs once (seed 0) and every seed fine-tunes from it: those runs go first, together, because
# the pretrained weights (not committed) live only as long as this machine's copy of the results. Two runs at a time,
# one thread each, fit a 2-core machine; finished runs (their result.json, committed) are skipped, so a stopped grid
# resumes, seed after seed, and the last call writes the table, the CSV and the plot over all three seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
S4MI=.venv/bin/s4mi
ONE_STAGE="supervised_skin_classification mean_teacher_skin_classification src_mt_skin_classification
  srcl_skin_classification"
TWO_STAGE=srcl_two_stage_skin_classification
grid() {
  # shellcheck disable=SC2086
  $S4MI benchmark --task skin --fractions 0.05 0.1 0.2 --pretrain-seed 0 --threads 1 --jobs 2 \
      --out benchmarks/results/srcl_skin "$@"
}
grid --methods $TWO_STAGE --seeds 0 1 2
for seed in 0 1 2; do
  # shellcheck disable=SC2086
  grid --methods $ONE_STAGE --seeds $seed
done
# shellcheck disable=SC2086
grid --methods $ONE_STAGE $TWO_STAGE --seeds 0 1 2
