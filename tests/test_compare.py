"""`lamina compare`: synthetic runs with known curves give known tables; plots are real images; user
mistakes give one line; two real tiny fits compare end to end."""

from __future__ import annotations

import csv
import math
import re
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image
from scipy import stats as scipy_stats

from lamina import compare
from lamina.cli import main
from lamina.compare import report as compare_report
from lamina.compare.stats import t_quantile
from lamina.errors import ConfigError

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
            "rlp/reward_std": {s: 0.01 * s for s in range(9, 60, 10)},
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


def test_intervals_match_t_tables_and_scipy():
    # the 97.5% quantile of Student's t: closed forms (1 and 2 dof) and a printed t table (4, 30 dof)
    assert t_quantile(1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-10)
    assert t_quantile(2) == pytest.approx(T975_DF2, rel=1e-10)
    assert t_quantile(4) == pytest.approx(2.776, abs=5e-4)
    assert t_quantile(30) == pytest.approx(2.042, abs=5e-4)

    values = [1.0, 2.0, 4.0]  # mean 7/3, sd sqrt(7/3): by hand with the 2-dof quantile
    s = compare.summarize(values)
    half = T975_DF2 * math.sqrt(7 / 3) / math.sqrt(3)
    assert (s.n, s.mean, s.std) == (3, pytest.approx(7 / 3), pytest.approx(math.sqrt(7 / 3)))
    assert (s.lo, s.hi) == (pytest.approx(7 / 3 - half, rel=1e-12), pytest.approx(7 / 3 + half, rel=1e-12))
    ci = scipy_stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert (s.lo, s.hi) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))
    assert compare.summarize([5.0, 5.0]) == compare.Stats(2, 5.0, 0.0, 5.0, 5.0)  # no spread: zero width
    assert compare.summarize([5.0]) == compare.Stats(1, 5.0) and compare.summarize([]) == compare.Stats(0)

    ref, other = [1.0, 2.0, 4.0], [2.0, 2.5, 5.0, 7.0]  # Welch's interval is scipy's unequal-variance t-test's
    diff, lo, hi = compare.welch(compare.summarize(ref), compare.summarize(other))
    ci = scipy_stats.ttest_ind(other, ref, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(np.mean(other) - np.mean(ref))
    assert (lo, hi) == (pytest.approx(ci.low, rel=1e-10), pytest.approx(ci.high, rel=1e-10))
    assert compare.welch(compare.summarize(ref), compare.summarize([3.0])) == (pytest.approx(3.0 - 7 / 3), None, None)
    assert compare.welch(compare.summarize([1.0, 1.0]), compare.summarize([2.0, 2.0])) == (1.0, 1.0, 1.0)


def test_report_numbers_by_hand(report):
    out = report
    table = read_csv(out)
    metrics = ["val/bpb", "val/loss", "eval/arith_acc/level1", "eval/arith_acc/level2",
               "eval/arith_acc_nothink/level1", "rlp/reward_std", "sparsity/gap/id_b",
               "perf/tokens_seen", "perf/flops"]
    assert sorted(table) == sorted((g, m) for g in ("base", "rlp") for m in metrics)  # one row per group x metric
    base, rlp = table["base", "val/bpb"], table["rlp", "val/bpb"]
    assert base["runs"] == rlp["runs"] == "3"

    # At the last step every run reached: base validates at steps 0, 24, 49, 74, 99, rlp at 0, 14,
    # 29, 44, 59; no step after 0 in common, so no end-of-run val/bpb (base's step 99 against rlp's
    # 59 was the old table's). The counters, logged every 10 steps by both, compare at rlp's last, 59.
    assert base["end_step"] == rlp["end_step"] == "" and base["end_n"] == rlp["end_n"] == "0"
    assert base["end_mean"] == rlp["end_mean"] == rlp["end_delta"] == ""
    assert table["base", "perf/tokens_seen"]["end_step"] == "59"
    assert_stats(table["base", "perf/tokens_seen"], "end", [61440.0] * 3)
    assert_stats(table["rlp", "perf/flops"], "end", [61440.0 * 12] * 3)
    assert_stats(table["rlp", "eval/arith_acc/level1"], "end", [0.5 + e for e in RLP_NOISE])

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
    diff = float(rlp["at_tokens_mean"]) - float(base["at_tokens_mean"])
    assert float(rlp["at_tokens_delta"]) == pytest.approx(diff)
    va, vb = statistics.variance(BASE_NOISE) / 3, statistics.variance(RLP_NOISE) / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert float(rlp["at_tokens_delta_ci95_low"]) == pytest.approx(diff - half)
    assert float(rlp["at_tokens_delta_ci95_high"]) == pytest.approx(diff + half)
    assert base["at_tokens_delta"] == ""

    # The markdown shows the same numbers, and says why val/bpb has no end-of-run row.
    md = (out / "report.md").read_text()
    row = md_row_of(md, "val/bpb", "## At matched tokens seen")
    mean, sd, lo, hi = by_hand([4.0 - 61440 / 65536 + e for e in BASE_NOISE])
    assert row[2] == f"{mean:.4g} ± {sd:.2g} [{lo:.4g}, {hi:.4g}] (n=3)"
    assert md_row_of(md, "perf/tokens_seen")[1] == "59 (base: to 99)"
    assert md_row_of(md, "val/bpb") == []
    assert ("- `val/bpb`: its runs share no step after step 0; did not reach step 99: "
            "rlp/version_0, rlp/version_1, rlp/version_2 (last at step 59)") in md_section(md, END)


def test_missing_metrics_are_blank(report):
    out = report
    table = read_csv(out)
    for metric in ("eval/arith_acc/level1", "rlp/reward_std"):
        row = table["base", metric]
        assert row["end_n"] == row["at_tokens_n"] == row["at_flops_n"] == "0"
        assert row["end_mean"] == row["end_std"] == row["at_flops_mean"] == row["end_delta"] == ""
    assert table["rlp", "sparsity/gap/id_b"]["end_mean"] == ""
    assert_stats(table["rlp", "eval/arith_acc/level1"], "end", [0.5 + e for e in RLP_NOISE])
    md = (out / "report.md").read_text()
    row = md_row_of(md, "eval/arith_acc/level1")
    assert row[1] == "59" and row[2] == ""  # the step (rlp's alone) and the base cell of the end-of-run table


def test_grouping_by_name_glob_and_group_flag(runs, tmp_path):
    few = ["--metrics", "val/bpb", "--metrics", "rlp/reward_std"]
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
    assert first["end_n"] == "0"  # base's step 99 and rlp's step 59 are not averaged as one end
    assert float(first["at_tokens_mean"]) == pytest.approx(
        statistics.mean([4.0 - 61440 / 65536 + BASE_NOISE[0], 3.5 - 61440 / 32768 + RLP_NOISE[0]]))
    assert table["rest", "rlp/reward_std"]["end_n"] == "0"


def test_metrics_patterns_choose_rows_and_plots(runs, tmp_path):
    out = tmp_path / "cmp"
    compare.main([str(runs), "--out", str(out), "--metrics", "train/*,val/bpb"])
    assert {m for _, m in read_csv(out)} == {"train/loss", "val/bpb", "perf/tokens_seen", "perf/flops"}
    assert sorted(p.name for p in out.glob("*.png")) == [
        "train_loss_vs_flops.png", "train_loss_vs_tokens.png", "val_bpb_vs_flops.png", "val_bpb_vs_tokens.png"]


def test_plots_are_real_images_one_colour_per_group(report):
    out = report
    names = {p.name for p in out.glob("*.png")}
    for stem in ("val_bpb", "val_loss", "arith_acc", "rlp_reward_std", "sparsity_gap"):  # levels: panels of one
        assert {f"{stem}_vs_tokens.png", f"{stem}_vs_flops.png"} <= names
    assert len(names) == 10  # no paired-difference plot: these runs have no seeds to pair
    for name in ("val_bpb_vs_flops.png", "val_bpb_vs_tokens.png", "arith_acc_vs_flops.png"):
        with Image.open(out / name) as image:
            image.verify()
        with Image.open(out / name) as image:
            assert image.size == (960, 600) and image.format == "PNG"
            pixels = np.asarray(image.convert("RGB")).astype(int)
        assert pixels.std() > 10  # not blank
        groups = [1] if name.startswith("arith") else [0, 1]  # rlp alone logs arithmetic
        for colour in [np.array(to_rgb(f"C{i}")) * 255 for i in groups]:  # colour by group index
            near = (np.abs(pixels - np.array(colour)).sum(axis=2) < 30).sum()
            assert near > 200, f"{name}: too few pixels of group colour {colour}"
    assert "![val/bpb vs tokens seen](val_bpb_vs_tokens.png)" in (out / "report.md").read_text()


def test_plots_show_a_line_per_group_and_say_so_in_the_legend(runs, tmp_path):
    result = compare.main([str(runs / "base"), str(runs / "rlp"), "--out", str(tmp_path / "cmp")])
    families = compare_report.families(result.metrics)

    figure = compare_report.family_figure(result, families["val_bpb"], "tokens")
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == ["base (n=3)", "rlp (n=3)", "±1 std over seeds",
                                                          "matched budget"]
    ax = figure.axes[0]
    lines = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    assert [to_rgb(line.get_color()) for line in lines] == [to_rgb("C0"), to_rgb("C1")]
    base_x, base_y = lines[0].get_data()  # base's mean over its seeds, at its validation points
    assert list(base_x) == [0.0, 25600.0, 51200.0, 76800.0, 102400.0]
    assert base_y[-1] == pytest.approx(4.0 - 102400 / 65536 + statistics.mean(BASE_NOISE))
    (budget,) = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert budget.get_xdata()[0] == 61440  # the matched budget of tokens
    assert ax.get_title() == "val/bpb vs tokens seen" and ax.get_xlabel() == "tokens seen"
    figure.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if 0 <= t.get_position()[0] <= 102400]
    assert labels[:2] == ["0", "20k"] and all(label.endswith("k") for label in labels[1:])

    assert list(families["arith_acc"].panels) == ["level 1", "level 2"]  # one figure, a panel per level
    arith = compare_report.family_figure(result, families["arith_acc"], "flops")
    assert [t.get_text() for t in arith.legends[0].get_texts()] == ["rlp (n=3)", "with thinking", "no thinking",
                                                                    "±1 std over seeds"]
    styles = sorted(line.get_linestyle() for line in arith.axes[0].get_lines())
    assert styles == ["-", "--"] and arith._supylabel.get_text() == "accuracy"
    assert [ax.get_title() for ax in arith.axes if ax.get_visible()] == ["level 1", "level 2"]


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
    md = (out / "report.md").read_text()  # the seeds LightningCLI saved: one pair, so Welch's difference
    assert "| narrow | narrow/version_0 | 7 / 0 |" in md and "| wide − narrow (Welch) |" in md
    assert table["wide", "val/bpb"]["end_paired_n"] == "1"
    print(md)


