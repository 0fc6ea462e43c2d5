#!/usr/bin/env bash
# Curricular self-supervised pretraining (issue 22) on the chest phantom (default 1000 images, 7:1:2 split) at 5 and
# 10 % labels, 3 seeds: fine-tuning from scratch, from each single pretext task (20 epochs each) and from two curricula
# of the same 20 epochs (the bundle's default rotation 5 + jigsaw 5 + contrastive 10, and reconstruction 5 + rotation 5
# + contrastive 10). Each pretraining runs once (seed 0; it reads no label) and every seed and fraction fine-tunes from
# it. Mean AUC and the Grad-CAM attention share inside the lungs on the test set; the probes of each stage are in each
# pretraining's pretrain_metrics.jsonl. Two runs at a time, one thread each; finished runs are skipped and a stopped
# run resumes, so the seeds go one after another and the last call writes the table over all three.
set -euo pipefail
cd "$(dirname "$0")/.."
S4MI=.venv/bin/s4mi
B=curricular_ssl_cxr_classification
METHODS="$B:pretrained_ckpt= $B:curriculum=rotation:20 $B:curriculum=jigsaw:20 $B:curriculum=reconstruction:20
  $B:curriculum=contrastive:20 $B $B:curriculum=reconstruction:5+rotation:5+contrastive:10"
for seeds in 0 1 2 "0 1 2"; do
  # shellcheck disable=SC2086
  $S4MI benchmark --task cxr --methods $METHODS --fractions 0.05 0.1 --seeds $seeds --pretrain-seed 0 \
      --threads 1 --jobs 2 --out benchmarks/results/curricular_cxr "$@"
done
.venv/bin/python benchmarks/gradcam_overlays.py benchmarks/results/curricular_cxr
.venv/bin/python benchmarks/curriculum_probes.py benchmarks/results/curricular_cxr > benchmarks/results/curricular_cxr/probes.md
