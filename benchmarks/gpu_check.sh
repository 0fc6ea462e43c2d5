#!/usr/bin/env bash
# The GPU check (issue 25): on a CUDA machine, in at most 8 minutes (the steps' limits add up to 480 s), run the `gpu`
# tests, one epoch of a Mean Teacher, an online pseudo-labelling and a DINO bundle with AMP, the throughput of every
# engine against a plain PyTorch loop on the GPU (benchmarks/speed.py, fp32 and bf16), and the pseudo-label renderer
# with its cache on the device; write one report, gpu_check.md.
#
#   bash benchmarks/gpu_check.sh [report folder]      # default: $OUT when set (the device tool), else benchmarks/results/gpu
#
# The device machine has PyTorch but not MONAI, Ignite and s4mi's other dependencies, and reaches no registry: run
# `bash benchmarks/gpu_wheels.sh` here first (it fills .whl/, ignored by git) and carry .whl; this script installs them
# into /tmp/site. Each step has its own time limit, and a failing step is reported and the next one runs. Without
# CUDA (S4MI_GPU_CHECK_CPU=1, to try the script itself) the bundle runs use the CPU and the GPU-only steps are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
REPORT_DIR=${1:-${OUT:-benchmarks/results/gpu}}
mkdir -p "$REPORT_DIR"
R=$REPORT_DIR/gpu_check.md
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && ! command -v nvidia-smi >/dev/null && PY=.venv/bin/python
export PYTHONUNBUFFERED=1 S4MI_CACHE=/tmp/s4mi_gpu_check_cache
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
WORK=/tmp/s4mi_gpu_check
rm -rf "$WORK" && mkdir -p "$WORK"
START=$(date +%s)

step() {  # step <name> <seconds> <command...>: runs it, output into the report, its exit code and time after it
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  printf '\n## %s\n\n```\n' "$name" >>"$R"
  timeout "$limit" "$@" >>"$R" 2>&1
  rc=$?
  printf '```\n' >>"$R"
  printf '%s: exit %s in %s s (limit %s s)\n' "$name" "$rc" "$(($(date +%s) - t0))" "$limit" | tee -a "$R"
  return 0
}

{
  echo "# s4mi GPU check"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} >"$R"
step environment 20 bash -c "nvidia-smi -L; $PY -c 'import torch, monai, ignite, s4mi; print(\"python\", __import__(\"sys\").version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"monai\", monai.__version__, \"ignite\", ignite.__version__); print(\"cuda available:\", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"\")'"

CUDA=$($PY -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
if [ "$CUDA" != 1 ] && [ "${S4MI_GPU_CHECK_CPU:-0}" != 1 ]; then
  echo "no CUDA device: nothing else to check" | tee -a "$R"
  exit 1
fi
DEVICE=cpu
[ "$CUDA" = 1 ] && DEVICE=cuda:0

if [ "$CUDA" = 1 ]; then
  step "gpu tests" 60 $PY -m pytest -q -m gpu -p no:cacheprovider tests/handlers tests/engines
fi

bundle() {  # bundle <name> <stage config> <extra args...>: one epoch of one stage through monai.bundle, AMP in bfloat16
  local name=$1 stage=$2
  shift 2
  local cfg=bundles/$name/configs log=$WORK/$name.$stage.log rc
  mkdir -p "$WORK"
  $PY -m monai.bundle run --config_file "$cfg/$stage" --meta_file "$cfg/metadata.json" --logging_file "$cfg/logging.conf" \
    --device "$DEVICE" --amp true --amp_dtype bfloat16 --phantom_n 200 --output_dir "$WORK/$name" --ckpt_dir "$WORK/$name/models" \
    --progress_bar false "$@" >"$log" 2>&1
  rc=$?
  grep -E "s4mi:|Epoch\[1\] Metrics|Error|error" "$log" | grep -v nvImageCodec
  [ "$rc" = 0 ] || tail -n 30 "$log"
  return "$rc"
}
report_metrics() {  # the last row of each metrics file of a run
  for f in "$WORK/$1"/*metrics*.jsonl; do [ -f "$f" ] && echo "$(basename "$f"): $(tail -n 1 "$f")"; done
}
step "mean_teacher_polyp_segmentation, 1 epoch, bf16" 80 bash -c "$(declare -f bundle report_metrics); PY=$PY DEVICE=$DEVICE WORK=$WORK; bundle mean_teacher_polyp_segmentation train.json --max_epochs 1 && report_metrics mean_teacher_polyp_segmentation"
step "online_pseudolabel_polyp_segmentation, 1 + 1 epochs, bf16" 100 bash -c "$(declare -f bundle report_metrics); PY=$PY DEVICE=$DEVICE WORK=$WORK; bundle online_pseudolabel_polyp_segmentation pretrain.json --pretrain_epochs 1 && bundle online_pseudolabel_polyp_segmentation train.json --max_epochs 1 && report_metrics online_pseudolabel_polyp_segmentation"
step "dino_skin_classification, 1 + 1 epochs, bf16" 70 bash -c "$(declare -f bundle report_metrics); PY=$PY DEVICE=$DEVICE WORK=$WORK; bundle dino_skin_classification pretrain.json --pretrain_epochs 1 && bundle dino_skin_classification train.json --max_epochs 1 && report_metrics dino_skin_classification"

if [ "$CUDA" = 1 ]; then
  step "every engine: s4mi vs a plain loop on the GPU, fp32 (benchmarks/speed.py)" 60 \
    $PY benchmarks/speed.py --device cuda --steps 10 --rounds 3
  step "every engine: s4mi vs a plain loop on the GPU, bf16 autocast" 60 \
    $PY benchmarks/speed.py --device cuda --amp --steps 10 --rounds 3
  step "pseudo-label renderer, cache on the device (FlexibleUNet densenet121, bf16)" 30 \
    $PY benchmarks/render_throughput.py --device cuda --net flexunet --backbone densenet121 --amp --n 512 --batch 32 --rounds 3
fi
printf '\ntotal: %s s\n' "$(($(date +%s) - START))" | tee -a "$R"
