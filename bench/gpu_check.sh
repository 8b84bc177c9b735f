#!/usr/bin/env bash
# GPU behaviour check, for a lent GPU box (an H100/H200 with torch, lightning, triton, tensorboard,
# tokenizers; no `datasets`, no jsonargparse, no network), in one command of under 8 minutes
# (GPU_CHECK_BUDGET, default 455 s). Steps, in this order, each under its own limit (s, GPU):
#
#   1. setup           (40)  jsonargparse[signatures] from the wheels in .wheels/ (bench/fetch_wheels.sh,
#                            `make wheels`, run beforehand where pip has the network), then lamina itself
#                            (`pip install --no-deps -e .`: `datasets` is never needed for the built-in corpus);
#   2. overhead_small  (150) bench/overhead.py on configs/small.yaml (compile, bf16-mixed, measuring on
#                            CUDA: the kernels with gate and counts, probes on the device, the partition's
#                            eigendecomposition, autocast): one on/off pair of 10 + 100 steps, the window
#                            holding one every-100 measurement; the on arm also measures everything at
#                            step 0 and at its last step. Early, so that nothing before it eats its time;
#   3. tests           (70)  tests/test_kernels.py and tests/test_measures.py on CUDA, the kernels compiled
#                            by Triton (TRITON_INTERPRET=0); a skipped kernel test fails it;
#   4. kernels         (60)  bench/kernel_bandwidth.py: GB/s against the device's HBM peak, Gram TFLOP/s;
#   5. throughput_small (45) bench/throughput.py on configs/small.yaml (compile, bf16): tokens/s, MFU,
#                            peak memory, compile time, against the plain loop;
#   6. throughput_124m (rest, at least 90) the same for the GPT-2 124M shape (configs/gpt2-124m.yaml with
#                            the offline overlay configs/gpt2-124m-offline.yaml: the built-in corpus, BPE).
#
# Every step writes its JSON as it ends (OUT/gpu_check-<device>-<date>-<k>-<step>.json: status, seconds,
# log tail, its benchmark's JSON, which the benchmarks write after each arm, so a step stopped at its
# limit keeps what it finished), and the summary OUT/gpu_check-<device>-<date>.json and the log
# OUT/gpu_check-<device>-<date>.log are rebuilt from them after each step: 8 files in all. Every
# step runs even if an earlier one failed; the exit status is non-zero if any step did not pass.
#
#   bash bench/gpu_check.sh [--out DIR]      # on the GPU box; DIR default bench/results (or $GPU_CHECK_OUT)
#   bash bench/gpu_check.sh --cpu --out DIR  # the same path on the CPU, shrunk (tests/test_gpu_check.py)
#
# --cpu hides any GPU and runs the same steps on the same path: BPE data, model.compile, bf16-mixed
# autocast, measuring on, small.yaml shrunk to 2 x 64 (rows of 64 tokens) and the 124M shape itself
# (12 x 768, vocab 50304) on rows of 128 tokens, one row a step, for a few steps; kernel tests (a
# subset) and the kernel bench run under TRITON_INTERPRET=1. Environment: PY (the interpreter;
# default .venv/bin/python where it exists, else python3), GPU_CHECK_STEPS (steps to run, e.g.
# "throughput_124m"; setup always runs), GPU_CHECK_LIMIT_<step> (its limit in seconds),
# GPU_CHECK_BUDGET, GPU_CHECK_INDUCTOR_CACHE (TORCHINDUCTOR_CACHE_DIR; default a fresh folder on a
# GPU, so compile times are cold, and torch's own per-user folder on the CPU), GPU_CHECK_WHEELS.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

