"""`instrument.series`: summary logs the series a reader and the custom-scalars layout read (at most
300 on the demo's shape), the rest goes to the run's measurements.jsonl at the same step, and the
two together are exactly what `all` logs, number for number."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lamina.cli import main
from lamina.errors import ConfigError
from lamina.instrument import Instrumentation
from lamina.instrument.ablation import LayerAblation, ablation_scalars
from lamina.instrument.callback import SIDECAR, in_summary, read_sidecar
from lamina.instrument.config import ModularityConfig
from lamina.tensorboard import TensorBoardLogger, layout

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MAX_SERIES = 300  # the bound for the 4-layer demo


# ---- the rule, on tags whose answer is known ----------------------------------------------------


@pytest.mark.parametrize("tag, kept", [
    # means over layers and their statistics
    ("sparsity/id/mean", True), ("sparsity/family/prose/mean", True), ("sparsity/id/hoyer", True),
    ("sparsity/train/mean", True), ("sparsity/gap/level/3", True), ("sparsity/gap/level/3/se", True),
    ("sparsity/gap/ood/level/4/z", True), ("sparsity/gap/id_b/lo", True),
    # per layer: only a measure beside its null
    ("modularity/layer3/q", True), ("modularity/layer0/q_shuffled_lo", True), ("modularity/layer0/q_shuffled_hi", True),
    ("modularity/layer2/q_shuffled_z", True), ("modularity/layer1/specificity", True),
    ("modularity/layer1/specificity_z", True), ("layers/layer0/effective_rank", True),
    ("layers/layer0/effective_rank_floor", True),
    ("sparsity/id/layer0", False), ("sparsity/id/layer0/hoyer", False), ("sparsity/train/layer2", False),
    ("sparsity/gap/id_b/layer1", False), ("sparsity/gap/family/prose/layer3/z", False),
    ("modularity/layer0/q_null_mean", False), ("modularity/layer0/q_heldout", False),
    ("modularity/layer0/stability", False), ("modularity/layer0/specificity_null_mean", False),
    ("modularity/layer1/ablation/m2/sort+shift", False), ("layers/layer1/effective_rank_id_b", False),
    ("layers/layer2/probe/token/gain", False),
    # summaries of labels, levels and prompts stay; their detail goes
    ("modularity/task_loss/copy", True), ("modularity/task_chance/copy", True), ("modularity/unlearned_tasks", True),
    ("layers/tier/contrast", True), ("layers/tier/lexical/depth_se", True), ("layers/probe/token/mean_gain", False),
    ("lastlayer/matched_gap/level3/hoyer/z", True), ("lastlayer/skipped", True),
    ("lastlayer/level3/hoyer", False), ("lastlayer/level3/length", False), ("lastlayer/gap/level2/hoyer/se", False),
    ("eval/context/follow/all", True), ("eval/context/follow/all/lo", True), ("eval/context/steer_layer", True),
    ("eval/context/steer_gain/s2/all/se", True), ("eval/context/follow/0", False), ("eval/context/n/100", False),
    ("eval/context/pull/0/lo", False), ("eval/context/follow_steered/s1/10", False),
    # everything else
    ("perf/instrument_seconds", True), ("perf/modularity_shuffled_seconds", True), ("train/loss", True),
])
def test_summary_keeps_tags_by_kind(tag, kept):
    assert in_summary(tag) is kept


def test_every_tag_a_layout_chart_names_is_in_the_summary():
    for charts in layout(4).values():
        for title, (kind, series) in charts.items():
            if kind == "Margin":  # exact tags (Multiline patterns: tests/test_tensorboard_layout.py, on a fit)
                assert all(in_summary(tag) for tag in series), (title, series)


def test_a_bad_series_value_is_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^instrument\.series: expected one of summary, all, got 'some'$"):
        Instrumentation(series="some")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--trainer.max_steps", "1", "--data.cache_dir", str(tmp_path / "cache"),
              "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--instrument.series", "some"])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert re.search(r"instrument\.series: expected one of summary, all, got 'some'", lines[0]), lines[0]


def test_detail_goes_to_the_sidecar_and_the_gates_still_read_it(tmp_path):
    logger = TensorBoardLogger(str(tmp_path), name="run", version=0)
    trainer = SimpleNamespace(loggers=[logger])
    inst = Instrumentation()
    measured = {"sparsity/id/mean": 0.25, "sparsity/id/layer0": 0.5, "eval/context/follow/0/lo": 0.75,
                "eval/context/follow/all": 0.125}
    inst._log_scalars(trainer, measured, 0, "full")
    inst._log_scalars(trainer, {"sparsity/train/mean": 0.3, "sparsity/train/layer0": 0.4}, 4, "train")
    logger.save()
    lines = read_sidecar(Path(logger.log_dir) / SIDECAR)
    assert lines == [
        {"step": 0, "kind": "full", "scalars": {"sparsity/id/layer0": 0.5, "eval/context/follow/0/lo": 0.75}},
        {"step": 4, "kind": "train", "scalars": {"sparsity/train/layer0": 0.4}},
    ]
    assert set(events(Path(logger.log_dir))) == {0, 4}
    assert set(events(Path(logger.log_dir))[0]) == {"sparsity/id/mean", "eval/context/follow/all"}
    # The end-of-fit gates read last and start values: every number measured, series or not.
    assert logger.start_values == measured
    assert logger.last_values["sparsity/train/layer0"] == 0.4 and logger.last_values["eval/context/follow/0/lo"] == 0.75


# ---- end to end, on the demo's shape --------------------------------------------------------------

# configs/tiny.yaml (4 layers, its 15 probes, every part of the battery) at toy sizes: the full
# battery at step 0 and the end (2), the light tier at step 1, the training density at every step.
DEMO_AT_TOY_SIZES = [
    "--model.n_embd", "32", "--model.n_head", "2",
    "--data.batch_size", "4", "--data.max_bytes", "300000", "--data.val_tokens", "2048",
    "--trainer.max_steps", "2", "--trainer.log_every_n_steps", "1", "--trainer.val_check_interval", "2",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--checkpoint.save_last", "false",
    "--instrument.every_n_steps", "2", "--instrument.sparsity.light_every_n_steps", "1",
    "--instrument.sparsity.light_windows", "2", "--instrument.probes.tokens", "512",
    "--instrument.probes.family_tokens", "256", "--instrument.modularity.tokens", "512",
    "--instrument.modularity.shuffled_draws", "2", "--instrument.ablation.examples", "2",
    "--instrument.lastlayer.problems", "4", "--instrument.hierarchy.examples", "128",
    "--instrument.hierarchy.items", "2048",  # 128 examples hold every label the demo probes (64 miss one)
]


def demo_fit(tmp_path: Path, series: str) -> Path:
    main(["fit", "--config", str(CONFIGS / "tiny.yaml"), *DEMO_AT_TOY_SIZES, "--instrument.series", series,
          "--data.cache_dir", str(tmp_path / "cache"), "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
          "--trainer.logger.init_args.name", series])
    return tmp_path / "runs" / series / "version_0"


def events(run: Path) -> dict[int, dict[str, float]]:
    """step -> {tag: value} of a run's scalar series."""
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    by_step: dict[int, dict[str, float]] = defaultdict(dict)
    for tag in acc.Tags()["scalars"]:
        for event in acc.Scalars(tag):
            by_step[event.step][tag] = event.value
    return dict(by_step)


