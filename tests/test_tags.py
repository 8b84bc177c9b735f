"""lamina.tags, the tag names writers and readers share: each builder gives the exact string the
instruments wrote before it existed (literal expectations: a study's event files are read with
these names), the module imports nothing, and every tag the world-v2 claims (and the gates they
run) read is one a fit writes, so a rename on either side fails here."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lamina import tags
from lamina.compare.runs import AXES, KEY_METRICS
from lamina.instrument.ablation import LayerAblation, ablation_scalars
from lamina.instrument.context import STRENGTHS, AnswerScores, ContextResult, SteerChoice, context_scalars
from lamina.instrument.hierarchy import LabelProbe, LayerProbe, hierarchy_scalars
from lamina.study import world_runs
from lamina.study.claim import StudyContext
from lamina.study.claims import context_vs_prior, density_familiarity, hierarchy, modularity, sparsify_difficulty
from lamina.study.runs import Runner
from lamina.tensorboard import layout

pytestmark = pytest.mark.usefixtures("one_thread")

LITERAL = [
    # training and perf
    (tags.TRAIN_LOSS, "train/loss"), (tags.VAL_LOSS, "val/loss"), (tags.VAL_BPB, "val/bpb"), (tags.LR, "lr"),
    (tags.perf("mfu"), "perf/mfu"), (tags.TOKENS_SEEN, "perf/tokens_seen"), (tags.FLOPS, "perf/flops"),
    (tags.TOKENS_PER_SEC, "perf/tokens_per_sec"),
    # density, token statistics, gaps and their statistics
    (tags.density("id"), "sparsity/id/mean"), (tags.density("id", 3), "sparsity/id/layer3"),
    (tags.density("exposure/100"), "sparsity/exposure/100/mean"), (tags.density("ood/level/4"), "sparsity/ood/level/4/mean"),
    (tags.density(tags.TRAIN_PROBE), "sparsity/train/mean"), (tags.density(tags.TRAIN_PROBE, 1), "sparsity/train/layer1"),
    (tags.sparsity_stat("id", "hoyer"), "sparsity/id/hoyer"), (tags.sparsity_stat("id", "hoyer", 0), "sparsity/id/layer0/hoyer"),
    (tags.gap("id_b"), "sparsity/gap/id_b"), (tags.gap("random", 1), "sparsity/gap/random/layer1"),
    (tags.se(tags.gap("id_b")), "sparsity/gap/id_b/se"), (tags.z(tags.gap("id_b")), "sparsity/gap/id_b/z"),
    (tags.z(tags.gap("shuffled", 0)), "sparsity/gap/shuffled/layer0/z"),
    (tags.lo(tags.gap("random")), "sparsity/gap/random/lo"), (tags.hi(tags.gap("random")), "sparsity/gap/random/hi"),
    # modularity and ablation
    (tags.q(2), "modularity/layer2/q"), (tags.modularity(3, "q_heldout"), "modularity/layer3/q_heldout"),
    (tags.q_null(0, "hi"), "modularity/layer0/q_null_hi"), (tags.q_shuffled(0, "mean"), "modularity/layer0/q_shuffled_mean"),
    (tags.q_shuffled(1, "z"), "modularity/layer1/q_shuffled_z"), (tags.specificity(1), "modularity/layer1/specificity"),
    (tags.specificity(1, "null_std"), "modularity/layer1/specificity_null_std"),
    (tags.ablation_damage(2, 0, "reverse"), "modularity/layer2/ablation/m0/reverse"),
    (tags.ablation_prefix(2), "modularity/layer2/ablation/m"), (tags.task_loss("reverse"), "modularity/task_loss/reverse"),
    (tags.task_chance("reverse"), "modularity/task_chance/reverse"), (tags.UNLEARNED_TASKS, "modularity/unlearned_tasks"),
    # layers: effective rank, label probes, tiers
    (tags.effective_rank(1), "layers/layer1/effective_rank"), (tags.effective_rank(1, "floor"), "layers/layer1/effective_rank_floor"),
    (tags.effective_rank(0, "id_b"), "layers/layer0/effective_rank_id_b"),
    (tags.label_probe("entity", "depth"), "layers/probe/entity/depth"),
    (tags.label_probe("entity", "gain_se", 2), "layers/layer2/probe/entity/gain_se"),
    (tags.tier("higher", "gain_se"), "layers/tier/higher/gain_se"), (tags.tier("lexical", "depth"), "layers/tier/lexical/depth"),
    (tags.TIER_CONTRAST, "layers/tier/contrast"), (tags.TIER_CONTRAST_SE, "layers/tier/contrast_se"),
    # last layer
    (tags.lastlayer(3, "top5_energy"), "lastlayer/level3/top5_energy"), (tags.se(tags.lastlayer(1, "hoyer")), "lastlayer/level1/hoyer/se"),
    (tags.lastlayer_gap(4, "hoyer"), "lastlayer/gap/level4/hoyer"),
    (tags.lastlayer_gap(2, "entropy_rank", matched=True), "lastlayer/matched_gap/level2/entropy_rank"),
    (tags.LASTLAYER_SKIPPED, "lastlayer/skipped"),
    # context against memory
    (tags.context("follow", "0"), "eval/context/follow/0"), (tags.lo(tags.context("pull", "0")), "eval/context/pull/0/lo"),
    (tags.context("n", "all"), "eval/context/n/all"), (tags.context("steer_norm"), "eval/context/steer_norm"),
    (tags.context("follow_steered", "100", 4.0), "eval/context/follow_steered/s4/100"),
    (tags.context("steer_gain", "all", 0.5), "eval/context/steer_gain/s0.5/all"),
    # thinking, RLP, fine-tuning, the name swap
    (tags.arith_acc(2), "eval/arith_acc/level2"), (tags.arith_acc(5, thought=False), "eval/arith_acc_nothink/level5"),
    (tags.arith_n(2), "eval/arith_n/level2"), (tags.think_acc_gain(1), "eval/think_acc_gain/level1"),
    (tags.pass_at(8, 3), "eval/pass_at_8/level3"), (tags.rlp("reward_std"), "rlp/reward_std"),
    (tags.RLP_SIGNAL, ("rlp/reward_std", "rlp/advantage_abs_mean", "rlp/zero_variance_frac")),
    (tags.facts("one_hop"), "eval/facts/one_hop"), (tags.eval_task("arith"), "eval/task/arith"),
    (tags.drift(3, "cka_floor"), "drift/layer3/cka_floor"), (tags.DRIFT_PROBE_CHANCE, "drift/probe_chance"),
    (tags.name_swap("100", "both"), "density/name_swap/100/both"),
    # patterns and prefixes, as readers match families
    (tags.arith_acc("*"), "eval/arith_acc/level*"), (tags.think_acc_gain("[0-9]"), "eval/think_acc_gain/level[0-9]"),
    (tags.gap("*"), "sparsity/gap/*"), (tags.q(r"\d+"), r"modularity/layer\d+/q"), (tags.GAPS, "sparsity/gap"),
    (tags.task_loss(""), "modularity/task_loss/"), (tags.context(""), "eval/context/"), (tags.rlp(""), "rlp/"),
    (tags.LABEL_PROBES, "layers/probe/"), (tags.LASTLAYER_LEVELS, "lastlayer/level"), (tags.LASTLAYER_GAPS, "lastlayer/gap/"),
]


@pytest.mark.parametrize(("built", "expected"), LITERAL, ids=[str(e) for _, e in LITERAL])
def test_each_builder_gives_the_string_the_instruments_wrote(built, expected):
    assert built == expected


def test_the_prefixes_are_those_of_their_builders_tags():
    assert tags.label_probe("entity", "depth").startswith(tags.LABEL_PROBES)
    assert tags.lastlayer(2, "hoyer").startswith(tags.LASTLAYER_LEVELS)
    assert tags.lastlayer_gap(2, "hoyer").startswith(tags.LASTLAYER_GAPS)
    assert not tags.lastlayer_gap(2, "hoyer", matched=True).startswith(tags.LASTLAYER_GAPS)  # (summarised: stays)
    assert tags.ablation_damage(1, 3, "copy").startswith(tags.ablation_prefix(1))
    assert tags.gap("id_b").startswith(tags.GAPS + "/") and tags.context("follow", "0").startswith(tags.CONTEXT + "/")


def test_tags_imports_nothing_so_every_writer_and_reader_can_import_it():
    tree = ast.parse(Path(tags.__file__).read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [(n.module, [a.name for a in n.names]) for n in imports] == [("__future__", ["annotations"])]
    loaded = subprocess.run([sys.executable, "-c", "import json, sys, lamina.tags; print(json.dumps(list(sys.modules)))"],
                            capture_output=True, text=True, check=True).stdout
    assert not {"torch", "lightning", "numpy"} & set(json.loads(loaded))


# ---- what the world-v2 claims read against what a fit writes -------------------------------------------


@pytest.fixture(scope="module")
def toy_fit(tmp_path_factory):
    """One world-v2 run at the study's test preset (4 steps, 2 layers x 32; about 5 s on one thread), as
    the claims get it (lamina.study.world_runs.train), and the tags it wrote."""
    out = tmp_path_factory.mktemp("study")
    ctx = StudyContext("tags", out, [1], "test", Runner(out / "runs", "tags", log=lambda line: None),
                       log=lambda line: None)
    runs, _, _ = world_runs.train(ctx)
    run = runs[1][world_runs.ARM]
    return out, run, set(world_runs.scalars(run))


def answer_scores(follows: list[bool]) -> AnswerScores:
    f = torch.tensor(follows)
    return AnswerScores(f.double(), (~f).double(), f, ~f)


def steered_context_tags() -> set[str]:
    """context_scalars of a measurement that fitted a steering vector, which 4 toy steps never do
    (it needs a model that reads its context): two bins, half of each held out, all held out steered."""
    bins = ("0", "100") * 4
    heldout = torch.tensor([i >= 4 for i in range(8)])
    held = int(heldout.sum())
    result = ContextResult(bins, answer_scores([True, False] * 4), heldout, answer_scores([True] * held),
                           question=answer_scores([False] * 8), read=True,
                           choice=SteerChoice(0, 1, STRENGTHS[1], torch.ones(4), 0.1, 0.5),
                           steered_rows=torch.arange(held), fit_n=4,
                           steered={s: answer_scores([True] * held) for s in STRENGTHS},
                           random={s: answer_scores([False] * held) for s in STRENGTHS})
    return set(context_scalars(result))


def specificity_tags(n_layer: int) -> set[str]:
    """ablation_scalars with specificity, which needs two learned string tasks (none in 4 steps)."""
    result = LayerAblation(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(4, 2, 3, dtype=torch.float64),
                           torch.ones(3, dtype=torch.bool), 0.2, torch.zeros(4), 0.0, 0.1, 2.0)
    return {tag for layer in range(n_layer) for tag in ablation_scalars(layer, result, ("a", "b", "c"))}


def readable_tier_tags() -> set[str]:
    """hierarchy_scalars where a label of every tier is read (its gains far above their bootstrap
    spread), which gives each tier's `depth`: 4 toy steps read no higher tier."""
    gen = torch.Generator().manual_seed(0)
    gains = [0.1, 0.2, 0.3]

    def probe(name: str) -> LabelProbe:
        layers = [LayerProbe(0.5 + g, 0.5, 1.0, torch.ones(8, dtype=torch.bool), 0.01) for g in gains]
        draws = torch.tensor(gains) + 0.01 * torch.randn(50, len(gains), generator=gen)
        return LabelProbe(name, layers, 0.5, 0.5, torch.ones(8, dtype=torch.bool), torch.arange(8), 8, 8, draws)

    return set(hierarchy_scalars({name: probe(name) for name in ("token", "entity", "operator", "answer")}))


