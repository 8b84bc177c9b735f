"""sparsify-difficulty (lamina.study.claims.sparsify_difficulty): its per-problem densities, its
matched and stratified contrasts and its gates on cases whose answer is known by construction, and
the whole claim on untrained GPTs (no structure in, nothing supported; a model at chance, not tested)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lamina.data import world
from lamina.data.tokenizer import byte_tokenizer
from lamina.instrument.lastlayer import prompt_positions_probe, prompts_probe
from lamina.model import GPT, GPTConfig
from lamina.pretrained import LoadedCheckpoint
from lamina.study import world_runs
from lamina.study.claim import StudyContext
from lamina.study import sparsify_evaluation as se
from lamina.study.claims import sparsify_difficulty as sd
from lamina.study.report import Contrast
from lamina.study.runs import Run, RunSpec
from lamina.verdict import AGAINST, INCONCLUSIVE, NEGLIGIBLE, NOT_TESTED, SUPPORTED, Prediction

LENGTHS = {1: [11], 2: [13], 3: [12, 13, 15], 4: [13, 16, 17], 5: [14, 19, 20]}  # byte-token prompts by level


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def world_gpt(seed: int, block_size: int = 64) -> GPT:
    """A toy GPT of world-v2's recipe (rotary, relu2, qk-norm, untied) at a random initialisation."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=259, block_size=block_size, n_layer=2, n_head=2, n_embd=32, rotary=True,
                         activation="relu2", qk_norm=True, tie_embeddings=False)).eval()


class PositionDensity(torch.nn.Module):
    """A stand-in network whose MLP units fire by position only: at position p a share `share(p)` of
    every layer's 100 units has pre-activation > 0, whatever the tokens."""

    def __init__(self, share):
        super().__init__()
        self.share = share

    def forward(self, idx, record=None):
        b, t = idx.shape
        pre = torch.full((b, t, 100), -1.0)
        for p in range(t):
            pre[:, p, : round(100 * self.share(p))] = 1.0
        record.setdefault("mlp_pre", []).extend([pre, pre])
        return torch.zeros(b, t, 3)


def levels_of(values: dict[int, list[float]], lengths: dict[int, list[int]], correct=None, untrained=None) -> dict:
    """A seed's problems as evaluate_problems writes them (density only, and what the contrasts read)."""
    out = {}
    for k in values:
        n = len(values[k])
        out[str(k)] = {"correct": list(correct[k]) if correct else [True] * n, "length": list(lengths[k]),
                       "density": list(values[k]), "trained": k <= 3, "held_out": True,
                       "untrained": {"density": list(untrained[k] if untrained else values[k])}}
    return out


# ---- what density means when prompts differ in length ------------------------------------------


def test_density_counts_the_prompts_own_tokens(tok):
    """Every prompt starts `<|endoftext|>Q: `, whose states are the same in every prompt. In a built
    network where those positions fire at 0.6 and every other at 0.3, the mean over all tokens falls
    with the prompt's length, level 5 below level 1 by more than the margin; the mean over the prompt's
    own tokens is 0.3 at every level: trained − held-out 0, as built."""
    probe = prompt_positions_probe(tok, 1, problems_per_level=32)
    start = se.shared_prefix(probe)
    assert start == 4 and tok.decode(probe.tokens[0, 1:start].tolist()) == "Q: "
    net = PositionDensity(lambda p: 0.6 if p < 4 else 0.3)
    own = se.prompt_density(net, probe, start, 16, "cpu")
    every = se.prompt_density(net, probe, 0, 16, "cpu")
    assert np.allclose(own, 0.3)
    by_level = lambda d: {k: [d[i] for i in np.nonzero(probe.levels == k)[0]] for k in world.ARITH_LEVELS}  # noqa: E731
    lengths = {k: probe.lengths[probe.levels == k].tolist() for k in world.ARITH_LEVELS}
    assert sd.trained_minus_held_out(levels_of(by_level(own), lengths), "density", matched=False) == pytest.approx(0)
    assert sd.trained_minus_held_out(levels_of(by_level(every), lengths), "density", matched=False) > sd.DENSITY_MARGIN


