#!/usr/bin/env bash
# GPU behaviour check, run on a machine with a CUDA device (a lent GPU box):
#   1. the kernel and measure tests on CUDA, compiled by Triton (TRITON_INTERPRET=0, not the interpreter);
#   2. bench/kernels.py (kernels against their references: GB/s, TFLOP/s);
#   3. bench/overhead.py on configs/small.yaml (instrumentation on every 100 steps vs off).
# Writes bench/results/<device>-<date>.json (the summary; the benchmarks' own JSON files sit beside it).
#
#   bash bench/gpu_check.sh                 # PY=/path/to/python to pick the interpreter
#   OVERHEAD_ARGS="--rounds 1 --data.max_bytes 40000000" bash bench/gpu_check.sh
#   OVERHEAD_CONFIG=configs/tiny.yaml OVERHEAD_ARGS="--steps 4 --every 2 --rounds 1" bash bench/gpu_check.sh  # smoke, CPU
#
# Needs torch (CUDA build), triton, lightning, tokenizers, tensorboard, pytest; NOT `datasets`: the
# built-in corpus never imports it. Every step runs even if an earlier one fails; the exit status is
# non-zero if any failed.
set -u
cd "$(dirname "$0")/.."

PY=${PY:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
OUT=bench/results
mkdir -p "$OUT"
LOGS=$(mktemp -d)
DATE=$(date +%Y-%m-%d)
DEVICE=$("$PY" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")' 2>/dev/null || echo unknown)
SLUG=$(printf '%s' "$DEVICE" | tr -c 'A-Za-z0-9._-' '-' | sed 's/--*/-/g; s/^-//; s/-$//')
SUMMARY="$OUT/$SLUG-$DATE.json"
[ "$DEVICE" = cpu ] && echo "gpu_check: no CUDA device; the kernel tests will skip and the benchmarks run on the CPU" >&2

echo "gpu_check: device $DEVICE, python $PY" >&2
status=0

echo "== 1/3 kernel and measure tests on CUDA (TRITON_INTERPRET=0)" >&2
TRITON_INTERPRET=0 "$PY" -m pytest -q -rs tests/test_kernels.py tests/test_measures.py \
  --junitxml="$LOGS/pytest.xml" 2>&1 | tee "$LOGS/pytest.log"
pytest_rc=${PIPESTATUS[0]}
[ "$pytest_rc" -ne 0 ] && status=1

echo "== 2/3 bench/kernels.py" >&2
"$PY" bench/kernels.py --out "$OUT" 2>&1 | tee "$LOGS/kernels.log"
kernels_rc=${PIPESTATUS[0]}
[ "$kernels_rc" -ne 0 ] && status=1

OVERHEAD_CONFIG=${OVERHEAD_CONFIG:-configs/small.yaml}
# A smaller corpus cap than small.yaml's 400 MB: the overhead does not depend on it, and the token
# cache then builds in a minute or two.
OVERHEAD_ARGS=${OVERHEAD_ARGS:---data.max_bytes 40000000}
echo "== 3/3 bench/overhead.py ($OVERHEAD_CONFIG $OVERHEAD_ARGS)" >&2
# shellcheck disable=SC2086
"$PY" bench/overhead.py --config "$OVERHEAD_CONFIG" --out "$OUT" $OVERHEAD_ARGS 2>&1 | tee "$LOGS/overhead.log"
overhead_rc=${PIPESTATUS[0]}
[ "$overhead_rc" -ne 0 ] && status=1

"$PY" - "$SUMMARY" "$DEVICE" "$DATE" "$LOGS" "$pytest_rc" "$kernels_rc" "$overhead_rc" <<'EOF'
import json, platform, re, sys, xml.etree.ElementTree as ET
from pathlib import Path

summary, device, date, logs, pytest_rc, kernels_rc, overhead_rc = sys.argv[1:]
logs = Path(logs)


def wrote(log):
    """The JSON file a benchmark says it wrote, loaded (None if it wrote none)."""
    text = (logs / log).read_text(errors="replace") if (logs / log).exists() else ""
    paths = re.findall(r"(?:wrote|->)\s+(\S+\.json)", text)
    for p in reversed(paths):
        if Path(p).exists():
            return {"path": p, "result": json.loads(Path(p).read_text())}
    return {"path": None, "log_tail": text[-4000:]}


tests = {"exit_code": int(pytest_rc)}
try:
    suite = ET.parse(logs / "pytest.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    for key in ("tests", "failures", "errors", "skipped"):
        tests[key] = int(suite.get(key, 0))
    tests["passed"] = tests["tests"] - tests["failures"] - tests["errors"] - tests["skipped"]
    tests["time_s"] = float(suite.get("time", 0))
except Exception as err:  # noqa: BLE001 - a summary must still be written
    tests["junit_error"] = repr(err)
tests["log_tail"] = (logs / "pytest.log").read_text(errors="replace")[-4000:]
try:
    import torch, triton  # noqa: E401
    versions = {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda}
except Exception as err:  # noqa: BLE001
    versions = {"error": repr(err)}
out = {
    "check": "gpu_check",
    "device": device,
    "date": date,
    "python": platform.python_version(),
    "versions": versions,
    "triton_interpret": "0",
    "tests": tests,
    "kernels": {"exit_code": int(kernels_rc), **wrote("kernels.log")},
    "overhead": {"exit_code": int(overhead_rc), **wrote("overhead.log")},
}
Path(summary).write_text(json.dumps(out, indent=2))
print(f"gpu_check: wrote {summary}")
EOF
exit $status