class Asked(dict):
    """A run's scalars that note every tag a reader asks for by name."""

    def __init__(self, values: dict, asked: set[str]):
        super().__init__(values)
        self.asked = asked

    def get(self, tag, default=None):
        self.asked.add(tag)
        return super().get(tag, default)

    def __getitem__(self, tag):
        self.asked.add(tag)
        return super().__getitem__(tag)

    def __contains__(self, tag):
        self.asked.add(tag)
        return super().__contains__(tag)


CLAIMS = (density_familiarity, sparsify_difficulty, hierarchy, modularity, context_vs_prior)


def test_every_tag_the_world_v2_claims_and_their_gates_read_is_one_a_fit_writes(toy_fit, monkeypatch):
    out, run, written = toy_fit
    n_layer = len([t for t in written if re.fullmatch(tags.q(r"\d+"), t)])
    assert n_layer == 2
    # What the fit could not write in 4 steps, from the same writers on input where it is written.
    conditional = steered_context_tags() | specificity_tags(n_layer) | readable_tier_tags()
    asked: set[str] = set()
    scalars, last, start = world_runs.scalars, world_runs.last_values, world_runs.start_values
    monkeypatch.setattr(world_runs, "scalars", lambda r: Asked(scalars(r), asked))  # at(), steps_of() read through it
    monkeypatch.setattr(world_runs, "last_values", lambda r: Asked(last(r), asked))  # the capability gates' values
    monkeypatch.setattr(world_runs, "start_values", lambda r: Asked(start(r), asked))
    monkeypatch.setattr(modularity, "scalars", world_runs.scalars)
    for claim in CLAIMS:  # every arm a claim asks for is the one toy run (hierarchy's small model too)
        monkeypatch.setattr(claim, "train", lambda ctx, arms=(world_runs.ARM,): (
            {1: {arm: run for arm in arms}}, world_runs.preset_of(ctx), 0.0))
        claim.run(StudyContext(claim.NAME, out, [1], "test", Runner(out / "runs", claim.NAME), log=lambda line: None))
    unread = asked - written - conditional
    # Read but written by no instrument: density-familiarity's own checkpoint numbers (it looks for them in
    # the run first), and the layer count's probe one layer past the last.
    own = {t for t in unread if t.startswith("density/name_swap/")}
    assert own and unread - own == {tags.q(n_layer)}, sorted(unread - own)
    # The reads cover every family the claims rest on (a recorder that saw nothing would pass the above).
    for tag in (tags.VAL_BPB, tags.z(tags.gap("id_b")), tags.density("exposure/100"), tags.density("ood/level/4"),
                tags.q_shuffled(0, "mean"), tags.specificity(1, "null_std"), tags.tier("higher", "depth"),
                tags.TIER_CONTRAST_SE, tags.context("win", "100"), tags.context("follow_steered", "100", 4.0),
                tags.lo(tags.context("follow", "0")), tags.arith_acc(2), tags.arith_n(2)):
        assert tag in asked, tag
    assert any(t.startswith(tags.task_loss("")) for t in asked)  # the strings gate


def test_compare_the_layout_and_the_progress_bar_read_what_a_fit_writes(toy_fit):
    _, _, written = toy_fit
    for axis in AXES.values():
        assert axis.counter in written, axis.counter
    assert tags.TOKENS_PER_SEC in written and tags.TRAIN_LOSS in written
    # compare's key metrics: each a glob that matches a tag of this fit (the RLP counters need an RLP run)
    for pattern in KEY_METRICS:
        if pattern not in tags.RLP_SIGNAL:
            assert fnmatch.filter(written, pattern), pattern
    # the custom-scalars layout: Margin charts name tags, Multiline charts regular expressions
    for charts in layout(2).values():
        for kind, names in charts.values():
            for name in names:
                assert (name in written if kind == "Margin" else any(re.search(name, t) for t in written)), name
