#!/usr/bin/env bash
# GPU behaviour check, for a lent GPU box (an H100/H200 with torch, lightning, triton, tensorboard,
# tokenizers; no `datasets`, no jsonargparse, no network), in about 6 minutes:
#
#   0. setup           jsonargparse[signatures] from the wheels in .wheels/ (bench/fetch_wheels.sh,
#                      `make wheels`, run beforehand where pip has the network), then lamina itself
#                      (`pip install --no-deps -e .`: `datasets` is never needed for the built-in corpus);
#   1. tests           tests/test_kernels.py and tests/test_measures.py on CUDA, the kernels compiled by
#                      Triton (TRITON_INTERPRET=0) and run on CUDA tensors; a skipped kernel test fails it;
#   2. kernels         bench/kernel_bandwidth.py: GB/s against the device's HBM peak, Gram TFLOP/s (do_bench);
#   3. throughput_small   bench/throughput.py on configs/small.yaml (compile, bf16): tokens/s, MFU, peak
#                      memory, compile time, against the plain loop;
#   4. throughput_124m the same for the GPT-2 124M shape (configs/gpt2-124m.yaml) on the built-in corpus:
#                      with the overlay configs/gpt2-124m-offline.yaml where it exists, else the overrides below;
#   5. overhead_small  bench/overhead.py on configs/small.yaml: measuring on against off.
#
# Everything goes into ONE JSON summary, <out>/gpu_check-<device>-<date>.json, beside the benchmarks'
# own JSON files and one log. Every step runs even if an earlier one failed, each under a time limit
# (and all under GPU_CHECK_BUDGET seconds); the exit status is non-zero if any step failed.
#
#   bash bench/gpu_check.sh [--out DIR]      # on the GPU box; DIR default bench/results (or $GPU_CHECK_OUT)
#   bash bench/gpu_check.sh --cpu --out DIR  # the same steps on the CPU at tiny shapes (tests/test_gpu_check.py)
#
# --cpu hides any GPU, runs the kernel tests under TRITON_INTERPRET=1 on a small subset, the kernel bench
# on a tiny tile (interpreted kernels, checked, untimed), and the benchmarks at a tiny model shape for a
# few steps, so that the script is never broken when a GPU arrives. PY picks the interpreter (default
# .venv/bin/python where it exists, else python3).
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
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
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
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export MPLBACKEND=Agg

if [ "$MODE" = cpu ]; then
  export CUDA_VISIBLE_DEVICES=""   # the CPU path even on a machine with a GPU
  export TRITON_INTERPRET=1
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  export TOKENIZERS_PARALLELISM=false
  BUDGET=${GPU_CHECK_BUDGET:-290}
  # step limits (s): setup tests kernels throughput_small throughput_124m overhead_small
  LIMITS=(60 90 60 80 80 100)
  CACHE="$WORK/cache"              # a private token cache: tiny, rebuilt each run
else
  export TRITON_INTERPRET=0
  # The token caches are built here with the tokenizers' threads; DataLoader workers never tokenise.
  export TOKENIZERS_PARALLELISM=true
  # Expected on an H200 (a guess until the first run: no GPU has run lamina yet): setup 10 s, tests
  # 40, kernels 25, throughput 80 + 100 (compilation most of it), overhead what is left (up to 150);
  # the budget keeps the whole within 6.5 minutes.
  BUDGET=${GPU_CHECK_BUDGET:-390}
  LIMITS=(60 90 60 110 130 150)
  CACHE=${GPU_CHECK_CACHE:-.cache/lamina}
fi
START=$(date +%s)
DEADLINE=$((START + BUDGET))
DATE=$(date +%Y-%m-%d)
LOGS="$WORK/logs"
mkdir -p "$LOGS"
: >"$LOGS/steps.tsv"

