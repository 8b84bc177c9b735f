"""The one JSON summary of bench/gpu_check.sh: every step's status, time and limit, the test counts,
each benchmark's own JSON (found by the `wrote <path>` line it prints) and a headline of the
numbers a reader looks for first. Exits 1 when a step failed, ran out of time, was not run, or
passed without its result (a benchmark that wrote no JSON, a kernel test that was skipped)."""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

STEPS = ("setup", "tests", "kernels", "throughput_small", "throughput_124m", "overhead_small")
BENCHMARKS = ("kernels", "throughput_small", "throughput_124m", "overhead_small")
TAIL = 3000


def read_steps(logs: Path) -> dict:
    steps = {}
    for line in (logs / "steps.tsv").read_text().splitlines():
        name, rc, t0, t1, limit = line.split("\t")
        rc = int(rc)
        status = {0: "ok", 124: "timeout", 137: "timeout", 125: "not_run"}.get(rc, "failed")
        steps[name] = {"status": status, "exit_code": rc, "seconds": round(float(t1) - float(t0), 2),
                       "limit_s": int(limit)}
    for name in STEPS:  # a step the script never reached is reported, not left out
        steps.setdefault(name, {"status": "not_run", "exit_code": None, "seconds": 0.0, "limit_s": None})
        log = logs / f"{name}.log"
        steps[name]["log_tail"] = log.read_text(errors="replace")[-TAIL:] if log.exists() else ""
    return steps


def wrote(log: Path):
    """The JSON file a benchmark says it wrote, loaded (None when it wrote none)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    for path in reversed(re.findall(r"^wrote (\S+\.json)$", text, flags=re.M)):
        if Path(path).exists():
            return path, json.loads(Path(path).read_text())
    return None, None


def test_counts(xml: Path, step: dict) -> None:
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError) as err:
        step["junit_error"] = repr(err)
        return
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    step.update(counts)
    step["time_s"] = round(sum(float(s.get("time", 0)) for s in suites), 2)
    skipped = []
    for case in root.iter("testcase"):
        skip = case.find("skipped")
        if skip is not None:
            skipped.append({"test": f"{case.get('classname')}::{case.get('name')}",
                            "reason": skip.get("message", "")})
    step["skipped_tests"] = skipped
    # A kernel test that skips ran no kernel: on a GPU box that is the failure this check exists for.
    kernel_skips = [s for s in skipped if "test_kernels" in s["test"]]
    if counts["tests"] == 0 or kernel_skips:
        step["status"] = "failed"
        step["why"] = "no test ran" if counts["tests"] == 0 else f"{len(kernel_skips)} kernel tests skipped"


def headline(steps: dict) -> dict:
    out = {}
    tests = steps["tests"]
    out["tests"] = {k: tests.get(k) for k in ("passed", "failures", "errors", "skipped")}
    k = steps["kernels"].get("result")
    if k:
        rows = k["results"]
        sparsity = [r for r in rows if r["measure"] == "sparsity_stats"]
        gram = [r for r in rows if r["measure"] == "coactivation"]
        out["kernels"] = {
            "kernels_timed": k.get("kernels_timed"),
            "hbm_peak_bytes_per_s": k.get("hbm_peak_bytes_per_s"),
            "sparsity_best_gbps": max((r.get("kernel_gbps") or 0 for r in sparsity), default=None),
            "sparsity_best_hbm_fraction": max((r.get("kernel_hbm_fraction") or 0 for r in sparsity), default=None),
            "sparsity_reference_best_gbps": max((r["reference_gbps"] for r in sparsity), default=None),
            "gram_best_tflops": max((r.get("kernel_tflops") or 0 for r in gram), default=None),
            "gram_best_peak_fraction": max((r.get("kernel_peak_fraction") or 0 for r in gram), default=None),
            "gram_reference_best_tflops_dense": max((r["reference_tflops_dense"] for r in gram), default=None),
            "all_match_reference": all(r.get("active_counts_equal", True) and r.get("max_abs_err_counts", 0) == 0
                                       for r in rows),
        }
    for name in ("throughput_small", "throughput_124m"):
        t = steps[name].get("result")
        if t:
            out[name] = {
                "params": t["params"],
                "tokens_per_step": t["tokens_per_step"],
                "lamina_tokens_per_sec": t["lamina_tokens_per_sec"],
                "plain_tokens_per_sec": t["plain_tokens_per_sec"],
                "ratio_lamina_over_plain": t["ratio_lamina_over_plain"],
                "mfu_lamina": t["mfu"]["lamina"],
                "mfu_plain": t["mfu"]["plain"],
                "compile": t["compile"],
                "compile_seconds_estimate": t["compile_seconds_estimate"],
                "peak_memory_allocated_bytes": t.get("peak_memory_allocated_bytes"),
                "process_max_rss_bytes": max(r[a]["process_max_rss_bytes"] for r in t["rounds"]
                                             for a in ("lamina", "plain")),
            }
    o = steps["overhead_small"].get("result")
    if o:
        seconds = [m["seconds"] for r in o["rounds"] for m in r["on"]["all_measurements"]]
        out["overhead_small"] = {
            "timed_steps": o["timed_steps"],
            "overhead_pct_median": o["overhead_pct_median"],
            "measured_share_pct_median": o["measured_share_pct_median"],
            "off_step_seconds_median": o["off_step_seconds_median"],
            "measurements": len(seconds),
            "measurement_seconds_max": max(seconds, default=None),
        }
    return out


def versions() -> dict:
    """Installed versions, read from the packages' metadata (importing torch here would cost seconds)."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in ("torch", "triton", "lightning", "jsonargparse", "tokenizers", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    for flag in ("--mode", "--device", "--date", "--logs", "--summary", "--log"):
        p.add_argument(flag, required=True)
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--start", type=int, required=True)
    p.add_argument("--cuda", default=None, help="the CUDA runtime torch was built with")
    args = p.parse_args()
    logs = Path(args.logs)
    steps = read_steps(logs)
    test_counts(logs / "tests.xml", steps["tests"])
    for name in BENCHMARKS:
        path, result = wrote(logs / f"{name}.log")
        steps[name]["json"], steps[name]["result"] = path, result
        if steps[name]["status"] == "ok" and result is None:
            steps[name]["status"], steps[name]["why"] = "failed", "exited 0 but wrote no JSON"
    failed = [name for name in STEPS if steps[name]["status"] != "ok"]
    summary = {
        "check": "gpu_check",
        "mode": args.mode,
        "device": args.device,
        "date": args.date,
        "ok": not failed,
        "failed_steps": failed,
        "total_seconds": round(time.time() - args.start, 1),
        "budget_s": args.budget,
        "triton_interpret": "1" if args.mode == "cpu" else "0",
        "versions": {**versions(), "cuda": args.cuda or None},
        "headline": headline(steps),
        "steps": steps,
    }
    Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n")
    with open(args.log, "w") as log:
        for name in STEPS:
            path = logs / f"{name}.log"
            log.write(f"==== {name}: {steps[name]['status']} ({steps[name]['seconds']} s)\n")
            log.write(path.read_text(errors="replace") if path.exists() else "(no log)\n")
    print(json.dumps({"ok": summary["ok"], "failed_steps": failed, "headline": summary["headline"]}, indent=1))
    print(f"wrote {args.summary}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