def test_density_falling_along_the_prompt_is_matched_out(tok):
    """A built network whose units fire less at later positions (0.40 - 0.01 p): the prompt's own-token
    density falls with length, so longer held-out prompts look sparser as measured (above the margin
    between levels 1 and 5); at matched length the difference is 0. Add a held-out effect and it is found."""
    probe = prompt_positions_probe(tok, 2, problems_per_level=48)
    start = se.shared_prefix(probe)
    dens = np.array(se.prompt_density(PositionDensity(lambda p: 0.40 - 0.01 * p), probe, start, 32, "cpu"))
    levels = probe.levels.numpy()
    lengths = {k: probe.lengths[probe.levels == k].tolist() for k in world.ARITH_LEVELS}
    for shift in (0.0, 0.03):
        values = {k: list(dens[levels == k] - (shift if k >= 4 else 0.0)) for k in world.ARITH_LEVELS}
        built = levels_of(values, lengths)
        assert sd.trained_minus_held_out(built, "density", matched=False) > shift + 0.01
        assert sd.trained_minus_held_out(built, "density") == pytest.approx(shift, abs=1e-3)


def test_prompt_density_by_hand_and_batching(tok):
    model = world_gpt(0)
    eot = tok.token_to_id("<|endoftext|>")
    prompts = ["Q: 3+4=? <think>", "Q: 12+30=? <think>", "Q: 9+9=? <think>", "Q: 123+456+789=? <think>"]
    probe = prompts_probe(tok, prompts, [1, 2, 1, 5], eot)
    start = se.shared_prefix(probe)
    one, many = (se.prompt_density(model, probe, start, b, "cpu") for b in (1, 16))
    assert np.allclose(one, many, atol=1e-6) and all(0 < d < 1 for d in one)
    record: dict = {}
    ids = [eot, *tok.encode(prompts[3], add_special_tokens=False).ids]
    with torch.no_grad():
        model(torch.tensor([ids]), record=record)
    by_hand = float(torch.stack([(pre[0, start:] > 0).float().mean() for pre in record["mlp_pre"]]).mean())
    assert one[3] == pytest.approx(by_hand, abs=1e-6)


# ---- right − wrong --------------------------------------------------------------------------------


def test_right_minus_wrong_is_within_level_and_length():
    """Right answers on short prompts, wrong ones on long prompts, density set by length alone: the
    naive difference is large, within (level, length) strata it is 0. A within-stratum effect of
    +0.02 is found at its size; the information counts n_r n_w / (n_r + n_w) over strata."""
    lengths = {3: [12] * 20 + [15] * 40, 4: [13] * 30 + [16] * 30}
    correct = {3: [True] * 15 + [False] * 5 + [True] * 10 + [False] * 30,
               4: [True] * 10 + [False] * 20 + [False] * 30}
    dens = {k: [0.5 - 0.01 * n for n in lengths[k]] for k in lengths}
    flat = levels_of(dens, lengths, correct)
    right = np.concatenate([np.array(dens[k])[np.array(correct[k])] for k in lengths])
    wrong = np.concatenate([np.array(dens[k])[~np.array(correct[k])] for k in lengths])
    assert right.mean() - wrong.mean() > 0.01  # the length confound, naive
    assert sd.right_minus_wrong(flat) == pytest.approx(0.0, abs=1e-12)
    info = 15 * 5 / 20 + 10 * 30 / 40 + 10 * 20 / 30  # (4, 16) has no right answer: no stratum
    assert sd.right_wrong_information(flat) == pytest.approx(info)
    effect = {k: [d + (0.02 if c else 0.0) for d, c in zip(dens[k], correct[k])] for k in lengths}
    assert sd.right_minus_wrong(levels_of(effect, lengths, correct)) == pytest.approx(0.02)
    nothing_right = levels_of(dens, lengths, {k: [False] * 60 for k in lengths})
    assert math.isnan(sd.right_minus_wrong(nothing_right)) and sd.right_wrong_information(nothing_right) == 0


