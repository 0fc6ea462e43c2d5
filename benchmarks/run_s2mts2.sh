#!/usr/bin/env bash
# S2MTS2 on the cxr phantom at 5 % and 10 % labels, 3 seeds (issue: S2MTS2): S2MTS2 (MoCo v2 + JCL pretraining, then
# Mean Teacher fine-tuning) vs the same fine-tuning after plain MoCo v2 pretraining (M = 1, lambda = 0) vs the same
# fine-tuning from scratch vs supervised. One pretraining per (variant, seed) serves both fractions
# (runs/pretrain/...). The phantom has 2,000 images split 700 / 300 / 1,000 so that the test AUC of the rare findings
# is not dominated by sampling noise (the 1,000-image default has 9 test positives of "mass").
# About 6 CPU-hours on 2 cores: run it where there is time (or a GPU: `--threads` then does not matter).
set -euo pipefail
cd "$(dirname "$0")/.."
S4MI=.venv/bin/s4mi
DATA=benchmarks/data/cxr-n2000
[ -f $DATA/datalist.json ] || $S4MI data make cxr --n 2000 --splits 0.35 0.15 0.5 --out $DATA
$S4MI benchmark --task $DATA/datalist.json --fractions 0.05 0.1 --seeds 0 1 2 --threads 1 --jobs 2 \
    --methods s2mts2_cxr_classification "s2mts2_cxr_classification:num_key_views=1,jcl_lambda_max=0" \
    "s2mts2_cxr_classification:pretrained_ckpt=" supervised_cxr_classification \
    --set max_epochs=15 --out benchmarks/results/s2mts2_cxr
