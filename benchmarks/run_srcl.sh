#!/usr/bin/env bash
# SRCL (issue 21): supervised, Mean Teacher, SRC-MT, SRCL joint and SRCL two-stage on the skin phantom (default 1000
# images, 7:1:2 split, the first N training images labelled) at 5, 10 and 20 % labels, 3 seeds. The two-stage
# contrastive pretraining runs once (seed 0) and every seed fine-tunes from it. Two runs at a time, one thread each,
# fit a 2-core machine; finished runs are skipped, so the seeds go one after another (a stopped grid keeps whole seeds)
# and the last call writes the table, the CSV and the plot over all three.
set -euo pipefail
cd "$(dirname "$0")/.."
S4MI=.venv/bin/s4mi
METHODS="supervised_skin_classification mean_teacher_skin_classification src_mt_skin_classification
  srcl_skin_classification srcl_two_stage_skin_classification"
for seeds in 0 1 2 "0 1 2"; do
  # shellcheck disable=SC2086
  $S4MI benchmark --task skin --methods $METHODS --fractions 0.05 0.1 0.2 --seeds $seeds --pretrain-seed 0 \
      --threads 1 --jobs 2 --out benchmarks/results/srcl_skin
done