def test_right_and_wrong_gate_counts_both():
    lengths = {3: [15] * 40}
    at_chance = {1: levels_of({3: [0.3] * 40}, lengths, {3: [False] * 40})}
    gate = sd.right_and_wrong_gate(at_chance)
    assert not gate.passed and "seed 1: 0 right of 40" in gate.detail
    few_wrong = {1: levels_of({3: [0.3] * 40}, lengths, {3: [True] * 37 + [False] * 3})}  # information 2.8
    assert not sd.right_and_wrong_gate(few_wrong).passed
    enough = {1: levels_of({3: [0.3] * 40}, lengths, {3: [True] * 20 + [False] * 20})}  # information 10
    assert sd.right_and_wrong_gate(enough).passed
    assert sd.MIN_RIGHT_AND_WRONG == 16 and sd.RIGHT_WRONG_INFO == 8


def test_the_untrained_gate_fails_where_content_alone_gives_the_effect():
    seeds = [1, 2, 3, 4, 5]
    prediction = Prediction(1, sd.DENSITY_MARGIN)
    effect = {s: 0.03 + 0.002 * s for s in seeds}  # the predicted effect, well beyond the margin, with no learning
    gate = sd.untrained_gate("untrained-quiet: x", "x", effect, prediction, seeds)
    assert not gate.passed and "supported" in gate.detail
    quiet = {s: 0.001 * (-1) ** s for s in seeds}
    assert sd.untrained_gate("untrained-quiet: x", "x", quiet, prediction, seeds).passed
    unread = {s: math.nan for s in seeds}  # (no right answer: no right − wrong to read in the untrained network)
    gate = sd.untrained_gate("untrained-quiet: x", "x", unread, prediction, seeds)
    assert not gate.passed and "not tested" in gate.detail


# ---- the claim end to end ---------------------------------------------------------------------------


def scalars_of(thinks: float) -> dict:
    """A run's scalars as far as the claim reads them: it learned its text; level-2 thinking at `thinks`."""
    curve = lambda a, b: (np.array([0, 600]), np.array([a, b], dtype=float))  # noqa: E731
    out = {"val/bpb": curve(8.0, 1.0), "eval/arith_acc/level2": curve(0.0, thinks),
           "eval/arith_n/level2": curve(256.0, 256.0)}
    for k in (1, 2, 3):
        out[f"sparsity/level/{k}/mean"] = curve(0.5, 0.5)
    for k in (4, 5):
        out[f"sparsity/ood/level/{k}/mean"] = curve(0.5, 0.5)
    return out


def claim_on_untrained_gpts(tmp_path, monkeypatch, thinks: float):
    """The whole claim, evaluate_problems included, with each seed's checkpoint an untrained toy GPT."""
    seeds = [1, 2, 3, 4, 5]
    runs = {s: {world_runs.ARM: Run(RunSpec(world_runs.ARM, (), s, 600), tmp_path / f"seed{s}", trained=False)}
            for s in seeds}
    for by_arm in runs.values():  # (the cache's key reads the checkpoint file's size and time)
        checkpoint = by_arm[world_runs.ARM].checkpoint
        if not checkpoint.exists():
            checkpoint.parent.mkdir(parents=True)
            checkpoint.write_bytes(b"untrained")
    tokenizer = byte_tokenizer()

    def load(path, key):
        seed = int(Path(path).parents[1].name.removeprefix("seed"))
        return LoadedCheckpoint(path, world_gpt(100 + seed), {}, {"levels": [1, 2, 3]}, tokenizer)

    preset = world_runs.Preset(problems=16, batch_size=80)
    monkeypatch.setattr(sd, "train", lambda ctx, arms=(world_runs.ARM,): (runs, preset, 0.0))
    monkeypatch.setattr(se, "load_gpt", load)
    monkeypatch.setattr(se, "training_questions", lambda data: set())
    monkeypatch.setattr(world_runs, "scalars", lambda run: scalars_of(thinks))
    ctx = StudyContext(sd.NAME, tmp_path / "study", seeds, "test", None, device="cpu", log=lambda _: None)
    return ctx, sd.run(ctx)