# ---- differences paired by seed ----------------------------------------------------------------

SHARED = {1: -0.5, 2: 0.25, 3: 1.0}  # per-seed offsets both arms share (say, the seed's validation text)
EFFECT = 1 / 64  # arm b - arm a, exactly, at every seed; all exact in float32


def lightning_config(seed, data_seed) -> str:
    """A config.yaml as LightningCLI saves it, cut down; other `seed` keys must not be read as the seed."""
    return (f"seed_everything: {seed}\ntrainer:\n  max_steps: 40\nmodel:\n  rlp:\n    seed: 0\n"
            f"data:\n  source: world\n  seed: {data_seed}\n  batch_size: 4\ninstrument:\n  probes:\n    seed: 0\n")


def seeded_run(folder: Path, seed: int | None, bpb0: float, config: str | None = None,
               extra: dict[str, dict[int, float]] | None = None) -> None:
    """A 40-step run whose val/bpb is bpb0 - tokens / 65536 + SHARED[seed], with its config.yaml
    (`config` as given, else seeds (seed, seed); seed None and no config: no config.yaml)."""
    write_run(folder, synthetic_run(39, 8, bpb0, 1 / 65536, SHARED.get(seed, 0.0), 10, extra))
    if config is not None or seed is not None:
        (folder / "config.yaml").write_text(config if config is not None else lightning_config(seed, seed))