# ---- the benchmarks' arguments -----------------------------------------------------------------
CONFIGS_124M=(--config configs/gpt2-124m.yaml)
if [ -f configs/gpt2-124m-offline.yaml ]; then
  CONFIGS_124M+=(--config configs/gpt2-124m-offline.yaml)  # the documented offline overlay
  OFFLINE_ARGS=()
else
  # gpt2-124m.yaml streams a hub dataset; the same model (12 x 768, 1024 context, vocab 50304) on the
  # built-in corpus, with BPE trained on it.
  OFFLINE_ARGS=(--data.source world --data.dataset_config null --data.tokenizer bpe --data.vocab_size 50304)
fi
# A corpus cap that builds in seconds (4 MB: about 1.3M tokens, twice what the timed steps read;
# windows are drawn at random, so repeats cost nothing); the model's shape does not depend on it.
OFFLINE_ARGS+=(--data.max_bytes 4000000 --data.tokenizer_sample_bytes 4000000 --data.val_tokens 262144)
if [ "$MODE" = cpu ]; then
  TINY=(--trainer.accelerator cpu --trainer.precision 32-true --model.compile false
        --model.n_layer 2 --model.n_head 2 --model.n_embd 32 --model.block_size 32
        --data.source world --data.tokenizer byte --data.batch_size 4 --data.max_bytes 100000
        --data.val_tokens 1024 --data.num_workers 0 --data.cache_dir "$CACHE")
  TESTS=(tests/test_kernels.py tests/test_measures.py -k
         "threshold_is_strict or active_rules_known_answer or coactivation_gate_known_answer or gate_and_unit_eps_known_answer")
  KERNEL_ARGS=(--tokens 64 --dims 64 --iters 1 --warmup 0)
  SMALL_ARGS=(--config configs/small.yaml --steps 4 --warmup 1 --rounds 2 "${TINY[@]}")
  OVERHEAD_ARGS=(--config configs/small.yaml --steps 2 --every 2 --warmup 1 --rounds 1 "${TINY[@]}"
                 --instrument.probe_tokens 256 --instrument.probe_batch_size 4
                 --instrument.modularity_every_n_steps 2 --instrument.modularity_tokens 128
                 --instrument.ablation_every_n_steps 2 --instrument.ablation_examples 2
                 --instrument.lastlayer_problems 2)
  ARGS_124M=("${CONFIGS_124M[@]}" --steps 3 --warmup 1 --rounds 1 "${OFFLINE_ARGS[@]}" "${TINY[@]}"
             --trainer.devices 1)
else
  TESTS=(tests/test_kernels.py tests/test_measures.py)
  KERNEL_ARGS=()
  # small.yaml caps its corpus at 400 MB; 4 MB (about 1.6M BPE tokens) is enough to time steps on
  # and builds in seconds. The same data arguments for both small steps: the second reuses the cache.
  SMALL_DATA=(--data.max_bytes 4000000 --data.val_tokens 262144 --data.cache_dir "$CACHE")
  SMALL_ARGS=(--config configs/small.yaml --steps 60 --warmup 15 --rounds 1 "${SMALL_DATA[@]}")
  # 300 steps hold three of small.yaml's measurements (every 100); its partition (every 500) and
  # ablation (every 1000) run at step 0 and at the end, outside the timed window. Each measurement's
  # seconds, with what it did, are in the JSON: the cost of any cadence follows from them.
  OVERHEAD_ARGS=(--config configs/small.yaml --steps 300 --warmup 10 --rounds 1 "${SMALL_DATA[@]}")
  ARGS_124M=("${CONFIGS_124M[@]}" --steps 40 --warmup 15 --rounds 1 "${OFFLINE_ARGS[@]}"
             --data.cache_dir "$CACHE" --trainer.devices 1)
fi

