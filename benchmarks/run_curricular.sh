#!/usr/bin/env bash
# Curricular self-supervised pretraining (issue 22) on the chest phantom (default 1000 images, 7:1:2 split) at 5 and
# 10 % labels, 3 seeds: fine-tuning from scratch, from each single pretext task (20 epochs each) and from two curricula
# of the same 20 epochs (the bundle's default rotation 5 + jigsaw 5 + contrastive 10, and reconstruction 5 + rotation 5
# + contrastive 10). Each pretraining runs once (seed 0; it reads no label) and every seed and fraction fine-tunes from
# it. Mean AUC and the Grad-CAM attention share inside the lungs on the test set; the probes of each stage are in each
# pretraining's pretrain_metrics.jsonl. Two runs at a time, one thread each; finished runs (their result.json,
# committed) are skipped and a stopped run resumes. The pretrained weights and fine-tuned models are not committed, so
# each method runs its pretraining and all its fine-tunes in one call, two methods a call (their pretrainings side by
# side); scratch and the two curricula go first, with the Grad-CAM figure (which loads their models) right after them;
# the last call writes the table.
set -euo pipefail
cd "$(dirname "$0")/.."
S4MI=.venv/bin/s4mi
B=curricular_ssl_cxr_classification
EXTRA=("$@")  # more s4mi benchmark options, given to every call
grid() {
  $S4MI benchmark --task cxr --fractions 0.05 0.1 --seeds 0 1 2 --pretrain-seed 0 --threads 1 --jobs 2 \
      --out benchmarks/results/curricular_cxr "${EXTRA[@]}" "$@"
}
SCRATCH="$B:pretrained_ckpt="
CURRICULA="$B $B:curriculum=reconstruction:5+rotation:5+contrastive:10"
SINGLE="$B:curriculum=rotation:20 $B:curriculum=jigsaw:20 $B:curriculum=reconstruction:20 $B:curriculum=contrastive:20"
grid --methods "$SCRATCH" "$B"
grid --methods "$B:curriculum=reconstruction:5+rotation:5+contrastive:10" "$B:curriculum=rotation:20"
.venv/bin/python benchmarks/gradcam_overlays.py benchmarks/results/curricular_cxr
grid --methods "$B:curriculum=jigsaw:20" "$B:curriculum=reconstruction:20"
grid --methods "$B:curriculum=contrastive:20"
# shellcheck disable=SC2086
grid --methods "$SCRATCH" $CURRICULA $SINGLE
.venv/bin/python benchmarks/curriculum_probes.py benchmarks/results/curricular_cxr > benchmarks/results/curricular_cxr/probes.md