MODE=gpu
OUT_DIR=${GPU_CHECK_OUT:-bench/results}
while [ $# -gt 0 ]; do
  case $1 in
    --cpu) MODE=cpu ;;
    --out) OUT_DIR=${2:?--out needs a folder}; shift ;;
    --out=*) OUT_DIR=${1#--out=} ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (expected --cpu, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR=$(cd "$OUT_DIR" && pwd)

PY=${PY:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export MPLBACKEND=Agg

PLAN=(setup overhead_small tests kernels throughput_small throughput_124m)
declare -A LIMIT
if [ "$MODE" = cpu ]; then
  export CUDA_VISIBLE_DEVICES=""   # the CPU path even on a machine with a GPU
  export TRITON_INTERPRET=1
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  export TOKENIZERS_PARALLELISM=false
  # Measured on a shared 2-core CPU, inductor's cache cold: overhead 71 s, small 18, 124m 108 (its compile).
  BUDGET=${GPU_CHECK_BUDGET:-480}
  LIMIT=([setup]=60 [overhead_small]=150 [tests]=90 [kernels]=60 [throughput_small]=100 [throughput_124m]=0)
  CACHE="$WORK/cache"              # a private token cache: small, rebuilt each run
  INDUCTOR_CACHE=${GPU_CHECK_INDUCTOR_CACHE:-${TMPDIR:-/tmp}/torchinductor_$(id -un)}
else
  export TRITON_INTERPRET=0
  # The token caches are built here with the tokenizers' threads; DataLoader workers never tokenise.
  export TOKENIZERS_PARALLELISM=true
  # Expected on an H100/H200 (a guess until the first run: no GPU has run lamina yet): setup 15 s,
  # overhead 90-120 (two compilations, two full measurements), tests 40, kernels 25, throughput
  # small 30 (inductor's cache warm from the overhead step), 124m 80-100 (BPE of 50304, a cold
  # compilation). 0 = whatever the budget has left (the last step).
  BUDGET=${GPU_CHECK_BUDGET:-455}
  LIMIT=([setup]=40 [overhead_small]=150 [tests]=70 [kernels]=60 [throughput_small]=45 [throughput_124m]=0)
  CACHE=${GPU_CHECK_CACHE:-.cache/lamina}
  INDUCTOR_CACHE=${GPU_CHECK_INDUCTOR_CACHE:-$WORK/inductor}
fi
export TORCHINDUCTOR_CACHE_DIR=$INDUCTOR_CACHE
for name in "${PLAN[@]}"; do  # GPU_CHECK_LIMIT_<step> overrides a limit
  var=GPU_CHECK_LIMIT_$name
  [ -n "${!var:-}" ] && LIMIT[$name]=${!var}
done
ASKED=${GPU_CHECK_STEPS:-}
ASKED=${ASKED//,/ }
SELECTED=(setup)
for name in "${PLAN[@]:1}"; do
  if [ -z "$ASKED" ] || [[ " $ASKED " == *" $name "* ]]; then SELECTED+=("$name"); fi
done
for name in $ASKED; do
  [[ " ${PLAN[*]} " == *" $name "* ]] || { echo "gpu_check: unknown step $name in GPU_CHECK_STEPS (steps: ${PLAN[*]})" >&2; exit 2; }
done
DEADLINE=$((START + BUDGET))
DATE=$(date +%Y-%m-%d)
LOGS="$WORK/logs"
RAW="$WORK/raw"
mkdir -p "$LOGS" "$RAW"

# ---- the device, before anything is installed (torch is the box's own) ----------------------------
if [ "$MODE" = cpu ]; then
  DEVICE=cpu CUDA_RUNTIME=
else
  mapfile -t found < <("$PY" -c 'import torch
print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"); print(torch.version.cuda or "")' 2>/dev/null)
  DEVICE=${found[0]:-unknown} CUDA_RUNTIME=${found[1]:-}
fi
SLUG=$(printf '%s' "$DEVICE" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9._-' '-' | sed 's/--*/-/g; s/^-//; s/-$//')
PREFIX="gpu_check-$SLUG-$DATE"
echo "gpu_check: mode $MODE, device $DEVICE, python $PY, budget ${BUDGET}s, steps ${SELECTED[*]}, out $OUT_DIR/$PREFIX*" >&2
if [ "$MODE" = gpu ] && [ "$DEVICE" = cpu ]; then
  echo "gpu_check: no CUDA device here; the checks will fail (bash bench/gpu_check.sh --cpu runs the CPU variant)" >&2
fi
SUMMARY=("$ROOT/bench/gpu_check_summary.py" --out "$OUT_DIR" --prefix "$PREFIX" --run-dir "$WORK" --run-id "$START-$$"
         --mode "$MODE" --device "$DEVICE" --date "$DATE" --plan "${PLAN[*]}" --selected "${SELECTED[*]}"
         --budget "$BUDGET" --start "$START" --cuda "$CUDA_RUNTIME")
# The summary script is standard-library Python: any python3 runs it, even where PY's setup failed.
SPY=$PY
"$SPY" -c "" 2>/dev/null || SPY=python3

# ---- the benchmarks' arguments -----------------------------------------------------------------
CONFIGS_124M=(--config configs/gpt2-124m.yaml --config configs/gpt2-124m-offline.yaml)
# A corpus cap that builds in seconds (4 MB: about 1.3M tokens, twice what the timed steps read;
# windows are drawn at random, so repeats cost nothing); the model's shape does not depend on it.
DATA_124M=(--data.max_bytes 4000000 --data.tokenizer_sample_bytes 4000000 --data.val_tokens 262144)
if [ "$MODE" = cpu ]; then
  # The GPU path on the CPU: BPE data, compile, bf16-mixed autocast, measuring on; only sizes shrink.
  CPU_PATH=(--trainer.accelerator cpu --trainer.precision bf16-mixed --model.compile true
            --data.num_workers 0 --data.cache_dir "$CACHE")
  SMALL_SHAPE=(--model.n_layer 2 --model.n_head 2 --model.n_embd 64 --model.block_size 64 --data.batch_size 2
               --data.max_bytes 1000000 --data.val_tokens 4096)
  TESTS=(tests/test_kernels.py tests/test_measures.py -k
         "threshold_is_strict or active_rules_known_answer or coactivation_gate_known_answer or gate_and_unit_eps_known_answer")
  KERNEL_ARGS=(--tokens 64 --dims 64 --iters 1 --warmup 0)
  # small.yaml's cadences (partition every 500, ablation every 1000) with --every 2: the measurement in
  # the window (step 2) is a probes-only one, as step 100's is on the GPU.
  OVERHEAD_ARGS=(--config configs/small.yaml --steps 2 --every 2 --warmup 1 --rounds 1 "${CPU_PATH[@]}"
                 "${SMALL_SHAPE[@]}" --instrument.probes.tokens 256 --instrument.probes.batch_size 4
                 --instrument.modularity.tokens 128 --instrument.ablation.examples 2
                 --instrument.lastlayer.problems 2 --instrument.hierarchy.examples 32
                 --instrument.hierarchy.items 512)
  SMALL_ARGS=(--config configs/small.yaml --steps 4 --warmup 2 --rounds 2 "${CPU_PATH[@]}" "${SMALL_SHAPE[@]}")
  # The 124M model itself (12 x 768, vocab 50304); one 128-token row a step and 2 MB of text.
  ARGS_124M=("${CONFIGS_124M[@]}" --steps 2 --warmup 1 --rounds 1 "${CPU_PATH[@]}" --trainer.devices 1
             --model.block_size 128 --data.batch_size 1 --data.max_bytes 2000000
             --data.tokenizer_sample_bytes 2000000 --data.val_tokens 4096)
else
  TESTS=(tests/test_kernels.py tests/test_measures.py)
  KERNEL_ARGS=()
  # small.yaml caps its corpus at 400 MB; 4 MB (about 1.6M BPE tokens) is enough to time steps on
  # and builds in seconds. The same data arguments for both small steps: the second reuses the cache.
  SMALL_DATA=(--data.max_bytes 4000000 --data.val_tokens 262144 --data.cache_dir "$CACHE")
  # One on/off pair: steps 11-110 timed, holding the measurement at step 100 (probes, no partition);
  # step 0 and step 110 measure everything (partition with its eigendecompositions, ablation), outside
  # the window. Each measurement's seconds are in the JSON, and small.yaml's whole schedule follows.
  OVERHEAD_ARGS=(--config configs/small.yaml --steps 100 --warmup 10 --rounds 1 "${SMALL_DATA[@]}")
  # Two rounds (lamina first, then plain first: seconds each once compiled), so that an arm slowed by
  # running first in its process shows as a round apart.
  SMALL_ARGS=(--config configs/small.yaml --steps 60 --warmup 15 --rounds 2 "${SMALL_DATA[@]}")
  ARGS_124M=("${CONFIGS_124M[@]}" --steps 40 --warmup 15 --rounds 2 "${DATA_124M[@]}"
             --data.cache_dir "$CACHE" --trainer.devices 1)
fi

# ---- running a step ------------------------------------------------------------------------------
failed=0
run_step() {  # NAME COMMAND...: runs under the smaller of its limit and the budget left
  local name=$1
  shift
  [[ " ${SELECTED[*]} " == *" $name "* ]] || return 0
  local limit=${LIMIT[$name]}
  local left=$((DEADLINE - $(date +%s) - 5))  # 5 s kept for the summary
  if [ "$limit" -eq 0 ] || [ "$limit" -gt "$left" ]; then limit=$left; fi
  [ "$limit" -lt 0 ] && limit=0
  local warm=0
  [ -n "$(find "$INDUCTOR_CACHE" -type f -print -quit 2>/dev/null)" ] && warm=1
  "$SPY" "${SUMMARY[@]}" begin "$name" --limit "$limit" --command "$*" --cache-warm "$warm"
  local t0 rc
  t0=$(date +%s.%N)
  if [ "$limit" -lt 5 ]; then
    echo "gpu_check: $name not run: the budget of ${BUDGET}s is spent" | tee "$LOGS/$name.log" >&2
    rc=125
  else
    echo "== gpu_check: $name (limit ${limit}s): $*" >&2
    timeout -k 10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    tail -n 4 "$LOGS/$name.log" >&2
  fi
  "$SPY" "${SUMMARY[@]}" end "$name" --rc "$rc" --t0 "$t0" --t1 "$(date +%s.%N)" --limit "$limit" --command "$*" \
    || failed=1
  [ "$rc" -ne 0 ] && failed=1
  return 0
}

# ---- 1. setup: what the box lacks, from carried wheels --------------------------------------------
# (find_spec, not import: lamina.cli would import torch and lightning just to be checked)
IMPORTS="import importlib.util as u, jsonargparse, docstring_parser, typeshed_client
assert u.find_spec('lamina.kernels') and u.find_spec('lamina.cli'), 'lamina is not installed'"
setup() {
  if "$PY" -c "$IMPORTS" 2>/dev/null; then
    echo "setup: lamina and jsonargparse[signatures] import already; nothing installed"
    return 0
  fi
  if [ "$MODE" = cpu ]; then
    echo "setup: $PY cannot import lamina (run make install first):"
    "$PY" -c "$IMPORTS"
    return 1
  fi
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "setup: no wheels in $WHEELS/: run 'make wheels' (bench/fetch_wheels.sh) where pip has the network, and carry .wheels"
    return 1
  fi
  local pip=("$PY" -m pip install -q --disable-pip-version-check --no-cache-dir --no-index)
  # jsonargparse[signatures] with its needs resolved against what the box has; extra/ only fills gaps.
  local deps=(--find-links "$WHEELS" --find-links "$WHEELS/extra" "jsonargparse[signatures]")
  # lamina itself with --no-deps: its dependencies are the box's own (no `datasets`); editable,
  # because lamina.kernels is kernels/, which PYTHONPATH=src cannot reach. Build tools from build/.
  local build=(--no-deps --find-links "$WHEELS/build")
  if "${pip[@]}" "${deps[@]}"; then
    "${pip[@]}" "${build[@]}" -e . || "${pip[@]}" --no-deps --no-build-isolation -e . || return 1
  else
    # The interpreter's environment is read-only: a folder of our own on PYTHONPATH instead.
    echo "setup: installing into $PY's environment failed; installing into $SITE"
    "${pip[@]}" --target "$SITE" "${deps[@]}" || return 1
    "${pip[@]}" "${build[@]}" --target "$SITE" . || "${pip[@]}" --no-deps --no-build-isolation --target "$SITE" . \
      || return 1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
  "$PY" -c "$IMPORTS
import lamina.kernels; print('setup: installed jsonargparse', jsonargparse.__version__, '; lamina.kernels at', lamina.kernels.__file__)"
}
SITE="$ROOT/.gpu_check_site"
WHEELS=${GPU_CHECK_WHEELS:-.wheels}
export MODE PY IMPORTS SITE WHEELS
export -f setup
run_step setup bash -c setup
if [ -d "$SITE" ]; then export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"; fi

# ---- 2-6: each benchmark writes its JSON into its own folder under $RAW ----------------------------
XDIST=()
if [ "$MODE" = gpu ] && "$PY" -c "import xdist" 2>/dev/null; then
  XDIST=(-n 8)  # Triton compiles each test's kernel variants: spread over the box's cores
fi
mkdir -p "$RAW/tests"
run_step overhead_small "$PY" bench/overhead.py --out "$RAW/overhead_small" "${OVERHEAD_ARGS[@]}"
run_step tests "$PY" -m pytest -q -rs -p no:cacheprovider "${XDIST[@]}" "${TESTS[@]}" \
  --junitxml="$RAW/tests/junit.xml"
run_step kernels "$PY" bench/kernel_bandwidth.py --out "$RAW/kernels" "${KERNEL_ARGS[@]}"
run_step throughput_small "$PY" bench/throughput.py --out "$RAW/throughput_small" "${SMALL_ARGS[@]}"
run_step throughput_124m "$PY" bench/throughput.py --out "$RAW/throughput_124m" "${ARGS_124M[@]}"

# ---- the summary ---------------------------------------------------------------------------------
"$SPY" "${SUMMARY[@]}" final
summary_rc=$?
[ "$summary_rc" -ne 0 ] && failed=1
echo "gpu_check: $( [ $failed -eq 0 ] && echo all steps passed || echo 'some steps FAILED' ) in $(( $(date +%s) - START ))s;" \
  "summary $OUT_DIR/$PREFIX.json" >&2
exit $failed
