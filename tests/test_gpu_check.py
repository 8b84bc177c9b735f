"""bench/gpu_check.sh: its JSON files, one per step and a summary rebuilt from them, and the GPU
path rehearsed end to end on the CPU (`--cpu`: BPE data, model.compile, bf16-mixed autocast,
measuring on, the 124M shape), so that the script works the first time a GPU box is lent.

The whole rehearsal takes about 3.5 minutes on two shared cores with inductor's cache cold (most of
it compiling the 124M model), under 2 warm; a partial run (one step over its limit) about 20 s; the
summary's own tests, with made-up step logs, a second."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check_summary  # noqa: E402

STEPS = ("setup", "overhead_small", "tests", "kernels", "throughput_small", "throughput_124m")
BENCHMARKS = ("overhead_small", "kernels", "throughput_small", "throughput_124m")


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def assert_numbers(section: dict, keys, where: str) -> None:
    for key in keys:
        assert is_number(section.get(key)), f"{where}.{key} = {section.get(key)!r}"


def run_check(out: Path, timeout: int, **env) -> subprocess.CompletedProcess:
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.fail("gpu_check.sh needs bash and coreutils' timeout")
    env = {**os.environ, "PY": sys.executable, **env}
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def files(out: Path) -> tuple[dict, dict]:
    """The summary and the step files (by step name) a check left in `out`."""
    summaries = sorted(out.glob("gpu_check-cpu-????-??-??.json"))
    assert len(summaries) == 1, sorted(p.name for p in out.iterdir())
    summary = json.loads(summaries[0].read_text())
    steps = {}
    for path in out.glob("gpu_check-cpu-????-??-??-*-*.json"):
        step = json.loads(path.read_text())
        assert path.name == f"{summaries[0].stem}-{step['index']}-{step['step']}.json"
        steps[step["step"]] = step
    return summary, steps


# ---- the whole rehearsal -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    done = run_check(out, timeout=600)
    summary, steps = files(out)
    failed = {name: (step["status"], step.get("why"), step.get("log_tail", "")[-1500:])
              for name, step in steps.items() if step["status"] != "ok"}
    assert done.returncode == 0 and summary["ok"], f"exit {done.returncode}, failed steps: {failed}\n{done.stderr[-3000:]}"
    return out, summary, steps


def test_one_json_per_step_and_a_summary(rehearsal):
    out, summary, steps = rehearsal
    assert summary["mode"] == "cpu" and summary["triton_interpret"] == "1" and summary["complete"]
    assert summary["plan"] == list(STEPS) and list(summary["steps"]) == list(STEPS)
    assert summary["failed_steps"] == [] and summary["pending_steps"] == []
    assert set(steps) == set(STEPS)
    for name, step in steps.items():
        assert step["status"] == "ok" and step["exit_code"] == 0, name
        assert is_number(step["seconds"]) and step["seconds"] <= step["limit_s"] + 15, name
        assert summary["steps"][name]["file"] == f"{Path(sorted(out.glob('*.log'))[0]).stem}-{step['index']}-{name}.json"
        assert step["log_tail"], name
    assert [steps[n]["index"] for n in STEPS] == list(range(1, 7))
    # the end-to-end measurement step runs right after setup, on its own budget
    assert steps["overhead_small"]["started_at"] <= min(steps[n]["started_at"] for n in STEPS[2:])
    assert summary["total_seconds"] <= summary["budget_s"] + 15
    for name in BENCHMARKS:
        assert steps[name]["result_complete"] and steps[name]["result"].get("complete") is not False, name
        assert summary["headline"][name] == steps[name]["headline"], name
    # what a device run's $OUT brings back: at most 8 files
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 8 and sum(n.endswith(".log") for n in names) == 1, names


def test_kernel_tests_ran_without_skips(rehearsal):
    tests = rehearsal[2]["tests"]
    assert tests["passed"] > 0 and tests["failures"] == tests["errors"] == tests["skipped"] == 0
    assert tests["skipped_tests"] == []
    assert rehearsal[1]["headline"]["tests"]["passed"] == tests["passed"]


def test_kernel_bench_checked_the_kernels(rehearsal):
    kernels = rehearsal[2]["kernels"]["result"]
    assert kernels["kernels_timed"] == "interpreted"
    assert {(r["measure"], r["rule"]) for r in kernels["results"]} == {
        (m, rule) for m in ("sparsity_stats", "coactivation") for rule in ("eps", "sign")}
    for row in kernels["results"]:
        where = f"kernels[{row['measure']},{row['rule']}]"
        if row["measure"] == "sparsity_stats":
            assert_numbers(row, ("reference_ms", "reference_gbps", "kernel_ms", "kernel_gbps", "one_pass_ms"), where)
            assert row["active_counts_equal"] and row["max_rel_err_abs_sum"] < 1e-4
        else:
            assert_numbers(row, ("reference_ms", "reference_tflops_dense", "kernel_ms", "kernel_tflops"), where)
            assert row["max_abs_err_counts"] == 0
    headline = rehearsal[1]["headline"]["kernels"]
    assert headline["all_match_reference"] and headline["sparsity_best_hbm_fraction"] is None  # no peak on a CPU


@pytest.mark.parametrize("name", ["throughput_small", "throughput_124m"])
def test_throughput_sections(rehearsal, name):
    result = rehearsal[2][name]["result"]
    assert_numbers(result, ("lamina_tokens_per_sec", "plain_tokens_per_sec", "ratio_lamina_over_plain",
                            "cpu_time_ratio_lamina_over_plain", "compile_seconds_estimate", "params",
                            "flops_per_token", "tokens_per_step"), name)
    assert result["lamina_tokens_per_sec"] > 0 and result["plain_tokens_per_sec"] > 0
    for r in result["rounds"]:
        assert_numbers(r, ("ratio", "cpu_time_ratio"), name)
        for arm in ("lamina", "plain"):
            assert_numbers(r[arm], ("tokens_per_sec", "seconds", "cpu_seconds", "warmup_seconds",
                                    "process_max_rss_bytes"), f"{name}.{arm}")
    # the GPU path: compiled, under bf16 autocast, on BPE tokens
    assert result["compile"] and result["precision"] == "bf16-mixed" and result["data"]["tokenizer"] == "bpe"
    # On the CPU there is no peak to divide by: MFU is null, and the JSON says why.
    assert result["mfu"] == {"lamina": None, "plain": None} and result["mfu_note"]
    assert_numbers(rehearsal[1]["headline"][name], ("lamina_tokens_per_sec", "ratio_lamina_over_plain",
                                                    "compile_seconds_estimate", "process_max_rss_bytes"), name)


def test_the_124m_step_is_the_124m_shape_not_small(rehearsal):
    steps = rehearsal[2]
    small, big = steps["throughput_small"]["result"], steps["throughput_124m"]["result"]
    assert small["config"] == "configs/small.yaml" and small["data"]["source"] == "world"
    assert big["configs"] == ["configs/gpt2-124m.yaml", "configs/gpt2-124m-offline.yaml"]
    assert [r["order"] for r in small["rounds"]] == [["lamina", "plain"], ["plain", "lamina"]]
    shape = big["model_shape"]
    assert (shape["n_layer"], shape["n_head"], shape["n_embd"], shape["vocab_size"]) == (12, 12, 768, 50304)
    assert big["params"] > 100e6 and big["model_shape"] != small["model_shape"]
    assert small["model_shape"]["vocab_size"] == 8192  # small.yaml's BPE
    # the CPU shrinks rows and steps, not the model: one 128-token row a step
    assert big["tokens_per_step"] == 128 and small["tokens_per_step"] == 2 * 64


def test_overhead_section(rehearsal):
    step = rehearsal[2]["overhead_small"]
    result = step["result"]
    assert result["compile"] and result["precision"] == "bf16-mixed"
    assert_numbers(result["ratio_on_over_off"], ("min", "median", "max"), "overhead.ratio_on_over_off")
    assert_numbers(result, ("overhead_pct_median", "measured_share_pct_median", "off_step_seconds_median"),
                   "overhead")
    measured = [m for r in result["rounds"] for m in r["on"]["measurements_in_window"]]
    assert measured and all(is_number(m["seconds"]) for m in measured)
    assert {m["hook"] for r in result["rounds"] for m in r["on"]["all_measurements"]} == {"start", "batch", "end"}
    e = result["estimates"]
    assert_numbers(e, ("overhead_pct_every_n", "periodic_measurement_seconds", "full_measurement_seconds",
                       "start_measurement_seconds", "schedule_overhead_pct_upper_bound", "step_seconds",
                       "compile_seconds_estimate", "process_max_rss_bytes"), "overhead.estimates")
    assert e["step_seconds_source"] == "off arm" and e["full_measurement_from"].startswith("end")
    # small.yaml's schedule: partition every 500, ablation every 1000, probes every 2 here (so the
    # light tier, every 50, never runs: the full battery is at each of its steps)
    assert e["schedule_measurements_per_period"] == {"light": 0, "probes_only": 498, "partition": 1,
                                                      "partition_and_ablation": 1}
    assert_numbers(rehearsal[1]["headline"]["overhead_small"], ("overhead_pct_every_n", "full_measurement_seconds"),
                   "headline.overhead_small")


# ---- a partial run: one step over its limit, the others kept ----------------------------------------

def test_a_step_over_its_limit_is_named_and_the_others_kept(tmp_path):
    # overhead_small cannot import lightning, build its BPE data, compile and measure in 6 s
    done = run_check(tmp_path, timeout=240, GPU_CHECK_STEPS="overhead_small,kernels",
                     GPU_CHECK_LIMIT_overhead_small="6")
    summary, steps = files(tmp_path)
    assert done.returncode == 1 and not summary["ok"] and summary["complete"]
    assert summary["failed_steps"] == ["overhead_small"] and summary["pending_steps"] == []
    assert set(steps) == {"setup", "overhead_small", "kernels"}
    over = steps["overhead_small"]
    assert over["status"] == "timeout" and over["exit_code"] == 124 and over["limit_s"] == 6
    assert "limit of 6 s" in over["why"] and over["log_tail"] is not None
    assert steps["kernels"]["status"] == "ok" and steps["kernels"]["result"]["kernels_timed"] == "interpreted"
    assert summary["headline"]["kernels"]["all_match_reference"]
    for name in ("tests", "throughput_small", "throughput_124m"):
        assert summary["steps"][name]["status"] == "skipped" and summary["steps"][name]["file"] is None
    assert summary["steps"]["setup"]["status"] == "ok"


# ---- the summary alone, from made-up steps --------------------------------------------------------

def partial_overhead() -> dict:
    """What overhead.py leaves when stopped during its off arm: the on arm, complete false."""
    on = {"seconds": 3.0, "seconds_before_window": 40.0, "measurement_seconds_before_window": 8.0,
          "instrument_seconds_in_window": 1.0, "warmup_steps": 10, "process_max_rss_bytes": 1,
          "measurements_in_window": [{"step": 100, "hook": "batch", "seconds": 1.0, "partition": False,
                                      "ablate": False}],
          "all_measurements": []}
    return {"benchmark": "overhead", "complete": False, "stage": "round 0: on arm done",
            "estimates": {"every_n_steps": 100, "overhead_pct_every_n": 50.0, "step_seconds": 0.02,
                          "step_seconds_source": "on arm less its measurements"},
            "ratio_on_over_off": None, "rounds": [], "partial_round": {"on": on}}


class Check:
    """Drives gpu_check_summary the way gpu_check.sh does, over a made-up run folder."""

    def __init__(self, tmp_path: Path, run_id: str = "1-1"):
        self.out, self.run = tmp_path / "out", tmp_path / "run"
        (self.run / "logs").mkdir(parents=True)
        self.args = ["--out", str(self.out), "--prefix", "gpu_check-cpu-2026-01-01", "--run-dir", str(self.run),
                     "--run-id", run_id, "--mode", "cpu", "--device", "cpu", "--date", "2026-01-01",
                     "--budget", "455", "--start", "0"]

    def step(self, name: str, rc: int, log: str = "", result: dict | None = None, junit: str | None = None) -> None:
        assert gpu_check_summary.main(["begin", name, "--limit", "30", *self.args]) == 0
        (self.run / "logs" / f"{name}.log").write_text(log)
        if result is not None:
            (self.run / "raw" / name).mkdir(parents=True)
            (self.run / "raw" / name / f"{name}.json").write_text(json.dumps(result))
        if junit is not None:
            (self.run / "raw" / "tests").mkdir(parents=True)
            (self.run / "raw" / "tests" / "junit.xml").write_text(junit)
        if rc is not None:
            assert gpu_check_summary.main(["end", name, "--rc", str(rc), "--t0", "10", "--t1", "12.5",
                                           "--limit", "30", *self.args]) == 0

    def summary(self) -> dict:
        return json.loads((self.out / "gpu_check-cpu-2026-01-01.json").read_text())

    def step_file(self, k: int, name: str) -> dict:
        return json.loads((self.out / f"gpu_check-cpu-2026-01-01-{k}-{name}.json").read_text())


KERNELS = {"kernels_timed": True, "hbm_peak_bytes_per_s": 3.35e12, "results": [
    {"measure": "sparsity_stats", "rule": "eps", "kernel_gbps": 2000.0, "kernel_hbm_fraction": 0.6,
     "reference_gbps": 900.0, "active_counts_equal": True},
    {"measure": "coactivation", "rule": "eps", "kernel_tflops": 300.0, "kernel_peak_fraction": 0.3,
     "reference_tflops_dense": 200.0, "max_abs_err_counts": 0.0}]}


def test_summary_keeps_a_timed_out_steps_partial_result(tmp_path):
    check = Check(tmp_path)
    check.step("setup", 0, "setup: nothing installed\n")
    check.step("overhead_small", 124, "round 0 ...\n", result=partial_overhead())
    check.step("tests", 1, "1 failed\n", junit='<testsuite tests="2" failures="1" errors="0" skipped="0">'
               '<testcase classname="tests.test_kernels" name="test_a"><failure/></testcase>'
               '<testcase classname="tests.test_kernels" name="test_b"/></testsuite>')
    check.step("kernels", 0, "wrote kernels.json\n", result=KERNELS)
    assert gpu_check_summary.main(["final", *check.args]) == 1
    summary = check.summary()
    assert summary["complete"] and not summary["ok"]
    assert summary["failed_steps"] == ["overhead_small", "tests", "throughput_small", "throughput_124m"]
    status = {n: s["status"] for n, s in summary["steps"].items()}
    assert status == {"setup": "ok", "overhead_small": "timeout", "tests": "failed", "kernels": "ok",
                      "throughput_small": "not_run", "throughput_124m": "not_run"}
    over = check.step_file(2, "overhead_small")
    assert over["result"]["partial_round"]["on"]["seconds"] == 3.0 and over["result_complete"] is False
    assert "what it finished" in over["why"] and over["seconds"] == 2.5
    assert summary["headline"]["overhead_small"]["overhead_pct_every_n"] == 50.0
    assert summary["headline"]["overhead_small"]["complete"] is False
    assert summary["headline"]["kernels"]["sparsity_best_hbm_fraction"] == 0.6
    assert summary["headline"]["kernels"]["gram_best_tflops"] == 300.0
    tests = check.step_file(3, "tests")
    assert tests["failed_tests"] == ["tests.test_kernels::test_a"] and tests["passed"] == 1
    log = (check.out / "gpu_check-cpu-2026-01-01.log").read_text()
    assert "==== overhead_small: timeout" in log and "1 failed" in log


def test_summary_of_a_check_killed_mid_step(tmp_path):
    """The whole command stopped while a step ran: the files on disk are those rebuilt as it began."""
    check = Check(tmp_path)
    check.step("setup", 0)
    check.step("overhead_small", 0, result={**partial_overhead(), "complete": True, "stage": "done"})
    check.step("tests", None)  # began, never ended
    summary = check.summary()
    assert not summary["complete"] and not summary["ok"]
    assert summary["pending_steps"] == ["tests", "kernels", "throughput_small", "throughput_124m"]
    assert summary["steps"]["tests"]["status"] == "running" and summary["steps"]["kernels"]["status"] == "pending"
    assert summary["headline"]["overhead_small"]["overhead_pct_every_n"] == 50.0
    assert check.step_file(3, "tests")["status"] == "running"
    # and if the script itself got to its end after all, that step is named
    assert gpu_check_summary.main(["final", *check.args]) == 1
    summary = check.summary()
    assert summary["steps"]["tests"]["status"] == "failed" and "tests" in summary["failed_steps"]


def test_summary_fails_a_benchmark_without_json_and_skipped_kernel_tests(tmp_path):
    check = Check(tmp_path)
    check.step("setup", 0)
    check.step("overhead_small", 0)  # exit 0 but no JSON
    check.step("tests", 0, junit='<testsuite tests="1" failures="0" errors="0" skipped="1">'
               '<testcase classname="tests.test_kernels" name="test_a"><skipped message="no triton"/>'
               '</testcase></testsuite>')
    check.step("kernels", 0, result={**KERNELS, "complete": False})  # exit 0 with an incomplete JSON
    gpu_check_summary.main(["final", *check.args])
    steps = check.summary()["steps"]
    assert (steps["overhead_small"]["status"], steps["overhead_small"]["why"]) == ("failed", "exited 0 but wrote no JSON")
    assert (steps["tests"]["status"], steps["tests"]["why"]) == ("failed", "1 kernel tests skipped")
    assert steps["kernels"]["status"] == "failed" and "incomplete" in steps["kernels"]["why"]


def test_summary_on_a_gpu_fails_kernels_that_were_not_timed(tmp_path):
    check = Check(tmp_path)
    check.args[check.args.index("--mode") + 1] = "gpu"
    check.step("kernels", 0, result={**KERNELS, "kernels_timed": False, "note": "CUDA present but Triton unavailable"})
    step = check.step_file(4, "kernels")
    assert step["status"] == "failed" and "Triton unavailable" in step["why"]


def test_summary_ignores_an_earlier_checks_files(tmp_path):
    earlier = Check(tmp_path, run_id="0-0")
    earlier.step("setup", 0)
    earlier.step("kernels", 0, result=KERNELS)
    check = Check.__new__(Check)
    check.out, check.run = earlier.out, tmp_path / "run2"
    (check.run / "logs").mkdir(parents=True)
    check.args = [a if a != str(earlier.run) else str(check.run) for a in earlier.args]
    check.args[check.args.index("--run-id") + 1] = "2-2"
    check.step("setup", 0)
    gpu_check_summary.main(["final", "--selected", "setup", *check.args])
    summary = check.summary()
    assert summary["ok"] and summary["steps"]["kernels"]["status"] == "skipped" and "kernels" not in summary["headline"]
