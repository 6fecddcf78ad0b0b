#!/usr/bin/env bash
# Issue 15: the one-command proof that xpcnn trains on CUDA. Writes OUTDIR/report.md.
#   bench/gpu_check.sh OUTDIR [--dry-run]
# On the GPU machine, from a checkout holding .gpu/ (bench/gpu_prepare.sh): installs .gpu/wheels offline,
# then CUDA tests, 2 epochs of mnist-cnn on CUDA, xpcnn bench on CUDA, all within a time budget.
# --dry-run: the same commands on the CPU, small, in the current environment (no install; < 1 min).
# Env: XPCNN_GPU_DIR (default .gpu), XPCNN_GPU_BUDGET (seconds for all steps, default 450),
#      PYTHON (default python3), XPCNN_GPU_KEEP_CHECKPOINTS=1 (keep OUTDIR/run*/*.npz).
set -euo pipefail

usage() {
  echo "usage: bench/gpu_check.sh OUTDIR [--dry-run]" >&2
  exit 2
}
OUT="" DRY=0
for arg in "$@"; do
  case $arg in
    --dry-run) DRY=1 ;;
    -*) usage ;;
    *) [[ -z $OUT ]] || usage; OUT=$arg ;;
  esac
done
[[ -n $OUT ]] || usage
command -v timeout >/dev/null || { echo "gpu_check: needs coreutils' timeout" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"
GPU_DIR=${XPCNN_GPU_DIR:-.gpu}
PYTHON=${PYTHON:-python3}
BUDGET=${XPCNN_GPU_BUDGET:-450}
DEADLINE=$((SECONDS + BUDGET))
STEPS=$OUT/steps.tsv
FAILED=0
: >"$STEPS"
export XPCNN_GPU_CHECK=1  # tests/test_gpu_check.py skips inside this script's own test runs

# record NAME STATUS RC SECONDS STDOUT STDERR NOTE CMD...: one row of steps.tsv (files relative to OUT).
record() {
  local name=$1 status=$2 rc=$3 secs=$4 out=${5#"$OUT"/} err=${6#"$OUT"/} note=$7 cmd=""
  shift 7
  (($# == 0)) || cmd=$(printf '%q ' "$@")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$secs" "$out" "$err" "$cmd" "$note" \
    >>"$STEPS"
}

# skip NAME NOTE [CMD...]: record a step that did not run.
skip() {
  local name=$1 note=$2
  shift 2
  echo "== $name: skipped ($note)"
  record "$name" skipped - 0 "" "" "$note" "$@"
}

# step NAME LIMIT STDOUT STDERR CMD...: run CMD under timeout (capped by the budget); a failure is
# recorded, never fatal. STDERR equal to STDOUT: one file.
step() {
  local name=$1 limit=$2 out=$3 err=$4 rc=0 start=$SECONDS left status
  shift 4
  left=$((DEADLINE - SECONDS))
  if ((left < 15)); then
    skip "$name" "time budget of ${BUDGET}s spent" "$@"
    return 0
  fi
  ((limit <= left)) || limit=$left
  echo "== $name (at most ${limit}s): $(printf '%q ' "$@")"
  if [[ $err == "$out" ]]; then
    timeout -k 10 "$limit" "$@" >"$out" 2>&1 || rc=$?
  else
    timeout -k 10 "$limit" "$@" >"$out" 2>"$err" || rc=$?
  fi
  case $rc in
    0) status=ok ;;
    124 | 137) status="timed out after ${limit}s" ;;
    *) status=failed ;;
  esac
  [[ $status == ok ]] || FAILED=$((FAILED + 1))
  echo "   $status (rc $rc, $((SECONDS - start))s)"
  record "$name" "$status" "$rc" "$((SECONDS - start))" "$out" "$err" "" "$@"
}

# --- mode: what runs where
XPCNN=("$PYTHON" -m xpcnn.cli.main)
FASHION=$GPU_DIR/data/fashion-mnist
HAVE_FASHION=0
[[ ! -f $FASHION/train-images-idx3-ubyte.gz && ! -f $FASHION/train-images-idx3-ubyte ]] || HAVE_FASHION=1
if ((HAVE_FASHION && !DRY)); then
  DATA=(--dataset fashion-mnist --data-dir "$FASHION")
else
  DATA=(--dataset mnist-sample)  # dry run, or .gpu/ without Fashion-MNIST: the bundled 8,000/2,000 digits
fi
PRESETS=(seed-simple seed-deep mnist-cnn lenet5)
if ((DRY)); then
  # Small and compile-free, so that the dry run takes seconds even with a cold numba cache.
  MODE=dry-run DEVICE=cpu EPOCHS=1 MODEL=seed-simple
  export XPCNN_KERNELS=0
  COLLECT=(--collect-only)
  LIMIT=(--limit-train 256)
  PRESETS=(seed-simple)
  BENCH=(--batch-size 32 --steps 1 --repeats 1 --settle 0)
else
  MODE=gpu DEVICE=cuda EPOCHS=2 MODEL=mnist-cnn
  COLLECT=()
  LIMIT=()
  BENCH=(--batch-size 32 128 1024)
fi
TRAIN=(--model "$MODEL" "${DATA[@]}" --batch-size 128 --lr 0.001 --seed 0 --no-progress --force)
echo "$MODE" >"$OUT/mode"
echo "$BUDGET" >"$OUT/budget"
echo "XPCNN_KERNELS=${XPCNN_KERNELS-(unset)}" >"$OUT/kernels"
if commit=$(git rev-parse --short HEAD 2>/dev/null); then
  dirty=$(git status --porcelain -- xpcnn tests bench 2>/dev/null | wc -l)
  echo "$commit ($dirty uncommitted path(s) under xpcnn/ tests/ bench/)" >"$OUT/commit"
else
  echo "no git here (a copy of the working tree)" >"$OUT/commit"
fi
if [[ -f $GPU_DIR/COMMIT ]]; then
  prepared=$(head -n 1 "$GPU_DIR/COMMIT")
  dirty=$(($(wc -l <"$GPU_DIR/COMMIT") - 1))
  echo "$prepared ($dirty uncommitted path(s))" >"$OUT/prepared-commit"
fi

# --- install (GPU only): the prepared wheels into a private folder put on PYTHONPATH after the checkout,
# so the machine's own NumPy, numba, CuPy and PyTorch stay in use.
if ((DRY)); then
  skip install "dry run: the current environment" "$PYTHON" -m pip install --no-index --find-links \
    "$GPU_DIR/wheels" --no-deps --target SITE "$GPU_DIR/wheels/*.whl"
else
  SITE=$(mktemp -d "${TMPDIR:-/tmp}/xpcnn-gpu-site.XXXXXX")
  shopt -s nullglob
  WHEELS=("$GPU_DIR"/wheels/*.whl)
  shopt -u nullglob
  if ((${#WHEELS[@]} == 0)); then
    skip install "no wheels in $GPU_DIR/wheels: run bench/gpu_prepare.sh where the index is reachable"
  elif "$PYTHON" -m pip --version >/dev/null 2>&1; then
    step install 120 "$OUT/install.txt" "$OUT/install.txt" "$PYTHON" -m pip install --no-index \
      --find-links "$GPU_DIR/wheels" --no-deps --target "$SITE" "${WHEELS[@]}"
  else  # no pip: a wheel is a zip archive
    step install 120 "$OUT/install.txt" "$OUT/install.txt" "$PYTHON" -c \
      'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' "$SITE" "${WHEELS[@]}"
  fi
  export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$SITE/bin:$PATH"
fi
if [[ -f $GPU_DIR/MANIFEST.sha256 ]]; then
  step manifest 60 "$OUT/manifest.txt" "$OUT/manifest.txt" env -C "$GPU_DIR" sha256sum -c MANIFEST.sha256
else
  skip manifest "no $GPU_DIR/MANIFEST.sha256 (bench/gpu_prepare.sh writes it)"
fi

# --- the machine: GPU, driver, CUDA, CuPy, PyTorch, NumPy
if command -v nvidia-smi >/dev/null; then
  step nvidia-smi 30 "$OUT/nvidia-smi.txt" "$OUT/nvidia-smi.txt" nvidia-smi
else
  skip nvidia-smi "nvidia-smi not found" nvidia-smi
fi
step versions 90 "$OUT/versions.txt" "$OUT/versions.txt" "$PYTHON" bench/gpu_report.py versions "$OUT/versions.json"
step xpcnn-info 90 "$OUT/xpcnn-info.txt" "$OUT/xpcnn-info.txt" "${XPCNN[@]}" info
if ((HAVE_FASHION)); then
  step data 60 "$OUT/data.txt" "$OUT/data.txt" "$PYTHON" bench/gpu_report.py sha256 "$FASHION"
else
  skip data "no Fashion-MNIST in $FASHION: training on ${DATA[1]}" "$PYTHON" bench/gpu_report.py sha256 "$FASHION"
fi

# --- (a) the CUDA tests (skip with "no CUDA device" on a CPU machine)
step tests-cuda 180 "$OUT/tests.txt" "$OUT/tests.txt" env XPCNN_TEST_BACKENDS=cupy,torch-cuda \
  XPCNN_TEST_ACCEL=threads2 "$PYTHON" -m pytest -q -p no:cacheprovider --maxfail=10 -k "cupy or torch-cuda" tests

# --- (b) 2 epochs of mnist-cnn (accuracy.md's settings), evaluated on the device and on the CPU
step train 150 "$OUT/train.json" "$OUT/train.log" "${XPCNN[@]}" train --device "$DEVICE" "${TRAIN[@]}" \
  --epochs "$EPOCHS" "${LIMIT[@]}" --out "$OUT/run"
step evaluate 60 "$OUT/evaluate.json" "$OUT/evaluate.log" "${XPCNN[@]}" evaluate "$OUT/run/best.npz" \
  "${DATA[@]}" --device "$DEVICE" --json
step evaluate-on-cpu 90 "$OUT/evaluate-on-cpu.json" "$OUT/evaluate-on-cpu.log" "${XPCNN[@]}" evaluate \
  "$OUT/run/best.npz" "${DATA[@]}" --device cpu --json

# --- (c) xpcnn vs PyTorch on the device, every preset
for model in "${PRESETS[@]}"; do
  step "bench-$model" 75 "$OUT/bench-$model.jsonl" "$OUT/bench-$model.log" "${XPCNN[@]}" bench \
    --device "$DEVICE" --model "$model" "${BENCH[@]}" --json
done

# --- with the time left: the tests that behave differently with a GPU, the CPU twin run, the rest
step tests-gpu-aware 120 "$OUT/tests-gpu-aware.txt" "$OUT/tests-gpu-aware.txt" env XPCNN_TEST_ACCEL=threads2 \
  "$PYTHON" -m pytest -q -p no:cacheprovider --maxfail=10 "${COLLECT[@]}" tests/test_devices.py tests/test_cli.py
step train-cpu 300 "$OUT/train-cpu.json" "$OUT/train-cpu.log" "${XPCNN[@]}" train --device cpu "${TRAIN[@]}" \
  --epochs "$EPOCHS" "${LIMIT[@]}" --out "$OUT/run-cpu"
step tests-rest 600 "$OUT/tests-rest.txt" "$OUT/tests-rest.txt" env XPCNN_TEST_ACCEL=threads2 \
  "$PYTHON" -m pytest -q -p no:cacheprovider --maxfail=10 "${COLLECT[@]}" -k "not cupy and not torch-cuda" \
  --ignore=tests/test_devices.py --ignore=tests/test_cli.py --ignore=tests/test_gpu_check.py tests

# --- (d) the report; the checkpoints go (up to 15 MB each with Adam's state: the device tool's return limit)
if [[ ${XPCNN_GPU_KEEP_CHECKPOINTS:-0} != 1 ]]; then
  rm -f "$OUT"/run/*.npz "$OUT"/run-cpu/*.npz
fi
"$PYTHON" bench/gpu_report.py report "$OUT"
echo "gpu_check ($MODE): $FAILED step(s) failed or timed out; $SECONDS s in all; see $OUT/report.md"
((FAILED == 0))
