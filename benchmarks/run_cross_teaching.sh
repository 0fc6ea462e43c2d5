#!/usr/bin/env bash
# S4MI semi-supervised segmentation (issue 20): cross teaching between a CNN and a Transformer against the supervised
# CNN on the skin lesion masks (skin_seg phantom), label fractions 10/30/50/70/100 % (the first N training images
# labelled, as S4MI), 3 seeds. Cross teaching at 100 % is skipped (no unlabelled image left). --semi-steps equal: cross
# teaching takes an epoch of the supervised runs' length (691 training images // batch 8 = 86 full batches; supervised
# draws 691 images, 87 steps with the partial last), not one pass over its longer loader (44-77 steps at 10-70 %). Then one short 3D run on
# the CT phantom at 20 % labels. Two runs at a time, one thread each, fit a 2-core machine; finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
S4MI=.venv/bin/s4mi
$S4MI benchmark --task skin_seg --methods cross_teaching_skin_segmentation supervised_skin_segmentation \
    --fractions 0.1 0.3 0.5 0.7 1.0 --seeds 0 1 2 --semi-steps equal --threads 1 --jobs 2 \
    --out benchmarks/results/cross_teaching_skin
# the setting chosen by the tuning on seed 0 (validation Dice; benchmarks/README.md): Adam 1e-3 instead of 3.6e-4
$S4MI benchmark --task skin_seg --methods cross_teaching_skin_segmentation:learning_rate=0.001 \
    --fractions 0.1 0.3 0.5 0.7 --seeds 0 1 2 --semi-steps equal --threads 1 --jobs 2 \
    --out benchmarks/results/cross_teaching_skin_tuned
$S4MI benchmark --task ct3d --phantom-n 40 --methods cross_teaching_ct_segmentation supervised_ct_segmentation \
    --fractions 0.2 --seeds 0 --threads 1 --jobs 2 --out benchmarks/results/cross_teaching_ct