END = "## At the last step every run reached"


def md_section(md: str, heading: str) -> str:
    """The text under the section whose heading starts with `heading`, up to the next section."""
    return md.split("\n" + heading, 1)[1].split("\n", 1)[1].split("\n## ", 1)[0]


def md_row_of(md: str, metric: str, section: str = END) -> list[str]:
    """The cells of the metric's row in the section's table; [] where the table has no such row."""
    lines = [line for line in md_section(md, section).splitlines() if line.startswith(f"| `{metric}` |")]
    return [cell.strip() for cell in lines[0].strip().strip("|").split("|")] if lines else []


def test_paired_by_seed_cancels_what_the_seeds_share(tmp_path):
    root = tmp_path / "runs"
    for version, seed in enumerate([1, 2, 3]):
        seeded_run(root / "a" / f"version_{version}", seed, 4.0,
                   extra={"eval/arith_acc/level1": {39: 0.25 + seed / 8}, "rlp/reward_std": {39: float(seed)}})
    extras = {  # b logs arithmetic at seeds 3 and 1 only, the reward at seed 3 only
        3: {"eval/arith_acc/level1": {39: 0.25 + 3 / 8 + 0.125}, "rlp/reward_std": {39: 3.5}},
        1: {"eval/arith_acc/level1": {39: 0.25 + 1 / 8 + 0.125}},
    }
    for version, seed in enumerate([3, 1, 2]):  # matched by seed, not by version number
        seeded_run(root / "b" / f"version_{version}", seed, 4.0 + EFFECT, extra=extras.get(seed))
    out = tmp_path / "cmp"
    result = compare.main([str(root / "a"), str(root / "b"), "--out", str(out)])
    assert [(a.label, b.label) for a, b in result.pairs["b"]] == [
        ("a/version_0", "b/version_1"), ("a/version_1", "b/version_2"), ("a/version_2", "b/version_0")]

    table = read_csv(out)
    b = table["b", "val/bpb"]
    for view in ("end", "at_tokens", "at_flops"):
        assert b[f"{view}_paired_n"] == "3"
        # every pair differs by exactly EFFECT: a zero-width interval on it ...
        assert float(b[f"{view}_paired_delta"]) == EFFECT
        assert float(b[f"{view}_paired_delta_ci95_low"]) == float(b[f"{view}_paired_delta_ci95_high"]) == EFFECT
        # ... where Welch's, fed the shared offsets as noise, cannot tell the arms apart
        assert float(b[f"{view}_delta"]) == pytest.approx(EFFECT)
        assert float(b[f"{view}_delta_ci95_low"]) < 0 < float(b[f"{view}_delta_ci95_high"])
    assert float(table["b", "val/loss"]["end_paired_delta"]) == 2 * EFFECT
    assert table["a", "val/bpb"]["end_paired_n"] == table["a", "val/bpb"]["end_paired_delta"] == ""

    arith = table["b", "eval/arith_acc/level1"]  # 2 pairs have it: paired, n=2, all differences 0.125
    assert arith["end_paired_n"] == "2" and float(arith["end_paired_delta"]) == 0.125
    assert float(arith["end_paired_delta_ci95_low"]) == float(arith["end_paired_delta_ci95_high"]) == 0.125
    reward = table["b", "rlp/reward_std"]  # 1 pair: its difference, no interval
    assert reward["end_paired_n"] == "1" and float(reward["end_paired_delta"]) == 0.5
    assert reward["end_paired_delta_ci95_low"] == ""

    md = (out / "report.md").read_text()
    assert "| b − a (paired by seed, n=3) |" in md
    assert "| a/version_0 | 1 / 1 |" in md and "| b/version_0 | 3 / 3 |" in md
    assert md_row_of(md, "val/bpb")[-1] == "+0.0156 [+0.0156, +0.0156]"
    assert md_row_of(md, "val/bpb", "## At matched FLOPs")[-1] == "+0.0156 [+0.0156, +0.0156]"
    assert md_row_of(md, "eval/arith_acc/level1")[-1] == "+0.125 [+0.125, +0.125] (n=2)"
    # one pair: Welch's difference of means (a: 3 runs, b: 1 run, so no interval), named so
    assert md_row_of(md, "rlp/reward_std")[-1] == f"{float(reward['end_delta']):+.3g} (Welch)"


def test_paired_interval_by_hand(tmp_path):
    """Differences that vary by seed: mean and t-interval (n - 1 dof) over the pairs."""
    root = tmp_path / "runs"
    shifts = {1: 0.0, 2: 0.125, 3: 0.5}
    for seed in SHARED:
        seeded_run(root / "a" / f"version_{seed}", seed, 4.0)
        seeded_run(root / "b" / f"version_{seed}", seed, 4.0 + shifts[seed])
    compare.main([str(root / "a"), str(root / "b"), "--out", str(tmp_path / "cmp")])
    row = read_csv(tmp_path / "cmp")["b", "val/bpb"]
    mean, _, lo, hi = by_hand(list(shifts.values()))
    assert row["end_paired_n"] == "3"
    for key, want in (("paired_delta", mean), ("paired_delta_ci95_low", lo), ("paired_delta_ci95_high", hi)):
        assert float(row[f"end_{key}"]) == pytest.approx(want, rel=1e-12), key