def test_untrained_networks_support_nothing_and_a_model_at_chance_is_not_tested(tmp_path, monkeypatch):
    """Untrained GPTs (a model at chance: no right answer) through the whole claim. With the thinking
    gate passed by fiat, the level contrasts are read and none is supported: the input's content and
    length, with no learning, give no effect the rule takes. Right − wrong is not tested, with the
    reason; with the thinking gate failed, the primary is not tested either."""
    ctx, result = claim_on_untrained_gpts(tmp_path, monkeypatch, thinks=0.6)
    verdicts = result.verdicts()
    problems = {s: json.loads((ctx.folder / f"problems-seed{s}.json").read_text())["levels"] for s in ctx.seeds}
    assert all(sum(sum(lv["correct"]) for lv in p.values()) == 0 for p in problems.values())
    judged = {name: v.verdict for name, v in verdicts.items() if v is not None}
    assert SUPPORTED not in judged.values(), judged
    for contrast in result.contrasts[:3]:  # the three level contrasts: read by the rule, or held by the null's gate
        v = verdicts[contrast.name]
        assert v.verdict in (NEGLIGIBLE, INCONCLUSIVE, AGAINST) or "untrained-quiet" in v.reason, v
    rw = verdicts["right − wrong (same level, same length)"]
    assert rw.verdict == NOT_TESTED and "gate right-and-wrong" in rw.reason
    assert "0 right of" in result.gate_map["right-and-wrong"].detail

    # What each seed's cache holds, and that a second call reads it (the same runs, thinking failed).
    first = problems[1]
    assert [first[k]["trained"] for k in "12345"] == [True, True, True, False, False]
    for lv in first.values():
        n = len(lv["correct"])
        assert all(len(lv[m]) == n and len(lv["untrained"][m]) == n for m in se.MEASURES) and len(lv["length"]) == n
    assert sorted(set(first["5"]["length"])) == [14, 19, 20] and first["1"]["length"][0] == 11
    monkeypatch.setattr(se, "evaluate_problems", None)  # (a cache miss would call it)
    ctx, result = claim_on_untrained_gpts(tmp_path, monkeypatch, thinks=0.0)
    primary = result.claim_verdict()
    assert primary.verdict == NOT_TESTED and "thinks failed" in primary.reason


def test_the_untrained_twin_mixes_its_context_and_leaves_the_rng():
    model = world_gpt(0)
    model.config.zero_init_projections = True  # as the world-v2 runs start
    state = torch.get_rng_state()
    a, b = se.untrained_twin(model, 3, "cpu"), se.untrained_twin(model, 3, "cpu")
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert any(m.weight.abs().sum() > 0 for n, m in a.named_modules() if n.endswith("c_proj"))
    assert not any(torch.equal(x, y) for x, y in zip(a.state_dict().values(), model.state_dict().values())
                   if x.dim() == 2)


def test_contrasts_of_flat_problems_are_not_supported():
    """Per-seed problems with no level and no right/wrong effect (values drawn around one mean, the
    lengths of the world's levels): the three contrasts of each seed, read over five seeds, are not supported."""
    rng = random.Random(0)
    per_seed = {}
    for s in range(1, 6):
        lengths = {k: [LENGTHS[k][i % len(LENGTHS[k])] for i in range(60)] for k in LENGTHS}
        values = {k: [0.3 + rng.gauss(0, 0.004) for _ in range(60)] for k in LENGTHS}
        correct = {k: [i % 2 == 0 for i in range(60)] for k in LENGTHS}
        per_seed[s] = levels_of(values, lengths, correct)
    for fn in (lambda p: sd.trained_minus_held_out(p, "density"), sd.right_minus_wrong):
        c = Contrast("x", "", {s: fn(p) for s, p in per_seed.items()}, Prediction(1, sd.DENSITY_MARGIN))
        assert c.verdict({}, range(1, 6)).verdict == NEGLIGIBLE
