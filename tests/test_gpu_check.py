"""bench/gpu_check.sh --cpu: the GPU check's steps end to end on the CPU at tiny shapes, so that the
script works the first time a GPU box is lent (CPU only, offline; about a minute and a half on two
idle cores, most of it the five Python processes' imports)."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("setup", "tests", "kernels", "throughput_small", "throughput_124m", "overhead_small")


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def assert_numbers(section: dict, keys, where: str) -> None:
    for key in keys:
        assert is_number(section.get(key)), f"{where}.{key} = {section.get(key)!r}"


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.fail("gpu_check.sh needs bash and coreutils' timeout")
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "PY": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    found = sorted(out.glob("gpu_check-cpu-*.json"))
    assert found, f"no summary written (exit {done.returncode}):\n{done.stderr[-4000:]}"
    data = json.loads(found[-1].read_text())
    failed = {name: (step["status"], step.get("why"), step["log_tail"][-1500:])
              for name, step in data["steps"].items() if step["status"] != "ok"}
    assert done.returncode == 0 and data["ok"], f"exit {done.returncode}, failed steps: {failed}"
    return out, data


def test_every_step_ran_and_passed(summary):
    _, data = summary
    assert data["mode"] == "cpu" and data["triton_interpret"] == "1"
    assert list(data["steps"]) == list(STEPS)
    for name, step in data["steps"].items():
        assert step["status"] == "ok" and step["exit_code"] == 0, name
        assert is_number(step["seconds"]) and step["seconds"] <= step["limit_s"] + 15, name
    assert data["total_seconds"] <= data["budget_s"] + 15


def test_kernel_tests_ran_without_skips(summary):
    tests = summary[1]["steps"]["tests"]
    assert tests["passed"] > 0 and tests["failures"] == tests["errors"] == tests["skipped"] == 0
    assert tests["skipped_tests"] == []


def test_kernel_bench_checked_the_kernels(summary):
    kernels = summary[1]["steps"]["kernels"]["result"]
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
    assert summary[1]["headline"]["kernels"]["all_match_reference"]


@pytest.mark.parametrize("name", ["throughput_small", "throughput_124m"])
def test_throughput_sections(summary, name):
    result = summary[1]["steps"][name]["result"]
    assert_numbers(result, ("lamina_tokens_per_sec", "plain_tokens_per_sec", "ratio_lamina_over_plain",
                            "cpu_time_ratio_lamina_over_plain", "compile_seconds_estimate", "params",
                            "flops_per_token", "tokens_per_step"), name)
    assert result["lamina_tokens_per_sec"] > 0 and result["plain_tokens_per_sec"] > 0
    for r in result["rounds"]:
        assert_numbers(r, ("ratio", "cpu_time_ratio"), name)
        for arm in ("lamina", "plain"):
            assert_numbers(r[arm], ("tokens_per_sec", "seconds", "cpu_seconds", "warmup_seconds",
                                    "process_max_rss_bytes"), f"{name}.{arm}")
    # On the CPU there is no peak to divide by: MFU is null, and the JSON says why.
    assert result["mfu"] == {"lamina": None, "plain": None} and result["mfu_note"]
    assert_numbers(summary[1]["headline"][name], ("lamina_tokens_per_sec", "ratio_lamina_over_plain"), name)


def test_throughput_arms_and_configs(summary):
    steps = summary[1]["steps"]
    small, big = steps["throughput_small"]["result"], steps["throughput_124m"]["result"]
    assert small["config"] == "configs/small.yaml"
    assert big["configs"][0] == "configs/gpt2-124m.yaml"
    assert [r["order"] for r in small["rounds"]] == [["lamina", "plain"], ["plain", "lamina"]]
    # the overrides reached the config: the tiny shape, not small.yaml's
    assert small["tokens_per_step"] == 4 * 32 and not small["compile"]


def test_overhead_section(summary):
    result = summary[1]["steps"]["overhead_small"]["result"]
    assert_numbers(result["ratio_on_over_off"], ("min", "median", "max"), "overhead.ratio_on_over_off")
    assert_numbers(result, ("overhead_pct_median", "measured_share_pct_median", "off_step_seconds_median"),
                   "overhead")
    measured = [m for r in result["rounds"] for m in r["on"]["measurements_in_window"]]
    assert measured and all(is_number(m["seconds"]) for m in measured)


def test_files_written_beside_the_summary(summary):
    out, data = summary
    names = {p.name for p in out.iterdir()}
    for name in ("kernels", "throughput_small", "throughput_124m", "overhead_small"):
        assert Path(data["steps"][name]["json"]).name in names, name
    assert any(n.startswith("gpu_check-cpu-") and n.endswith(".log") for n in names)
    assert len(names) <= 8  # what a device run's $OUT can bring back
