#!/usr/bin/env bash
# Supervised baselines at 10 % and 100 % labels on the cxr, skin and polyp phantoms, 3 seeds (issue: foundation).
# Equal optimisation steps at both fractions (samples_per_epoch = full training-set size). One thread per run, so the
# three tasks can also run side by side on a 2-core machine (`bash benchmarks/run_supervised.sh polyp` etc.).
set -euo pipefail
cd "$(dirname "$0")/.."
S4MI=.venv/bin/s4mi
tasks=${*:-polyp cxr skin}
for task in $tasks; do
    case $task in
        polyp) epochs=20 ;;
        *) epochs=15 ;;
    esac
    $S4MI benchmark --task "$task" --fractions 0.1 1.0 --seeds 0 1 2 --threads 1 --set max_epochs=$epochs \
        --out "benchmarks/results/supervised_$task"
done