def test_unmatched_seeds_fall_back_to_welch(tmp_path):
    root = tmp_path / "runs"
    for seed in SHARED:
        seeded_run(root / "a" / f"version_{seed}", seed, 4.0)
    for version, seed in enumerate([4, 5, 6]):  # no seed in common with a
        seeded_run(root / "other" / f"version_{version}", seed, 4.0 + EFFECT)
    for version, seed in enumerate([1, 7, 8]):  # one seed in common: one pair is not enough
        seeded_run(root / "one" / f"version_{version}", seed, 4.0 + EFFECT)
    # same seed_everything, other data.seed: a different seed (another validation text)
    for version, seed in enumerate(SHARED):
        seeded_run(root / "data" / f"version_{version}", seed, 4.0, config=lightning_config(seed, seed + 10))
    out = tmp_path / "cmp"
    result = compare.main([str(root / g) for g in ("a", "other", "one", "data")] + ["--out", str(out)])
    assert {label: len(pairs) for label, pairs in result.pairs.items()} == {"other": 0, "one": 1, "data": 0}
    table = read_csv(out)
    md = (out / "report.md").read_text()
    for label, pairs in (("other", "0"), ("one", "1"), ("data", "0")):
        row = table[label, "val/bpb"]
        assert row["end_paired_n"] == pairs and row["end_paired_delta_ci95_low"] == ""
        assert f"| {label} − a (Welch) |" in md
        assert float(row["end_delta_ci95_low"]) < float(row["end_delta"]) < float(row["end_delta_ci95_high"])
    assert float(table["one", "val/bpb"]["end_paired_delta"]) == EFFECT + SHARED[1] - SHARED[1]
    cells = md_row_of(md, "val/bpb")
    other = table["other", "val/bpb"]
    assert cells[1] == "39"  # the step of the row's values
    assert cells[6] == compare.delta_cell(
        tuple(float(other[f"end_{k}"]) for k in ("delta", "delta_ci95_low", "delta_ci95_high")))
    assert "(Welch)" not in cells[6]  # the column says it once


def test_runs_without_seeds_are_left_unpaired(tmp_path):
    root = tmp_path / "runs"
    for seed in SHARED:
        seeded_run(root / "a" / f"version_{seed}", seed, 4.0)
    seeded_run(root / "b" / "version_0", 1, 4.0 + EFFECT)
    seeded_run(root / "b" / "version_1", 2, 4.0 + EFFECT)
    seeded_run(root / "b" / "version_2", None, 9.0)  # no config.yaml at all
    broken = {
        "no_seed_everything": "trainer:\n  max_steps: 40\ndata:\n  seed: 1\n",
        "seed_true": "seed_everything: true\ndata:\n  seed: 2\n",
        "null_data_seed": "seed_everything: 3\ndata:\n  seed: null\n",
        "no_data": "seed_everything: 1\n",
        "not_yaml": "seed_everything: [1\n  data: {{\n",
        "a_list": "- 1\n- 2\n",
        "empty": "",
    }
    for version, text in enumerate(broken.values()):
        seeded_run(root / "c" / f"version_{version}", None, 4.0, config=text)
    (root / "c" / "version_0" / "config.yaml").unlink()
    (root / "c" / "version_0" / "config.yaml").mkdir()  # not even a file
    for name, text in broken.items():
        (tmp_path / f"{name}").mkdir()
        (tmp_path / f"{name}" / "config.yaml").write_text(text)
        assert compare.read_seed(tmp_path / name) is None, name
    assert compare.read_seed(root / "a" / "version_2") == (2, 2)

    out = tmp_path / "cmp"
    result = compare.main([str(root / "a"), str(root / "b"), str(root / "c"), "--out", str(out)])
    assert [run.seed for run in result.groups[2].runs] == [None] * len(broken)
    table = read_csv(out)
    b = table["b", "val/bpb"]  # the two runs with seeds pair up, the third is left out of the pairs only
    assert b["end_n"] == "3" and b["end_paired_n"] == "2"
    assert float(b["end_paired_delta"]) == EFFECT
    c = table["c", "val/bpb"]
    assert c["end_paired_n"] == "0" and c["end_paired_delta"] == "" and c["end_delta_ci95_low"] != ""
    md = (out / "report.md").read_text()
    assert "| b − a (paired by seed, n=2) | c − a (Welch) |" in md
    assert md_row_of(md, "val/bpb")[-2:] == ["+0.0156 [+0.0156, +0.0156]", compare.delta_cell(
        tuple(float(c[f"end_{k}"]) for k in ("delta", "delta_ci95_low", "delta_ci95_high")))]


def test_a_seed_twice_in_a_group_is_not_paired(tmp_path):
    root = tmp_path / "runs"
    for seed in SHARED:
        seeded_run(root / "a" / f"version_{seed}", seed, 4.0)
        seeded_run(root / "b" / f"version_{seed}", seed, 4.0 + EFFECT)
    seeded_run(root / "b2" / "version_0", 1, 5.0)  # seed 1 again, in the same --group
    result = compare.main(["--group", f"a={root / 'a'}", "--group", f"b={root / 'b'},{root / 'b2'}",
                           "--out", str(tmp_path / "o")])
    assert [(x.label, y.label) for x, y in result.pairs["b"]] == [("a/version_2", "b/version_2"),
                                                                   ("a/version_3", "b/version_3")]
    row = read_csv(tmp_path / "o")["b", "val/bpb"]
    assert row["end_n"] == "4" and row["end_paired_n"] == "2" and float(row["end_paired_delta"]) == EFFECT


def test_runs_without_config_keep_welch(report):
    md = (report / "report.md").read_text()
    assert "| rlp − base (Welch) |" in md
    row = read_csv(report)["rlp", "val/bpb"]
    assert row["end_paired_n"] == "0" and row["end_paired_delta"] == ""


