"""The density-familiarity claim's name-swapped measurement: the paired windows differ by the names
alone and their masks are the names and the facts' values; the density at masked tokens on a model
built so that the answer is known; an untrained network on five data seeds' draws supports
nothing; and the claim read end to end on built numbers (an effect supported, a biased null pair
not tested). Fast: no fit."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lamina.data import world
from lamina.data.tokenizer import byte_tokenizer
from lamina.model import GPT, GPTConfig
from lamina.probes import NameSwappedWindows, name_swapped_windows
from lamina.study import world_runs
from lamina.study.claim import StudyContext
from lamina.study.claims import density_familiarity as claim
from lamina.study.runs import Run, RunSpec
from lamina.verdict import NOT_TESTED, SUPPORTED, decide

pytestmark = pytest.mark.usefixtures("one_thread")

TOK = byte_tokenizer()
EOT = TOK.token_to_id("<|endoftext|>")


def decode(ids) -> str:
    return TOK.decode(list(ids), skip_special_tokens=False)


def test_swapped_windows_differ_by_the_names_alone():
    by_bin, novel = world.people_by_bin(seed=3), world.novel_people(seed=3)
    pair = name_swapped_windows(TOK, 11, by_bin[100], novel[:8], EOT, 128, 24)
    assert pair.seen.shape == pair.swapped.shape == (24, 128)
    assert dict(pair.partners) == {p.name: q.name for p, q in zip(by_bin[100], novel)}
    back = {q: p for p, q in pair.partners}
    names = re.compile(r"\b(?:" + "|".join(back) + r")\b")
    for w in range(24):
        seen, swapped = decode(pair.seen[w]), decode(pair.swapped[w])
        assert seen.startswith("<|endoftext|>") and swapped.startswith("<|endoftext|>")
        unpadded = lambda text: re.sub(r"(?:<\|endoftext\|>)+$", "", text)  # noqa: E731
        assert unpadded(names.sub(lambda m: back[m[0]], swapped)) == unpadded(seen)
        assert not names.search(seen) and set(re.findall(r"\b[A-Z][a-z]+\b", seen)) & set(dict(pair.partners))
        for side, ids in (("seen", pair.seen[w]), ("swapped", pair.swapped[w])):
            masks = pair.masks[side]
            assert not bool((masks["name"][w] & masks["attribute"][w]).any())
            # The name tokens spell the names in order; the value tokens the facts' values.
            spelled = decode(ids[masks["name"][w]])
            people = dict(pair.partners) if side == "seen" else back
            assert re.fullmatch("(?:" + "|".join(people) + ")+", spelled), spelled
            values = decode(ids[masks["attribute"][w]])
            text = decode(ids)
            found = world._WORD_RE.findall(text)
            assert values == "".join(v for v in found if world._VOCABULARY[v] in ("attribute", "town"))


class TokenFires(torch.nn.Module):
    """A 'model' whose MLP units fire by token: every unit of both layers at a token id >= 100, a
    quarter of them (layer 0) and none (layer 1) below. Densities: 1 at tokens >= 100, 1/8 below."""

    def forward(self, idx, record=None):
        high = (idx >= 100)[..., None].float()
        quarter = (torch.arange(8) < 2).float()
        record["mlp_pre"] = [torch.where(high.bool(), 1.0, quarter * 2 - 1).expand(*idx.shape, 8) + 0.0,
                             (high * 2 - 1).expand(*idx.shape, 8)]
        return None


def test_masked_density_reads_only_the_masked_tokens():
    seen = torch.tensor([[5, 120, 121, 6, 7], [130, 8, 9, 10, 11]])
    swapped = torch.tensor([[5, 40, 41, 6, 7], [50, 8, 9, 10, 11]])
    name = torch.tensor([[0, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    value = torch.tensor([[0, 0, 0, 1, 0], [0, 0, 1, 1, 0]], dtype=torch.bool)
    masks = {"name": name, "attribute": value}
    pair = NameSwappedWindows(seen, swapped, {"seen": masks, "swapped": masks}, (("A", "B"),))
    dens = claim.masked_density(TokenFires(), seen, masks, batch_size=1, device="cpu")
    assert dens["name"].tolist() == [1.0, 1.0] and dens["attribute"].tolist() == [0.125, 0.125]
    diff = claim.swap_difference(TokenFires(), pair, batch_size=2, device="cpu")
    assert diff["name"] == (pytest.approx(0.875), pytest.approx(0.0))  # every pair the same: se 0
    assert diff["attribute"] == (0.0, 0.0)
    # names and values pooled: window 0 holds 2 name and 1 value tokens, window 1 one and two
    assert diff["both"][0] == pytest.approx((2 / 3 * 0.875 + 1 / 3 * 0.875) / 2)


def test_an_untrained_network_on_five_draws_supports_nothing():
    # The names' letters alone move an untrained network's density a little, seed by seed; the
    # roster is dealt per seed, so over seeds they do not add up to an effect.
    values: dict[str, dict[int, float]] = {"100": {}, "0": {}}
    z: list[float] = []
    for seed in range(1, 6):
        torch.manual_seed(seed)
        model = GPT(GPTConfig(vocab_size=TOK.get_vocab_size(), block_size=128, n_layer=2, n_head=2, n_embd=32,
                              activation="relu2")).eval()
        pairs = claim.name_swap_pairs(TOK, EOT, 128, seed, None, n_windows=16)
        assert set(pairs) == {"100", "0"}
        for b, pair in pairs.items():
            values[b][seed], se = claim.swap_difference(model, pair, 16, "cpu")["both"]
            z.append(values[b][seed] / se)
    # Within a run the windows share 8 names, so their standard error misses the names' own spread:
    # read alone it would call some seed's untrained network an effect. The interval over seeds does not.
    assert max(map(abs, z)) > 3
    for b in ("100", "0"):
        verdict = decide(values[b], sign=1, margin=claim.DENSITY_MARGIN)
        assert verdict.verdict != SUPPORTED, (b, verdict)
    assert claim.null_pair_gate(values["0"]).passed


def world_tables(tmp_path, swap_100, swap_0, monkeypatch):
    """The claim on runs whose scalars are flat but for the name-swapped numbers given per seed."""
    rng = np.random.default_rng(0)
    runs, series = {}, {}
    for s in swap_100:
        folder = tmp_path / f"seed{s}"
        runs[s] = {world_runs.ARM: Run(RunSpec(world_runs.ARM, (), s, 600), folder, trained=False)}
        curve = lambda a, b: (np.array([0, 600]), np.array([a, b], dtype=float))  # noqa: E731
        tags = {"val/bpb": curve(8.0, 1.0), "sparsity/gap/id_b/z": curve(0.1, 0.5)}
        for probe in ("id_b", "random", "shuffled", "novel", "exposure/100", "exposure/0"):
            tags[f"sparsity/gap/{probe}"] = curve(0.0, rng.normal(0, 0.002))
        for b, value in (("100", swap_100[s]), ("0", swap_0[s])):
            for kind in claim.KINDS:
                tags[f"density/name_swap/{b}/{kind}"] = curve(0.0, value)
                tags[f"density/name_swap/{b}/{kind}/se"] = curve(0.0, 0.002)
        series[str(folder)] = tags
    monkeypatch.setattr(world_runs, "scalars", lambda run: series[str(run.folder)])
    monkeypatch.setattr(claim, "train", lambda ctx, arms=(world_runs.ARM,): (runs, world_runs.PRESETS["test"], 0.0))
    return claim.run(StudyContext(claim.NAME, tmp_path / "study", list(swap_100), "test", None, device="cpu"))


def test_the_claim_reads_the_name_swapped_contrast_and_its_null_pair(tmp_path, monkeypatch):
    seeds = [1, 2, 3, 4, 5]
    effect = {s: 0.03 + 0.002 * (s - 3) for s in seeds}
    quiet = {s: 0.002 * (s - 3) + 0.0005 for s in seeds}
    result = world_tables(tmp_path / "a", effect, quiet, monkeypatch)
    assert result.primary == claim.PRIMARY
    assert all(g.passed for g in result.gates)
    assert result.claim_verdict().verdict == SUPPORTED
    # A null pair that shows the same effect (both never seen: the construction, not exposure) stops it.
    result = world_tables(tmp_path / "b", effect, effect, monkeypatch)
    assert not {g.name: g.passed for g in result.gates}["null-pair-quiet"]
    assert result.claim_verdict().verdict == NOT_TESTED


def test_a_run_without_a_checkpoint_or_people_has_no_name_swap(tmp_path):
    run = Run(RunSpec(world_runs.ARM, (), 1, 4), tmp_path / "none", trained=False)
    assert claim.evaluate_name_swap(run, "cpu") == {}
