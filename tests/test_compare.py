"""`lamina compare`: synthetic runs with known curves give known tables; plots are real images; user
mistakes give one line; two real tiny fits compare end to end."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lamina import compare
from lamina.cli import main
from lamina.plots import PALETTE, nice_ticks, tick_labels

T975_DF2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))  # Student t, 97.5% quantile, 2 dof (closed form)
BASE_NOISE = [-0.125, 0.0, 0.25]  # per-seed offsets; every number below is exact in float32
RLP_NOISE = [0.0625, -0.0625, 0.125]
TOKENS_PER_STEP = 1024


def write_run(folder: Path, scalars: dict[str, dict[int, float]]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    for tag, points in scalars.items():
        for step, value in points.items():
            writer.add_scalar(tag, value, step)
    writer.close()


def synthetic_run(last_step: int, flops_per_token: int, bpb0: float, slope: float, noise: float, val_every: int,
                  extra: dict[str, dict[int, float]] | None = None) -> dict[str, dict[int, float]]:
    """Counters like Lightning logs them (step s comes after s + 1 batches, every 10 batches);
    val/bpb = bpb0 - slope * tokens + noise, at step 0 (untrained, 0 tokens) and every `val_every`."""
    counter_steps = range(9, last_step + 1, 10)
    tokens = {s: float(TOKENS_PER_STEP * (s + 1)) for s in counter_steps}
    val_steps = [0] + list(range(val_every - 1, last_step + 1, val_every))
    val_tokens = {s: 0.0 if s == 0 else TOKENS_PER_STEP * (s + 1) for s in val_steps}
    return {
        "perf/tokens_seen": tokens,
        "perf/flops": {s: t * flops_per_token for s, t in tokens.items()},
        "val/bpb": {s: bpb0 - slope * t + noise for s, t in val_tokens.items()},
        "val/loss": {s: 2 * (bpb0 - slope * t + noise) for s, t in val_tokens.items()},
        "train/loss": {s: 5.0 - s / 100 for s in counter_steps},
        **(extra or {}),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """runs/base: 3 seeds, 100 steps, 8 FLOPs/token, val every 25 steps;
    runs/rlp: 3 seeds, 60 steps, 12 FLOPs/token, val every 15 steps, plus eval and rlp tags."""
    root = tmp_path_factory.mktemp("compare") / "runs"
    for seed, noise in enumerate(BASE_NOISE):
        write_run(root / "base" / f"version_{seed}",
                  synthetic_run(99, 8, 4.0, 1 / 65536, noise, 25, {"sparsity/gap/id_b": {0: 0.0, 99: 0.001}}))
    for seed, noise in enumerate(RLP_NOISE):
        extra = {
            "eval/arith_acc/level1": {29: 0.25, 59: 0.5 + noise},
            "eval/arith_acc/level2": {29: 0.125, 59: 0.25},
            "eval/arith_acc_nothink/level1": {29: 0.125, 59: 0.25},
            "rlp/reward_mean": {s: 0.01 * s for s in range(9, 60, 10)},
        }
        write_run(root / "rlp" / f"version_{seed}", synthetic_run(59, 12, 3.5, 1 / 32768, noise, 15, extra))
    return root


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    """The default comparison of the synthetic runs, through the `lamina` entry point."""
    out = tmp_path_factory.mktemp("report") / "cmp"
    main(["compare", str(runs / "base"), str(runs / "rlp"), "--out", str(out)])
    return out


def read_csv(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    with (out / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    table = {(row["group"], row["metric"]): row for row in rows}
    assert len(table) == len(rows)
    return table


def by_hand(values: list[float]) -> tuple[float, float, float, float]:
    mean, sd = statistics.mean(values), statistics.stdev(values)
    half = T975_DF2 * sd / math.sqrt(len(values))
    return mean, sd, mean - half, mean + half


def assert_stats(row: dict[str, str], prefix: str, values: list[float]) -> None:
    mean, sd, lo, hi = by_hand(values)
    assert int(row[f"{prefix}_n"]) == len(values)
    for key, want in (("mean", mean), ("std", sd), ("ci95_low", lo), ("ci95_high", hi)):
        assert float(row[f"{prefix}_{key}"]) == pytest.approx(want, rel=1e-9, abs=1e-12), key


def test_t_quantiles_match_closed_forms_and_tables():
    assert compare.t_ppf(0.975, 1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-10)
    assert compare.t_ppf(0.975, 2) == pytest.approx(T975_DF2, rel=1e-10)
    assert compare.t_ppf(0.975, 4) == pytest.approx(2.7764451051977987, rel=1e-9)
    assert compare.t_ppf(0.975, 30) == pytest.approx(2.0422724563012373, rel=1e-9)
    assert compare.t_ppf(0.975, 1e7) == pytest.approx(1.959963984540054, rel=1e-6)
    assert compare.t_ppf(0.025, 3) == pytest.approx(-compare.t_ppf(0.975, 3))


def test_report_numbers_by_hand(report):
    out = report
    table = read_csv(out)
    metrics = ["val/bpb", "val/loss", "eval/arith_acc/level1", "eval/arith_acc/level2",
               "eval/arith_acc_nothink/level1", "rlp/reward_mean", "sparsity/gap/id_b",
               "perf/tokens_seen", "perf/flops"]
    assert sorted(table) == sorted((g, m) for g in ("base", "rlp") for m in metrics)  # one row per group x metric
    base, rlp = table["base", "val/bpb"], table["rlp", "val/bpb"]
    assert base["runs"] == rlp["runs"] == "3"

    # End of each run: base ends at 100 * 1024 tokens, rlp at 60 * 1024.
    assert_stats(base, "end", [4.0 - 102400 / 65536 + e for e in BASE_NOISE])
    assert_stats(rlp, "end", [3.5 - 61440 / 32768 + e for e in RLP_NOISE])
    assert_stats(table["base", "perf/tokens_seen"], "end", [102400.0] * 3)
    assert_stats(table["rlp", "perf/flops"], "end", [61440.0 * 12] * 3)

    # Matched tokens: rlp's last val (61440 tokens) falls between base's val points (51200, 76800).
    assert float(base["at_tokens_budget"]) == 61440
    assert_stats(base, "at_tokens", [4.0 - 61440 / 65536 + e for e in BASE_NOISE])
    assert_stats(rlp, "at_tokens", [3.5 - 61440 / 32768 + e for e in RLP_NOISE])
    # Matched FLOPs: rlp reached 61440 * 12; base got there at 92160 tokens, between val points.
    assert float(base["at_flops_budget"]) == 61440 * 12
    assert_stats(base, "at_flops", [4.0 - 92160 / 65536 + e for e in BASE_NOISE])
    assert_stats(table["base", "perf/tokens_seen"], "at_flops", [92160.0] * 3)
    assert_stats(table["rlp", "perf/flops"], "at_tokens", [61440.0 * 12] * 3)

    # Difference from the first group, Welch's interval around it.
    diff = float(rlp["end_mean"]) - float(base["end_mean"])
    assert float(rlp["end_delta"]) == pytest.approx(diff)
    va, vb = statistics.variance(BASE_NOISE) / 3, statistics.variance(RLP_NOISE) / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = compare.t_ppf(0.975, df) * math.sqrt(va + vb)
    assert float(rlp["end_delta_ci95_low"]) == pytest.approx(diff - half)
    assert float(rlp["end_delta_ci95_high"]) == pytest.approx(diff + half)
    assert base["end_delta"] == ""

    # The markdown shows the same numbers.
    md = (out / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| `val/bpb` |"))
    mean, sd, lo, hi = by_hand([4.0 - 102400 / 65536 + e for e in BASE_NOISE])
    assert f"{mean:.4g} ± {sd:.2g} [{lo:.4g}, {hi:.4g}] (n=3)" in row


def test_missing_metrics_are_blank(report):
    out = report
    table = read_csv(out)
    for metric in ("eval/arith_acc/level1", "rlp/reward_mean"):
        row = table["base", metric]
        assert row["end_n"] == row["at_tokens_n"] == row["at_flops_n"] == "0"
        assert row["end_mean"] == row["end_std"] == row["at_flops_mean"] == row["end_delta"] == ""
    assert table["rlp", "sparsity/gap/id_b"]["end_mean"] == ""
    assert_stats(table["rlp", "eval/arith_acc/level1"], "end", [0.5 + e for e in RLP_NOISE])
    md = (out / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| `eval/arith_acc/level1` |"))
    assert row.split("|")[2].strip() == ""  # the base cell of the end-of-run table


def test_grouping_by_name_glob_and_group_flag(runs, tmp_path):
    few = ["--metrics", "val/bpb", "--metrics", "rlp/reward_mean"]
    by_glob = compare.main([str(runs / "*" / "version_*"), "--out", str(tmp_path / "a"), *few])
    assert [(g.label, len(g.runs)) for g in by_glob.groups] == [("base", 3), ("rlp", 3)]

    result = compare.main([
        "--group", f"first={runs / 'base' / 'version_0'},{runs / 'rlp' / 'version_0'}",
        "--group", f"rest={runs / 'base' / 'version_[12]'}",
        str(runs / "rlp"), "--out", str(tmp_path / "b"), *few,
    ])
    assert [(g.label, [r.label for r in g.runs]) for g in result.groups] == [
        ("first", ["base/version_0", "rlp/version_0"]),
        ("rest", ["base/version_1", "base/version_2"]),
        ("rlp", ["rlp/version_1", "rlp/version_2"]),
    ]
    table = read_csv(tmp_path / "b")
    first = table["first", "val/bpb"]
    assert first["runs"] == "2"
    assert float(first["end_mean"]) == pytest.approx(
        statistics.mean([4.0 - 102400 / 65536 + BASE_NOISE[0], 3.5 - 61440 / 32768 + RLP_NOISE[0]]))
    assert table["rest", "rlp/reward_mean"]["end_n"] == "0"


def test_metrics_patterns_choose_rows_and_plots(runs, tmp_path):
    out = tmp_path / "cmp"
    compare.main([str(runs), "--out", str(out), "--metrics", "train/*,val/bpb"])
    assert {m for _, m in read_csv(out)} == {"train/loss", "val/bpb", "perf/tokens_seen", "perf/flops"}
    assert sorted(p.name for p in out.glob("*.png")) == [
        "train_loss_vs_flops.png", "train_loss_vs_tokens.png", "val_bpb_vs_flops.png", "val_bpb_vs_tokens.png"]


def test_plots_are_real_images_one_colour_per_group(report):
    out = report
    names = {p.name for p in out.glob("*.png")}
    for stem in ("val_bpb", "val_loss", "arith_acc_level1", "arith_acc_level2", "rlp_reward_mean", "sparsity_gap_id_b"):
        assert {f"{stem}_vs_tokens.png", f"{stem}_vs_flops.png"} <= names
    assert len(names) == 12
    for name in ("val_bpb_vs_flops.png", "val_bpb_vs_tokens.png", "arith_acc_level1_vs_flops.png"):
        with Image.open(out / name) as image:
            image.verify()
        with Image.open(out / name) as image:
            assert image.size == (960, 600) and image.format == "PNG"
            pixels = np.asarray(image.convert("RGB")).astype(int)
        assert pixels.std() > 10  # not blank
        for colour in PALETTE[1:2] if name.startswith("arith") else PALETTE[:2]:  # colour by group index
            near = (np.abs(pixels - np.array(colour)).sum(axis=2) < 30).sum()
            assert near > 200, f"{name}: too few pixels of group colour {colour}"
    assert "![val/bpb vs tokens seen](val_bpb_vs_tokens.png)" in (out / "report.md").read_text()


def test_ticks_are_round_numbers():
    lo, hi, ticks = nice_ticks(0.0, 7680.0)
    assert (lo, hi) == (0.0, 8000.0) and ticks == [0, 2000, 4000, 6000, 8000]
    assert tick_labels(ticks, "tokens") == ["0", "2k", "4k", "6k", "8k"]
    assert tick_labels([0.0, 5e8, 1e9, 1.5e9], "auto") == ["0", "0.5e9", "1.0e9", "1.5e9"]
    _, _, ticks = nice_ticks(2.31, 3.07)
    assert tick_labels(ticks) == ["2.2", "2.4", "2.6", "2.8", "3.0", "3.2"]


def test_a_run_without_flops_keeps_its_end_values(tmp_path):
    scalars = synthetic_run(39, 8, 4.0, 1 / 65536, 0.0, 10)
    del scalars["perf/flops"]
    write_run(tmp_path / "runs" / "old" / "version_0", scalars)
    out = tmp_path / "cmp"
    compare.main([str(tmp_path / "runs"), "--out", str(out)])
    row = read_csv(out)["old", "val/bpb"]
    assert float(row["end_mean"]) == pytest.approx(4.0 - 40960 / 65536)
    assert row["at_flops_n"] == "0" and row["at_flops_mean"] == "" and row["at_flops_budget"] == ""
    assert float(row["at_tokens_mean"]) == pytest.approx(4.0 - 40960 / 65536)


def test_step_zero_sits_at_zero_tokens_and_late_points_are_extended_one_interval(tmp_path):
    fresh = synthetic_run(39, 8, 4.0, 1 / 65536, 0.0, 10)
    fresh["val/bpb"][44] = 1.0  # half an interval after the last counter (step 39): placed on the line
    fresh["val/bpb"][60] = 0.5  # two intervals after: no position on the axis, left off
    write_run(tmp_path / "fresh", fresh)
    x, y = compare.load_run(tmp_path / "fresh").curve("val/bpb", "tokens")
    assert list(x) == [0.0, 10240.0, 20480.0, 30720.0, 40960.0, 46080.0] and y[0] == 4.0 and y[-1] == 1.0

    carried = {tag: {s: v + 1e6 for s, v in points.items()}
               for tag, points in synthetic_run(39, 8, 4.0, 1 / 65536, 0.0, 10).items() if tag.startswith("perf/")}
    carried["val/bpb"] = {0: 4.0, 9: 3.0}  # counters carried over from elsewhere: step 0 is not at 0 tokens
    write_run(tmp_path / "carried", carried)
    x, _ = compare.load_run(tmp_path / "carried").curve("val/bpb", "tokens")
    assert list(x) == [1e6 + 10240 - 9 * 1024, 1e6 + 10240]  # extended back along the counter's line


def compare_error(capsys, *words: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", *words])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lamina: error:"), err
    return lines[0]


def test_errors_are_one_line_naming_the_culprit(runs, tmp_path, capsys):
    empty = tmp_path / "runs" / "empty"
    empty.mkdir(parents=True)
    assert str(empty) in compare_error(capsys, str(empty), "--out", str(tmp_path / "o"))
    missing = tmp_path / "nowhere"
    assert str(missing) in compare_error(capsys, str(missing), "--out", str(tmp_path / "o"))
    assert "no_such/*" in compare_error(capsys, str(runs), "--metrics", "no_such/*", "--out", str(tmp_path / "o"))
    a_file = tmp_path / "report.txt"
    a_file.write_text("")
    assert str(a_file) in compare_error(capsys, str(runs), "--out", str(a_file))
    assert "--group" in compare_error(capsys, "--group", "nolabel", "--out", str(tmp_path / "o"))
    assert "--out" in compare_error(capsys, str(runs))
    assert not (tmp_path / "o").exists()


def test_two_real_fits_compare_end_to_end(tmp_path):
    from test_train import fit_args

    quick = ["--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.log_every_n_steps", "1",
             "--data.max_bytes", "40000", "--data.val_tokens", "512", "--checkpoint.every_n_train_steps", "1000",
             "--instrument.enabled", "false"]  # measurements are tested elsewhere; here only their x axes
    main(fit_args(tmp_path, "narrow", *quick))
    main(fit_args(tmp_path, "wide", *quick, "--model.n_embd", "48"))
    out = tmp_path / "cmp"
    main(["compare", str(tmp_path / "runs" / "narrow"), str(tmp_path / "runs" / "wide"), "--out", str(out)])
    table = read_csv(out)
    assert {"val/bpb", "val/loss", "perf/tokens_seen", "perf/flops"} <= {m for _, m in table}
    narrow, wide = table["narrow", "perf/flops"], table["wide", "perf/flops"]
    assert float(wide["end_mean"]) > float(narrow["end_mean"]) > 0  # a wider model costs more per token
    tokens = [float(table[group, "perf/tokens_seen"]["end_mean"]) for group in ("narrow", "wide")]
    assert tokens[0] == tokens[1] > 0
    assert float(table["wide", "val/bpb"]["at_flops_budget"]) == pytest.approx(float(narrow["end_mean"]))
    for group in ("narrow", "wide"):
        for metric in ("val/bpb", "perf/tokens_seen", "perf/flops"):
            row = table[group, metric]
            assert row["end_n"] == row["at_tokens_n"] == row["at_flops_n"] == "1", (group, metric)
    assert table["narrow", "val/bpb"]["at_flops_mean"] == table["narrow", "val/bpb"]["end_mean"]
    for name in ("val_bpb_vs_tokens.png", "val_bpb_vs_flops.png", "val_loss_vs_flops.png"):
        with Image.open(out / name) as image:
            assert image.size == (960, 600)
    print((out / "report.md").read_text())