# ---- the end-of-run table: the values of a row are from one step -------------------------------


def steps_run(last_step: int, val: dict[str, dict[int, float]]) -> dict[str, dict[int, float]]:
    """A run's counters (every 10 steps, as synthetic_run logs them) with the validation points given."""
    scalars = synthetic_run(last_step, 8, 4.0, 1 / 65536, 0.0, last_step + 1)
    return {tag: points for tag, points in scalars.items() if tag.startswith("perf/")} | val


def test_end_of_run_compares_at_the_last_common_step_and_names_it(tmp_path, capsys):
    """Training bit-identical up to step 31: a stopped there, b's runs went on to 40 and 45. The old
    table set a's last val/bpb against b's last (another step); this one compares both at step 31."""
    root = tmp_path / "runs"
    bpb = {0: 8.25, 31: 4.5}  # the same at the steps both logged
    write_run(root / "a" / "version_0", steps_run(31, {
        "val/bpb": bpb,
        "val/loss": {0: 16.5},  # its last validation was its step-0 pass: no end to compare
        "eval/once": {10: 0.5},  # logged at a step the other runs did not log
        "eval/init": {0: 0.25},  # logged at step 0 only, by every run: compared there
    }))
    for version, last in enumerate([40, 45]):
        write_run(root / "b" / f"version_{version}", steps_run(last, {
            "val/bpb": bpb | {last: 4.0 - version / 4},
            "val/loss": {0: 16.5, 31: 9.0, last: 8.0},
            "eval/once": {20: 0.75},
            "eval/init": {0: 0.25},
        }))
    out = tmp_path / "cmp"
    main(["compare", str(root / "a"), str(root / "b"), "--out", str(out), "--metrics", "val/*,eval/*"])

    table = read_csv(out)
    a, b = table["a", "val/bpb"], table["b", "val/bpb"]
    assert a["end_step"] == b["end_step"] == "31"
    assert float(a["end_mean"]) == 4.5 and float(b["end_mean"]) == 4.5  # not 8.25 (step 0) nor 4.0 (step 40)
    assert b["end_n"] == "2" and float(b["end_delta"]) == 0.0
    assert table["b", "eval/init"]["end_step"] == "0" and float(table["b", "eval/init"]["end_mean"]) == 0.25
    assert table["a", "perf/tokens_seen"]["end_step"] == "29"  # the counters' last common logging step
    for metric in ("val/loss", "eval/once"):  # refused: blank, with no step
        for group in ("a", "b"):
            row = table[group, metric]
            assert row["end_step"] == "" and row["end_n"] == "0" and row["end_mean"] == "", (group, metric)
    assert table["b", "val/loss"]["at_tokens_n"] == "2"  # the matched-budget tables still have it (at 0 tokens)

    md = (out / "report.md").read_text()
    assert md_row_of(md, "val/bpb")[:4] == ["`val/bpb`", "31 (b: to 40–45)", "4.5 (n=1)", "4.5 ± 0 [4.5, 4.5] (n=2)"]
    assert md_row_of(md, "eval/init")[1] == "0"
    assert md_row_of(md, "perf/tokens_seen")[1] == "29 (b: to 39)"
    section = md_section(md, END)
    assert md_row_of(md, "val/loss") == md_row_of(md, "eval/once") == []
    refused = [line for line in section.splitlines() if line.startswith("- ")]
    assert refused == [
        "- `val/loss`: its runs share no step after step 0; did not reach step 45: a/version_0 (last at step 0); "
        "b/version_0 (last at step 40)",
        "- `eval/once`: its runs share no step after step 0; did not reach step 20: a/version_0 (last at step 10)",
    ]
    assert "the last step at which every run logging it has a value" in section

    err = capsys.readouterr().err  # the command says so too, in one line for both, no traceback
    notes = [line for line in err.splitlines() if "left out of the table" in line]
    assert "Traceback" not in err and len(notes) == 1
    assert notes[0] == ("lamina compare: note: 2 series left out of the table at the last step every run reached, "
                        "their runs sharing no step after step 0: val/loss, eval/once; their last steps by group: "
                        f"a (1 run): 0–10; b (2 runs): 20–45 (each in {out / 'report.md'})")

    # one series refused: its line names the runs that stopped short, as report.md does
    one = tmp_path / "one"
    main(["compare", str(root / "a"), str(root / "b"), "--out", str(one), "--metrics", "val/loss"])
    notes = [line for line in capsys.readouterr().err.splitlines() if "left out of the table" in line]
    assert notes == ["lamina compare: note: val/loss left out of the table at the last step every run reached: its "
                     "runs share no step after step 0; did not reach step 45: a/version_0 (last at step 0); "
                     f"b/version_0 (last at step 40) (each in {one / 'report.md'})"]


def test_end_step_by_hand():
    """end_step on runs in memory: the last step every run logging the metric has; none where only
    step 0 is shared and a run went on; a run without the metric does not hold the others back."""

    def run(name: str, **tags: list[int]) -> compare.Run:
        scalars = {tag.replace("_", "/"): (np.array(steps, dtype=np.int64), np.zeros(len(steps))) for tag, steps
                   in tags.items()}
        return compare.Run(Path(name), name, name, scalars)

    a, b, c = run("a", val_bpb=[0, 31], val_loss=[0]), run("b", val_bpb=[0, 31, 40], val_loss=[0, 9]), run("c")
    end = compare.end_step([a, b, c], "val/bpb")
    assert end.step == 31 and [(r.label, last) for r, last in end.last] == [("a", 31), ("b", 40)]
    assert not end.refused and a.at_step("val/bpb", 31) == 0.0 and a.at_step("val/bpb", 40) is None
    loss = compare.end_step([a, b, c], "val/loss")
    assert loss.step is None and loss.refused
    assert compare.end_step([a, c], "val/loss") == (0, [(a, 0)])  # step 0 is every run's last: compared
    assert compare.end_step([c], "val/bpb") == (None, []) and not compare.end_step([c], "val/bpb").refused