def same_number(a: float, b: float) -> bool:
    # Event files hold float32: the sidecar's full-precision value rounds to the series' one.
    return bool(np.float32(a) == np.float32(b)) or (math.isnan(a) and math.isnan(b))


def test_summary_has_at_most_300_series_and_with_the_sidecar_is_all(tmp_path):
    summary_run, all_run = demo_fit(tmp_path, "summary"), demo_fit(tmp_path, "all")
    summary, every = events(summary_run), events(all_run)
    every_tag = {tag for tags in every.values() for tag in tags}
    summary_tags = {tag for tags in summary.values() for tag in tags}
    # The demo's shape: 4 layers, 15 probes, the last-layer levels 1-5, the ablation's tasks.
    assert {int(m[1]) for t in every_tag if (m := re.search(r"/layer(\d+)", t))} == {0, 1, 2, 3}
    assert len([t for t in every_tag if re.fullmatch(r"sparsity/(?!gap/|train/).+/mean", t)]) == 15
    assert {t for t in every_tag if t.startswith("lastlayer/level") and t.endswith("/length")} == {
        f"lastlayer/level{k}/length" for k in range(1, 6)}
    assert (summary_run / SIDECAR).exists() and not (all_run / SIDECAR).exists()  # all: every number a series

    # At most 300 series, counting too what a trained run adds: the ablation's tags once two string
    # tasks are learned (specificity, the damage of up to max_modules modules a layer) and each tier's
    # depth once its labels are read (not in 2 steps).
    tasks = [t.removeprefix("modularity/task_loss/") for t in every_tag if t.startswith("modularity/task_loss/")]
    modules = ModularityConfig().max_modules
    learned = LayerAblation(damage=torch.zeros(modules, len(tasks)), null_damage=torch.zeros(8, modules, len(tasks)),
                            learned=torch.ones(len(tasks), dtype=torch.bool), specificity=0.5, null=torch.zeros(8),
                            null_mean=0.1, null_std=0.1, z=4.0)
    later = {tag for layer in range(4) for tag in ablation_scalars(layer, learned, tasks) if in_summary(tag)}
    tiers = [t.removesuffix("/gain") for t in every_tag if re.fullmatch(r"layers/tier/\w+/gain", t)]
    later |= {f"{tier}/{depth}" for tier in tiers for depth in ("depth", "depth_se")}
    later |= {"layers/tier/contrast", "layers/tier/contrast_se"}
    assert len(tasks) == 11 and len(summary_tags | later) <= MAX_SERIES, len(summary_tags | later)
    assert summary_tags == {t for t in every_tag if in_summary(t)}

    # summary's series and the sidecar at a step: all's series at that step, tag for tag, value for value.
    lines = read_sidecar(summary_run / SIDECAR)
    assert {(line["step"], line["kind"]) for line in lines} >= {(0, "full"), (1, "light"), (2, "full"), (1, "train")}
    joined = {step: dict(tags) for step, tags in summary.items()}
    for line in lines:
        into = joined.setdefault(line["step"], {})
        assert not set(line["scalars"]) & set(into), "a tag both a series and in the sidecar"
        into.update(line["scalars"])
    assert sorted(joined) == sorted(every)
    timed = re.compile(r"perf/.*(seconds|per_sec)")  # wall-clock times differ between two fits
    for step, tags in every.items():
        assert set(joined[step]) == set(tags), (step, set(joined[step]) ^ set(tags))
        differ = [t for t, v in tags.items() if not timed.match(t) and not same_number(joined[step][t], v)]
        assert not differ, (step, differ)
    # Measuring changes no training: the same losses, bit for bit.
    assert {s: t["train/loss"] for s, t in summary.items() if "train/loss" in t} == {
        s: t["train/loss"] for s, t in every.items() if "train/loss" in t}