# ---- running a step ------------------------------------------------------------------------------
failed=0
run_step() {  # NAME LIMIT COMMAND...: runs under the smaller of LIMIT and the budget left
  local name=$1 limit=$2
  shift 2
  local left=$((DEADLINE - $(date +%s) - 10))  # 10 s kept for the summary
  [ "$limit" -gt "$left" ] && limit=$left
  [ "$limit" -lt 0 ] && limit=0
  local t0 rc
  t0=$(date +%s.%N)
  if [ "$limit" -lt 5 ]; then
    echo "gpu_check: $name not run: the budget of ${BUDGET}s is spent" | tee "$LOGS/$name.log" >&2
    rc=125
  else
    echo "== gpu_check: $name (limit ${limit}s): $*" >&2
    timeout -k 10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    tail -n 5 "$LOGS/$name.log" >&2
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$t0" "$(date +%s.%N)" "$limit" >>"$LOGS/steps.tsv"
  [ "$rc" -ne 0 ] && failed=1
  return 0
}

# ---- 0. setup: what the box lacks, from carried wheels --------------------------------------------
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
run_step setup "${LIMITS[0]}" bash -c setup
if [ -d "$SITE" ]; then export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"; fi

if [ "$MODE" = cpu ]; then
  DEVICE=cpu CUDA_RUNTIME=
else
  mapfile -t found < <("$PY" -c 'import torch
print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"); print(torch.version.cuda or "")' 2>/dev/null)
  DEVICE=${found[0]:-unknown} CUDA_RUNTIME=${found[1]:-}
fi
SLUG=$(printf '%s' "$DEVICE" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9._-' '-' | sed 's/--*/-/g; s/^-//; s/-$//')
SUMMARY="$OUT_DIR/gpu_check-$SLUG-$DATE.json"
echo "gpu_check: mode $MODE, device $DEVICE, python $PY, budget ${BUDGET}s, out $OUT_DIR" >&2
if [ "$MODE" = gpu ] && [ "$DEVICE" = cpu ]; then
  echo "gpu_check: no CUDA device here; the checks will fail (bash bench/gpu_check.sh --cpu runs the CPU variant)" >&2
fi

# ---- 1-5 -----------------------------------------------------------------------------------------
XDIST=()
if [ "$MODE" = gpu ] && "$PY" -c "import xdist" 2>/dev/null; then
  XDIST=(-n 8)  # Triton compiles each test's kernel variants: spread over the box's cores
fi
run_step tests "${LIMITS[1]}" "$PY" -m pytest -q -rs -p no:cacheprovider "${XDIST[@]}" "${TESTS[@]}" \
  --junitxml="$LOGS/tests.xml"
run_step kernels "${LIMITS[2]}" "$PY" bench/kernel_bandwidth.py --out "$OUT_DIR" "${KERNEL_ARGS[@]}"
run_step throughput_small "${LIMITS[3]}" "$PY" bench/throughput.py --out "$OUT_DIR" "${SMALL_ARGS[@]}"
run_step throughput_124m "${LIMITS[4]}" "$PY" bench/throughput.py --out "$OUT_DIR" "${ARGS_124M[@]}"
# Last: its cost (the measurements at step 0 and at the end partition and ablate) is the least known.
run_step overhead_small "${LIMITS[5]}" "$PY" bench/overhead.py --out "$OUT_DIR" "${OVERHEAD_ARGS[@]}"

# ---- the summary ---------------------------------------------------------------------------------
"$PY" bench/gpu_check_summary.py --mode "$MODE" --device "$DEVICE" --date "$DATE" --logs "$LOGS" \
  --summary "$SUMMARY" --log "$OUT_DIR/gpu_check-$SLUG-$DATE.log" --budget "$BUDGET" --start "$START" \
  --cuda "$CUDA_RUNTIME"
summary_rc=$?
[ "$summary_rc" -ne 0 ] && failed=1
echo "gpu_check: $( [ $failed -eq 0 ] && echo all steps passed || echo 'some steps FAILED' ); summary $SUMMARY" >&2
exit $failed