def test_help_says_what_the_end_of_run_table_compares():
    text = " ".join(compare.parser().format_help().split())
    assert "at the last step every run reached" in text
    assert "a metric whose runs share no step after step 0 is refused" in text


# ---- the headline: the primary metric, paired by seed, read by lamina's one rule ----------------

MARGIN = 0.02
OFFSETS = {  # group -> (bpb0, last step, FLOPs per token, per-seed offset of its difference from a)
    "a": (4.0, 39, 8, {1: 0.0, 2: 0.0, 3: 0.0}),
    "better": (3.9, 39, 8, {1: 0.0, 2: 0.01, 3: -0.01}),  # -0.1, far beyond the margin: supported
    "same": (4.0, 39, 8, {1: 0.001, 2: -0.002, 3: 0.0005}),  # no effect, a little seed noise: negligible
    "twin": (4.0, 39, 8, {1: 0.0, 2: 0.0, 3: 0.0}),  # bit-identical to a: never supported
    "short": (4.1, 19, 12, {1: 0.0, 2: 0.01, 3: -0.01}),  # worse, and a smaller budget: against, flagged
}


def gap_tags(seed: int) -> dict[str, dict[int, float]]:
    """sparsity gaps as the instrument logs them: per probe and per layer, each with its /se and /z."""
    out = {}
    for probe in ("id_b", "ood/code"):
        for suffix in ("", "/layer0", "/layer1"):
            tag = f"sparsity/gap/{probe}{suffix}"
            out[tag] = {0: 0.0, 9: 0.01 * seed, 19: 0.02}
            out[f"{tag}/se"] = {0: 0.001, 9: 0.002, 19: 0.002}
            out[f"{tag}/z"] = {0: 0.0, 9: 5.0 * seed, 19: 10.0}
    return out


