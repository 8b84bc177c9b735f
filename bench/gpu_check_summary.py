"""The JSON files of bench/gpu_check.sh: one per step, written as the step begins (status "running")
and again as it ends, and a summary rebuilt from whatever step files exist each time, so that a
check stopped at any point (a step over its limit, the whole command killed) leaves every finished
step's result and a summary that names the rest.

    gpu_check_summary.py begin NAME --limit S --run-dir DIR ...      # before a step
    gpu_check_summary.py end NAME --rc RC --t0 T --t1 T ...          # after it
    gpu_check_summary.py final ...                                   # at the end: prints the headline

Files (OUT is the check's output folder, PREFIX `gpu_check-<device>-<date>`):

    OUT/PREFIX-<k>-<step>.json   one step: status (ok, failed, timeout, not_run, running), exit code,
                                 seconds, limit, the tail of its log, its benchmark's JSON (`result`,
                                 possibly partial: `result_complete`) and `headline`, its numbers
    OUT/PREFIX.json              the summary: every planned step's status, `failed_steps`, the
                                 headline of each step that left numbers, versions, `complete`
    OUT/PREFIX.log               every step's log, in order

A step's benchmark writes its JSON into RUN_DIR/raw/<step>/ (benchmarks write after each arm); its
log is RUN_DIR/logs/<step>.log. Standard library only (it runs before lamina is installed).
Exits 1 from `final` when a step did not pass: failed, ran out of time, was not run, or passed
without its result (a benchmark that wrote no JSON, a kernel test that was skipped).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

STEPS = ("setup", "overhead_small", "tests", "kernels", "throughput_small", "throughput_124m")
BENCHMARKS = ("overhead_small", "kernels", "throughput_small", "throughput_124m")
TAIL = 6000
STATUS = {0: "ok", 124: "timeout", 137: "timeout", 125: "not_run"}


# ---- one step ------------------------------------------------------------------------------------

def step_path(args, name: str) -> Path:
    return Path(args.out) / f"{args.prefix}-{args.plan.index(name) + 1}-{name}.json"


def load_result(raw: Path):
    """The newest JSON a benchmark wrote into `raw` (None, None when none; an unreadable one is
    reported, not raised)."""
    files = sorted(raw.glob("*.json"), key=lambda p: p.stat().st_mtime) if raw.is_dir() else []
    if not files:
        return None, None
    try:
        return files[-1], json.loads(files[-1].read_text())
    except (OSError, ValueError) as err:
        return files[-1], {"unreadable": repr(err)}


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
    skipped, failed = [], []
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        skip = case.find("skipped")
        if skip is not None:
            skipped.append({"test": name, "reason": skip.get("message", "")})
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
    step["skipped_tests"] = skipped
    step["failed_tests"] = failed[:50]
    # A kernel test that skips ran no kernel: on a GPU box that is the failure this check exists for.
    kernel_skips = [s for s in skipped if "test_kernels" in s["test"]]
    if step["status"] == "ok" and (counts["tests"] == 0 or kernel_skips):
        step["status"] = "failed"
        step["why"] = "no test ran" if counts["tests"] == 0 else f"{len(kernel_skips)} kernel tests skipped"


def headline_of(name: str, step: dict) -> dict | None:
    """The numbers a reader looks for first, from a step's (possibly partial) result."""
    if name == "tests":
        return {k: step.get(k) for k in ("passed", "failures", "errors", "skipped", "time_s")} if "tests" in step else None
    r = step.get("result")
    if not r or "unreadable" in r:
        return None
    if name == "kernels":
        rows = r.get("results", [])
        sparsity = [x for x in rows if x["measure"] == "sparsity_stats"]
        gram = [x for x in rows if x["measure"] == "coactivation"]
        def best(rows, key):  # None where no row has the figure (no peak known, kernels not run)
            return max((x[key] for x in rows if x.get(key) is not None), default=None)

        return {
            "kernels_timed": r.get("kernels_timed"),
            "device": r.get("device"),
            "hbm_peak_bytes_per_s": r.get("hbm_peak_bytes_per_s"),
            "dense_bf16_peak_flops": r.get("dense_bf16_peak_flops"),
            "sparsity_best_gbps": best(sparsity, "kernel_gbps"),
            "sparsity_best_hbm_fraction": best(sparsity, "kernel_hbm_fraction"),
            "sparsity_one_pass_best_hbm_fraction": best(sparsity, "one_pass_hbm_fraction"),
            "sparsity_reference_best_gbps": best(sparsity, "reference_gbps"),
            "gram_best_tflops": best(gram, "kernel_tflops"),
            "gram_best_peak_fraction": best(gram, "kernel_peak_fraction"),
            "gram_reference_best_tflops_dense": best(gram, "reference_tflops_dense"),
            "all_match_reference": all(x.get("active_counts_equal", True) and x.get("max_abs_err_counts", 0) == 0
                                       for x in rows),
        }
    if name.startswith("throughput"):
        arms = [a for rd in r.get("rounds", []) + ([r["partial_round"]] if r.get("partial_round") else [])
                for a in (rd.get("lamina"), rd.get("plain")) if a]
        return {
            "complete": r.get("complete", True),
            "params": r.get("params"),
            "tokens_per_step": r.get("tokens_per_step"),
            "precision": r.get("precision"),
            "compile": r.get("compile"),
            "model_shape": r.get("model_shape"),
            "tokenizer": (r.get("data") or {}).get("tokenizer"),
            "lamina_tokens_per_sec": r.get("lamina_tokens_per_sec"),
            "plain_tokens_per_sec": r.get("plain_tokens_per_sec"),
            "ratio_lamina_over_plain": r.get("ratio_lamina_over_plain"),
            "mfu_lamina": (r.get("mfu") or {}).get("lamina"),
            "mfu_plain": (r.get("mfu") or {}).get("plain"),
            "compile_seconds_estimate": r.get("compile_seconds_estimate"),
            "peak_memory_allocated_bytes": r.get("peak_memory_allocated_bytes"),
            "process_max_rss_bytes": max((a.get("process_max_rss_bytes") or 0 for a in arms), default=None),
        }
    if name.startswith("overhead"):
        e = r.get("estimates") or {}
        return {
            "complete": r.get("complete", True),
            "stage": r.get("stage"),
            "precision": r.get("precision"),
            "compile": r.get("compile"),
            "model_shape": r.get("model_shape"),
            "every_n_steps": e.get("every_n_steps"),
            "overhead_pct_every_n": e.get("overhead_pct_every_n"),
            "periodic_measurement_seconds": e.get("periodic_measurement_seconds"),
            "full_measurement_seconds": e.get("full_measurement_seconds"),
            "start_measurement_seconds": e.get("start_measurement_seconds"),
            "schedule_overhead_pct_upper_bound": e.get("schedule_overhead_pct_upper_bound"),
            "step_seconds": e.get("step_seconds"),
            "step_seconds_source": e.get("step_seconds_source"),
            "ratio_on_over_off_median": (r.get("ratio_on_over_off") or {}).get("median"),
            "measured_share_pct_median": r.get("measured_share_pct_median"),
            "timed_steps": r.get("timed_steps"),
            "compile_seconds_estimate": e.get("compile_seconds_estimate"),
            "peak_memory_allocated_bytes": e.get("peak_memory_allocated_bytes"),
            "process_max_rss_bytes": e.get("process_max_rss_bytes"),
        }
    return None


