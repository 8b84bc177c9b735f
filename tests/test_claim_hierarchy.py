"""The hierarchy claim end to end on built cases, from the instrument's tags to the verdict: structure
planted in a deep block is supported, the same structure at every block is not, and untrained GPTs,
whose random attention does carry context beyond the embedding, order no tier beyond the margin."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lamina.instrument.hierarchy import hierarchy_scalars, measure_hierarchy, probe_hierarchy
from lamina.model import GPT, GPTConfig
from lamina.study import world_runs
from lamina.study.claim import StudyContext
from lamina.study.claims import hierarchy
from lamina.study.runs import Run, RunSpec
from lamina.verdict import AGAINST, INCONCLUSIVE, NEGLIGIBLE, NOT_TESTED, SUPPORTED, Prediction, decide

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = [1, 2, 3, 4, 5]
LABELS = {"entity": 5, "carry": 2, "answer": 4}  # one label of each higher tier


def built_tags(seed: int, blocks: int, where: str, n: int = 960, d: int = 24, vocab: int = 30) -> dict[str, float]:
    """The instrument's tags on built features: an embedding that holds the token (so that the
    lexical tier is read at every block) and, per higher-tier label, a context label drawn apart
    from the token and added as a class mean at the last block (`deep`), at every block (`every`)
    or nowhere (`none`: the blocks are the embedding, as a zero-init model's at step 0)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(vocab, (n,), generator=gen)
    embedding = torch.randn(vocab, d, generator=gen)[tokens]
    labels = {name: torch.randint(k, (n,), generator=gen) for name, k in LABELS.items()}
    labels["digit"] = tokens % 5
    planted = sum(1.5 * torch.randn(k, d, generator=gen)[labels[name]] for name, k in LABELS.items())
    residuals = []
    for b in range(blocks):
        if where == "none":
            residuals.append(embedding.clone())
            continue
        context = planted if where == "every" or b == blocks - 1 else 0.0
        residuals.append(embedding + 0.3 * torch.randn(n, d, generator=gen) + context)
    results = probe_hierarchy(residuals, labels, tokens, seed, embedding=embedding, groups=torch.arange(n) // 16,
                              seed=seed)
    return hierarchy_scalars(results)


def run_claim(tmp_path, monkeypatch, where: str):
    """The claim on runs whose step 0 is `none` and whose end is `where`, at both sizes."""
    runs, tables = {}, {}
    for s in SEEDS:
        runs[s] = {}
        for arm, blocks in ((world_runs.ARM, 4), (world_runs.SMALL_ARM, 3)):
            folder = tmp_path / arm / str(s)
            runs[s][arm] = Run(RunSpec(arm, (), s, 1), folder, trained=False)
            start, end = built_tags(100 + s, blocks, "none"), built_tags(s, blocks, where)
            table = {tag: (np.array([0, 10]), np.array([start[tag], v])) for tag, v in end.items() if tag in start}
            table.update({tag: (np.array([10]), np.array([v])) for tag, v in end.items() if tag not in start})
            table["val/bpb"] = (np.array([0, 10]), np.array([8.0, 1.0]))
            tables[str(folder)] = table
    monkeypatch.setattr(hierarchy, "train", lambda ctx, arms: (runs, world_runs.PRESETS["test"], 0.0))
    monkeypatch.setattr(world_runs, "scalars", lambda run: tables[str(run.folder)])
    return hierarchy.run(StudyContext("hierarchy", tmp_path / "study", SEEDS, "test", None, device="cpu"))


def test_structure_planted_in_the_last_block_is_supported_at_both_sizes(tmp_path, monkeypatch):
    result = run_claim(tmp_path, monkeypatch, "deep")
    assert all(g.passed for g in result.gates), [(g.name, g.detail) for g in result.gates]
    verdicts = result.verdicts()
    assert result.claim_verdict(verdicts).verdict == SUPPORTED
    assert verdicts[f"higher tiers − lexical ({world_runs.SMALL_ARM})"].verdict == SUPPORTED
    # the higher tiers at the last block (1, less the positive part of the other blocks' noise), the token
    # at every block (0.5)
    assert np.mean(list(result.arms[world_runs.ARM]["depth/higher"].values())) == pytest.approx(1.0, abs=0.05)
    assert np.mean(list(result.arms[world_runs.ARM]["depth/lexical"].values())) == pytest.approx(0.5, abs=0.02)


def test_the_same_structure_at_every_block_orders_no_tier(tmp_path, monkeypatch):
    # Read beyond the embedding (the gates hold), but no deeper than the token: not supported.
    result = run_claim(tmp_path, monkeypatch, "every")
    assert all(g.passed for g in result.gates), [(g.name, g.detail) for g in result.gates]
    verdict = result.claim_verdict()
    assert verdict.verdict in (NEGLIGIBLE, INCONCLUSIVE, AGAINST) and verdict.verdict != NOT_TESTED, verdict


def test_a_run_that_reads_nothing_beyond_step_0_is_not_tested(tmp_path, monkeypatch):
    result = run_claim(tmp_path, monkeypatch, "none")
    gates = result.gate_map
    gate = gates[f"tiers-read-{world_runs.ARM}"]
    assert not gate.passed and "conceptual 0.0" in gate.detail  # the end reads no more than step 0
    assert result.claim_verdict().verdict == NOT_TESTED


def test_untrained_gpts_read_context_beyond_the_embedding_but_order_no_tier():
    # No structure in: five untrained GPTs (GPT-2 init, no zero-init projections), whose uniform-ish
    # attention mixes the previous tokens into each position. The labels that need context (the
    # previous token, the one before) are read beyond the embedding (the confound is there); their
    # depth against the token's is not supported (the effect is not).
    contrasts = {}
    for seed in SEEDS:
        gen = torch.Generator().manual_seed(100 + seed)
        tokens = torch.randint(16, (48, 32), generator=gen)
        minus = lambda k: torch.cat([torch.full((48, k), -1), tokens[:, :-k]], dim=1)  # noqa: E731
        torch.manual_seed(seed)
        model = GPT(GPTConfig(vocab_size=16, block_size=32, n_layer=3, n_head=2, n_embd=32)).eval()
        results = measure_hierarchy(model, tokens, {"entity": minus(1), "task": minus(2), "digit": tokens % 5},
                                    batch_size=16, device="cpu", max_items=48 * 32, seed=seed)
        assert results["entity"].readable  # the previous token, through random attention
        contrasts[seed] = hierarchy_scalars(results)["layers/tier/contrast"]
    pred = Prediction(1, hierarchy.DEPTH_MARGIN, hierarchy.DEPTH_MARGIN_NOTE)
    verdict = decide(contrasts, sign=pred.sign, margin=pred.margin, planned=SEEDS)
    assert verdict.verdict in (NEGLIGIBLE, INCONCLUSIVE, AGAINST), verdict  # read by the rule, not supported
    assert verdict.hi < hierarchy.DEPTH_MARGIN