@pytest.fixture(scope="module")
def five(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("five") / "runs"
    for group, (bpb0, last, fpt, offsets) in OFFSETS.items():
        for seed in SHARED:
            folder = root / group / f"version_{seed}"
            write_run(folder, synthetic_run(last, fpt, bpb0, 1 / 65536, SHARED[seed] + offsets[seed], 10,
                                            gap_tags(seed)))
            (folder / "config.yaml").write_text(lightning_config(seed, seed))
    return root


def headline_rows(md: str, ref: str = "a") -> dict[str, list[str]]:
    section = md_section(md, "## Headline")
    rows = [line for line in section.splitlines() if line.startswith("| ") and f" − {ref} |" in line]
    return {cells[0].split(" − ")[0]: cells for cells in
            ([c.strip() for c in row.strip().strip("|").split("|")] for row in rows)}


def test_headline_reads_each_contrast_by_the_rule(five, tmp_path):
    out = tmp_path / "cmp"
    main(["compare", *(str(five / g) for g in OFFSETS), "--out", str(out), "--margin", str(MARGIN)])
    md = (out / "report.md").read_text()
    assert md.startswith("# lamina compare\n\n## Headline: val/bpb, each group − a\n")
    rows = headline_rows(md)
    assert list(rows) == ["better", "same", "twin", "short"]
    # columns: contrast, at tokens, difference, n, verdict, at FLOPs, difference, n, verdict
    assert rows["better"][4] == rows["better"][8] == "supported"  # a real paired effect beyond the margin
    assert rows["better"][2].startswith("-0.1 [") and rows["better"][3] == "3 (paired by seed)"
    # no effect, a little seed noise: negligible or inconclusive, never supported
    assert rows["same"][4] in ("negligible", "inconclusive") and rows["same"][8] in ("negligible", "inconclusive")
    # bit-identical to the reference: zero variance across seeds, so not tested by the rule (never supported)
    assert rows["twin"][4] == rows["twin"][8] == "not tested"
    assert rows["short"][4] == "against"
    # each contrast at its own matched budget: better and a both reached 40960 tokens, short 20480
    assert [rows[g][1] for g in rows] == ["40960", "40960", "40960", "20480"]
    assert [rows[g][5] for g in rows] == [compare_report.fmt(40960 * 8, 3)] * 3 + [compare_report.fmt(20480 * 12, 3)]
    assert "predicted: below a, i.e. lower (the default for a bpb/loss-like metric)" in md
    assert "margin ±0.02" in md
    sentences = [line for line in md_section(md, "## Headline").splitlines() if line.startswith("- **")]
    assert len(sentences) == 4 and sentences[0].startswith("- **better vs a**: at matched tokens seen")
    assert "better's val/bpb is lower than a's by 0.1" in sentences[0]
    assert f"`tensorboard --logdir_spec a:{five / 'a'},better:{five / 'better'},same:" in md

    # budgets said out loud: short ends at 20480 tokens, the others at 40960
    heading = [line for line in md.splitlines() if line.startswith(END)][0]
    assert "budgets differ: runs end at tokens seen 20480 to 40960" in heading

    # where a contrast's budget is the tables' (short limits every run), its numbers are the tables' paired ones
    table = read_csv(out)
    short = table["short", "val/bpb"]
    assert float(short["at_tokens_budget"]) == 20480 and float(short["at_tokens_paired_delta"]) == pytest.approx(0.1)
    assert rows["short"][2] == compare.delta_cell(
        tuple(float(short[f"at_tokens_paired_{k}"]) for k in ("delta", "delta_ci95_low", "delta_ci95_high")))


def test_no_margin_no_verdict_and_the_direction_can_be_chosen(five, tmp_path):
    out = tmp_path / "cmp"
    main(["compare", str(five / "a"), str(five / "better"), "--out", str(out)])
    md = (out / "report.md").read_text()
    row = headline_rows(md)["better"]
    assert row[2].startswith("-0.1 [") and row[4] == row[8] == "no margin given: no verdict"
    assert "supported" not in md_section(md, "## Headline").split("\n| ")[-1]

    main(["compare", str(five / "a"), str(five / "better"), "--out", str(out), "--margin", "0.02",
          "--predict", "higher"])
    md = (out / "report.md").read_text()
    row = headline_rows(md)["better"]
    assert row[4] == row[8] == "against"  # predicted higher, came out lower beyond the margin
    assert "predicted: above a, i.e. higher, as given (`--predict` or `compare.predict`)" in md


def test_the_reference_runs_config_can_fix_the_question(five, tmp_path):
    # The reference's runs say in their config.yaml what the comparison judges (`compare` section,
    # lamina.verdict.Question); the flags win; runs that disagree are one line.
    runs = tmp_path / "runs"
    shutil.copytree(five, runs)
    question = "compare:\n  primary: val/bpb\n  margin: 0.02\n  predict: higher\n"
    for config in (runs / "a").glob("version_*/config.yaml"):
        config.write_text(config.read_text() + question)
    out = tmp_path / "cmp"
    main(["compare", str(runs / "a"), str(runs / "better"), "--out", str(out)])
    md = (out / "report.md").read_text()
    assert headline_rows(md)["better"][4] == "against"  # config: higher by 0.02; better is lower by 0.1
    assert "higher, as the reference's config says" in md and "margin ±0.02" in md
    main(["compare", str(runs / "a"), str(runs / "better"), "--out", str(out), "--predict", "lower"])
    assert headline_rows((out / "report.md").read_text())["better"][4] == "supported"  # the flag wins
    first = next((runs / "a").glob("version_*/config.yaml"))
    first.write_text(first.read_text().replace("margin: 0.02", "margin: 0.05"))
    with pytest.raises(ConfigError, match=r"^compare: the reference group's runs ask different questions"):
        compare.main([str(runs / "a"), str(runs / "better"), "--out", str(out)])


def test_statistics_are_bands_and_columns_not_metrics(five, tmp_path):
    out = tmp_path / "cmp"
    result = compare.main([*(str(five / g) for g in OFFSETS), "--out", str(out), "--margin", str(MARGIN)])
    names = sorted(p.name for p in out.glob("*.png"))
    assert not [n for n in names if "_se" in n or "_z_" in n or n.endswith("_z.png")], names
    assert names == sorted([
        "val_bpb_difference_vs_tokens.png", "val_bpb_difference_vs_flops.png",  # paired differences
        "val_bpb_vs_tokens.png", "val_bpb_vs_flops.png", "val_loss_vs_tokens.png", "val_loss_vs_flops.png",
        "sparsity_gap_vs_tokens.png", "sparsity_gap_vs_flops.png",  # a panel per probe
        "sparsity_gap_per_layer_vs_tokens.png", "sparsity_gap_per_layer_vs_flops.png",  # a panel per probe, layer
    ])
    assert len(names) <= 20
    md = (out / "report.md").read_text()
    assert "`sparsity/gap/id_b/se`" not in md and "`sparsity/gap/id_b/z`" not in md
    assert md_row_of(md, "sparsity/gap/id_b", "## At matched tokens seen")[-1].startswith("a: ")  # the z column
    assert "sparsity/gap/id_b/z" in result.hidden

    families = compare_report.families(result.metrics, result.hidden)
    layers = compare_report.family_figure(result, families["sparsity_gap_per_layer"], "tokens")
    assert [ax.get_title() for ax in layers.axes if ax.get_visible()] == [
        "id_b, layer 0", "id_b, layer 1", "ood/code, layer 0", "ood/code, layer 1"]
    gap = compare_report.family_figure(result, families["sparsity_gap"], "tokens")
    assert "±1.96 se (logged /se)" in [t.get_text() for t in gap.legends[0].get_texts()]

    diff = compare_report.paired_figure(result, "val/bpb", "tokens", MARGIN)
    ys = sorted({round(line.get_ydata()[0], 6) for line in diff.axes[0].get_lines()
                 if line.get_linestyle() == "--"})
    assert ys == [-MARGIN, MARGIN]  # the margin drawn, and zero
    assert any(line.get_ydata()[0] == 0 for line in diff.axes[0].get_lines() if line.get_color() == "0.45")

    # --metrics still opens anything: a /se asked for is a row and a plot of its own
    out2 = tmp_path / "explicit"
    compare.main([str(five / "a"), "--out", str(out2), "--metrics", "sparsity/gap/id_b/se"])
    assert "sparsity_gap_id_b_se_vs_tokens.png" in {p.name for p in out2.glob("*.png")}


def test_help_says_what_the_headline_is_and_how_to_choose_it():
    text = " ".join(compare.parser().format_help().split())
    assert "report.md opens with the headline" in text
    for flag in ("--primary METRIC", "--margin M", "--predict {lower,higher}"):
        assert flag in text
    assert "fixed before the runs, never derived from them; required for a verdict" in text
    assert "default: lower for a bpb/loss-like metric" in text
    # how to choose them: the reference first, one primary measure, a margin from training, not from noise
    assert "the first group is the reference" in text
    assert "the one measure the question is about, chosen before the runs" in text
    assert "a fraction of what training itself moves the metric by over the runs' steps" in text
    assert "never from the runs' seed-to-seed spread" in text


# ---- one stderr line for the end-of-run table's refusals; each contrast at its own budget ----------


def test_series_patterns_fold_families():
    patterns = compare_report.series_patterns
    assert patterns(["val/bpb", "val/loss", "eval/arith_acc/level1", "eval/arith_acc/level2",
                     "sparsity/gap/id_b/layer0", "sparsity/gap/ood/layer1", "sparsity/gap/level/1/layer0",
                     "sparsity/gap/random"]) == ["val/bpb", "val/loss", "eval/arith_acc/level* (2)", "sparsity/gap/* (4)"]
    assert patterns([f"sparsity/gap/{p}/layer{i}" for p in ("id_b", "ood") for i in range(2)]) == [
        "sparsity/gap/*/layer* (4)"]
    assert patterns(["sparsity/gap/id_b/layer0", "sparsity/gap/id_b/layer1"]) == ["sparsity/gap/id_b/layer* (2)"]
    assert patterns(["sparsity/gap/level/1", "sparsity/gap/level/2"]) == ["sparsity/gap/level/* (2)"]


def test_refusals_fold_into_one_stderr_line(tmp_path, capsys):
    """Per-layer gaps measured on other schedules (a every 20 steps, b every 25): 12 series share no
    step after step 0. The command says so in one line; report.md lists all 12 (their /se, /z none)."""
    root = tmp_path / "runs"
    probes = ("id_b", "ood", "random")

    def gaps(every: int, last: int) -> dict[str, dict[int, float]]:
        steps = [0, *range(every - 1, last + 1, every)]
        out = {}
        for probe in probes:
            for layer in range(4):
                tag = f"sparsity/gap/{probe}/layer{layer}"
                out |= {tag: {s: 0.01 for s in steps}, f"{tag}/se": {s: 0.001 for s in steps},
                        f"{tag}/z": {s: 10.0 for s in steps}}
        return out

    for version in range(2):
        write_run(root / "a" / f"version_{version}", steps_run(59, {"val/bpb": {0: 4.0, 59: 3.5}} | gaps(20, 59)))
        write_run(root / "b" / f"version_{version}",
                  steps_run(74, {"val/bpb": {0: 4.0, 59: 3.5, 74: 3.4}} | gaps(25, 74)))
    out = tmp_path / "cmp"
    main(["compare", str(root / "a"), str(root / "b"), "--out", str(out)])

    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "left out of the table" in line]
    assert "Traceback" not in err and notes == [
        "lamina compare: note: 12 series left out of the table at the last step every run reached, their runs "
        "sharing no step after step 0: sparsity/gap/*/layer* (12); their last steps by group: a (2 runs): 59; "
        f"b (2 runs): 74 (each in {out / 'report.md'})"]

    section = md_section((out / "report.md").read_text(), END)
    assert "Not compared at a common step (12 series):" in section
    listed = [line for line in section.splitlines() if line.startswith("- ")]
    assert [line.split("`")[1] for line in listed] == [f"sparsity/gap/{p}/layer{i}" for p in probes for i in range(4)]
    assert all("did not reach step 74: a/version_0, a/version_1 (last at step 59)" in line for line in listed)
    assert md_row_of((out / "report.md").read_text(), "val/bpb")[1] == "59 (b: to 74)"  # compared, not refused