def common(args) -> dict:
    return {"check": "gpu_check", "run_id": args.run_id, "mode": args.mode, "device": args.device, "date": args.date}


def begin(args) -> None:
    step = {**common(args), "step": args.name, "index": args.plan.index(args.name) + 1, "status": "running",
            "started_at": round(time.time(), 2), "limit_s": args.limit, "command": args.command,
            "inductor_cache_warm": args.cache_warm}
    write(step_path(args, args.name), step)


def end(args) -> dict:
    run_dir = Path(args.run_dir)
    path = step_path(args, args.name)
    try:
        step = json.loads(path.read_text())
    except (OSError, ValueError):
        step = {**common(args), "step": args.name, "index": args.plan.index(args.name) + 1,
                "limit_s": args.limit, "command": args.command}
    status = STATUS.get(args.rc, "failed")
    step.update(status=status, exit_code=args.rc, seconds=round(args.t1 - args.t0, 2), ended_at=round(args.t1, 2))
    if status == "timeout":
        step["why"] = f"stopped at its limit of {step.get('limit_s')} s"
    elif status == "not_run":
        step["why"] = "the check's time budget was spent"
    elif status == "failed":
        step["why"] = f"exit code {args.rc}"
    log = run_dir / "logs" / f"{args.name}.log"
    step["log_tail"] = log.read_text(errors="replace")[-TAIL:] if log.exists() else ""
    if args.name == "tests":
        test_counts(run_dir / "raw" / "tests" / "junit.xml", step)
    if args.name in BENCHMARKS:
        file, result = load_result(run_dir / "raw" / args.name)
        step["result_file"] = file.name if file else None
        step["result_complete"] = bool(result and result.get("complete", True) and "unreadable" not in result)
        step["result"] = result
        if status == "ok" and result is None:
            step["status"], step["why"] = "failed", "exited 0 but wrote no JSON"
        elif status == "ok" and not step["result_complete"]:
            step["status"], step["why"] = "failed", "exited 0 but its JSON is incomplete"
        elif status == "ok" and args.name == "kernels" and args.mode == "gpu" and result.get("kernels_timed") is not True:
            # on the GPU box the point is the compiled kernels' speed; references alone do not pass
            step["status"], step["why"] = "failed", f"the kernels were not timed on CUDA ({result.get('note')})"
        elif status != "ok" and result is not None:
            step["why"] += "; its JSON holds what it finished (result_complete false)"
    step["headline"] = headline_of(args.name, step)
    write(path, step)
    return step


# ---- the summary ---------------------------------------------------------------------------------

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


def summarise(args, final: bool) -> dict:
    steps = {}
    for name in args.plan:
        path = step_path(args, name)
        try:
            step = json.loads(path.read_text())
        except (OSError, ValueError):
            step = None
        if step is not None and step.get("run_id") != args.run_id:
            step = None  # an earlier check's file in the same folder
        file = path.name if step is not None else None
        if step is None:
            if name not in args.selected:
                step = {"status": "skipped", "why": "not selected (GPU_CHECK_STEPS)"}
            else:
                step = {"status": "not_run" if final else "pending"}
                if final:
                    step["why"] = "the check ended before it"
        elif step["status"] == "running" and final:
            step["status"], step["why"] = "failed", "began but never ended"
        step.pop("run_id", None)
        steps[name] = {"file": file, **step}
    failed = [n for n, s in steps.items() if s["status"] not in ("ok", "skipped", "pending")]
    pending = [n for n, s in steps.items() if s["status"] in ("pending", "running")]
    summary = {
        **common(args),
        "complete": final,
        "ok": final and not failed and not pending,
        "failed_steps": [n for n in failed if n not in pending],
        "pending_steps": pending,
        "plan": list(args.plan),
        "selected": list(args.selected),
        "total_seconds": round(time.time() - args.start, 1),
        "budget_s": args.budget,
        "triton_interpret": "1" if args.mode == "cpu" else "0",
        "versions": {**versions(), "cuda": args.cuda or None},
        "headline": {n: s["headline"] for n, s in steps.items() if s.get("headline")},
        "steps": {n: {k: s.get(k) for k in ("file", "status", "why", "exit_code", "seconds", "limit_s")}
                  for n, s in steps.items()},
    }
    write(Path(args.out) / f"{args.prefix}.json", summary)
    with open(Path(args.out) / f"{args.prefix}.log", "w") as log:
        for name in args.plan:
            path = Path(args.run_dir) / "logs" / f"{name}.log"
            if not path.exists():
                continue
            log.write(f"==== {name}: {steps[name]['status']} ({steps[name].get('seconds')} s)\n")
            log.write(path.read_text(errors="replace"))
    return summary


def write(path: Path, data: dict) -> None:
    """Whole or not at all: a check killed while writing leaves the previous version."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("event", choices=("begin", "end", "final"))
    p.add_argument("name", nargs="?", help="the step (begin, end)")
    for flag in ("--out", "--prefix", "--run-dir", "--run-id", "--mode", "--device", "--date"):
        p.add_argument(flag, required=True)
    p.add_argument("--plan", default=" ".join(STEPS), help="the steps in order, space-separated")
    p.add_argument("--selected", default=None, help="the steps this check runs (default: the plan)")
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--start", type=float, required=True)
    p.add_argument("--cuda", default=None, help="the CUDA runtime torch was built with")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--command", default=None)
    p.add_argument("--cache-warm", default=None, help="whether the inductor cache held files as the step began")
    p.add_argument("--rc", type=int, default=None)
    p.add_argument("--t0", type=float, default=None)
    p.add_argument("--t1", type=float, default=None)
    args = p.parse_args(argv)
    args.plan = args.plan.split()
    args.selected = args.selected.split() if args.selected else list(args.plan)
    if args.cache_warm is not None:
        args.cache_warm = args.cache_warm in ("1", "true", "yes")
    if args.event in ("begin", "end") and args.name not in args.plan:
        p.error(f"{args.event} needs a step of the plan ({' '.join(args.plan)}), got {args.name!r}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.event == "begin":
        begin(args)
    elif args.event == "end":
        if args.rc is None or args.t0 is None or args.t1 is None:
            p.error("end needs --rc, --t0 and --t1")
        step = end(args)
        print(f"gpu_check: {args.name}: {step['status']}" + (f" ({step['why']})" if step.get("why") else "")
              + f"; wrote {step_path(args, args.name)}", file=sys.stderr)
    summary = summarise(args, final=args.event == "final")
    if args.event != "final":
        return 0
    print(json.dumps({"ok": summary["ok"], "failed_steps": summary["failed_steps"],
                      "headline": summary["headline"]}, indent=1))
    print(f"wrote {Path(args.out) / (args.prefix + '.json')}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