def test_each_contrast_is_read_at_its_own_matched_budget(tmp_path):
    """RLP beside a token-matched control (fewer FLOPs per token) and a FLOP-matched one (more steps):
    the tables' FLOPs budget is the token-matched control's end; the headline reads the FLOP-matched
    control at the FLOPs it was matched at, RLP's end."""
    from lamina.compare.headline import contrasts

    root = tmp_path / "runs"
    noise = {1: 0.0, 2: 0.01, 3: -0.01}
    arms = {"rlp": (39, 12, 4.0), "ntp": (39, 8, 4.05), "ntp_flops": (59, 8, 4.05)}  # last step, FLOPs/token, bpb0
    for group, (last, fpt, bpb0) in arms.items():
        for seed in SHARED:
            folder = root / group / f"version_{seed}"
            offset = SHARED[seed] + (0.0 if group == "rlp" else noise[seed])
            write_run(folder, synthetic_run(last, fpt, bpb0, 1 / 65536, offset, 10))
            (folder / "config.yaml").write_text(lightning_config(seed, seed))
    out = tmp_path / "cmp"
    result = compare.main([*(str(root / g) for g in arms), "--out", str(out), "--margin", "0.02",
                           "--predict", "higher"])
    assert result.budgets["flops"]["val/bpb"] == 40960 * 8  # the tables: what every run reached (ntp's end)

    found = {(c.group, c.axis): c for c in contrasts(result, "val/bpb", 1, 0.02)}
    flops = found["ntp_flops", "flops"]
    assert flops.budget == 40960 * 12 == 61440 * 8  # rlp's end, where ntp_flops was matched
    # there ntp_flops has seen 61440 tokens, rlp 40960: 4.05 - 61440/65536 - (4.0 - 40960/65536) per seed
    assert flops.paired and flops.n == 3 and flops.diff == pytest.approx(0.05 - 20480 / 65536, abs=1e-6)
    assert flops.verdict.verdict == "against"  # predicted above rlp, below it beyond the margin
    assert found["ntp", "flops"].budget == 40960 * 8 and found["ntp_flops", "tokens"].budget == 40960
    assert found["ntp_flops", "tokens"].diff == pytest.approx(0.05, abs=1e-6)

    rows = headline_rows((out / "report.md").read_text(), "rlp")
    assert rows["ntp_flops"][5] == "491520" and rows["ntp"][5] == "327680"


def test_compare_demo_names_its_primary_direction_and_margin():
    """make compare-demo reads RLP (the reference, first) against its controls on val/bpb, each control
    predicted above it, with a margin fixed in the Makefile."""
    text = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    target = text.split("\ncompare-demo:", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    (line,) = [line for line in target.splitlines() if "/lamina compare " in line]
    words = re.sub(r"\$\((?:[^()]|\$\([^()]*\))*\)", " ", line.split("/lamina compare ", 1)[1]).split()
    args = compare.parser().parse_args(["runs/x", *words])
    assert (args.primary, args.predict) == ("val/bpb", "higher") and 0 < args.margin < 0.05
    assert re.search(r"COMPARE_ARMS\s*\?=\s*(\S+)", text)[1] == "rlp-tiny"
