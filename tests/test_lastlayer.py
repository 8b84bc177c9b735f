"""Last-layer measures (Jin et al.'s beside lamina's Hoyer) and their arith-level probe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lamina import measures
from lamina.data import world
from lamina.data.tokenizer import EOT, byte_tokenizer, train_bpe
from lamina.instrument.lastlayer import (
    STATS,
    lastlayer_stats,
    lastlayer_values,
    level_seed,
    matched_gap,
    prompt_hidden_states,
    prompt_of,
    prompt_positions_probe,
    prompts_probe,
    welch_gap,
)
from lamina.kernels import top_count
from lamina.model import GPT, GPTConfig

FRACS = (0.01, 0.05, 0.10)


def one_hot(m: int, d: int) -> torch.Tensor:
    """m vectors, each with one nonzero entry (of varied sign and size) at varied places."""
    h = torch.zeros(m, d)
    h[torch.arange(m), torch.arange(m) % d] = torch.tensor([(-1.0) ** i * (i + 0.5) for i in range(m)])
    return h


@pytest.fixture(scope="module")
def byte_tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def bpe_tok():
    return train_bpe([world.sample_text(0, 60_000)], vocab_size=400)  # offline, about a second


def tiny_gpt(seed: int = 0, vocab_size: int = 259, block_size: int = 256) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32)).eval()


# ---- measures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 10, 30, 100, 128, 257])
def test_energy_share_known_answers(d):
    for frac in FRACS:
        k = math.ceil(round(frac * 1000) * d / 1000)  # exact: frac has three decimals
        share = measures.energy_share(one_hot(5, d), frac)
        assert share.dtype == torch.float64 and share.shape == (5,)
        assert torch.equal(share, torch.ones(5, dtype=torch.float64))
        const = measures.energy_share(torch.full((3, d), -0.7), frac)
        assert torch.allclose(const, torch.full((3,), k / d, dtype=torch.float64), rtol=0, atol=1e-12)


def test_top_fraction_count_is_integer_exact():
    assert math.ceil(0.07 * 100) == 8  # the floating-point trap
    assert measures.top_fraction_count(100, 0.07) == 7
    assert measures.top_fraction_count(30, 0.1) == 3 and measures.top_fraction_count(31, 0.1) == 4
    assert all(measures.top_fraction_count(d, 0.1) == top_count(d) for d in range(1, 2000))
    assert measures.top_fraction_count(128, 0.01) == 2 and measures.top_fraction_count(128, 0.05) == 7
    # Jin et al.'s code: max(1, int(d * frac)).
    for d in (2, 30, 128, 768, 3584):
        for frac in FRACS:
            assert measures.top_fraction_count(d, frac, rounding="floor") == max(1, int(d * frac))
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            measures.top_fraction_count(10, bad)
    with pytest.raises(ValueError):
        measures.top_fraction_count(10, 0.1, rounding="round")


@pytest.mark.parametrize("d", [2, 7, 128])
def test_entropy_rank_and_hoyer_known_answers(d):
    const = torch.full((4, d), 2.5)
    const[1] *= -1
    ones = one_hot(4, d)
    assert torch.allclose(measures.entropy_rank(const), torch.ones(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(measures.entropy_rank(ones), torch.full((4,), 1 / d, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(measures.hoyer(const), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(measures.hoyer(ones), torch.ones(4, dtype=torch.float64), atol=1e-12)


def test_entropy_rank_matches_its_definition():
    h = torch.randn(50, 64, generator=torch.Generator().manual_seed(1)).double()
    p = h**2 / (h**2).sum(dim=1, keepdim=True)
    expected = torch.exp(-(p * p.log()).sum(dim=1)) / 64
    assert torch.allclose(measures.entropy_rank(h), expected, rtol=1e-12, atol=0)
    # two equal entries and the rest zero: exp(log 2) / d
    two = torch.zeros(1, 64)
    two[0, [3, 9]] = torch.tensor([1.0, -1.0])
    assert math.isclose(float(measures.entropy_rank(two)), 2 / 64, rel_tol=1e-12)


def test_hoyer_agrees_with_sparsity_stats():
    acts = torch.randn(40, 48, generator=torch.Generator().manual_seed(2)).relu()
    acts[5] = 0.0
    ref = measures.sparsity_stats(acts, 0.0, impl="reference")["hoyer"]
    assert math.isclose(float(measures.hoyer(acts).mean()), ref, rel_tol=1e-5)


def test_zero_vectors_no_nan_and_conventions():
    h = torch.zeros(3, 16)
    h[1] = torch.randn(16)
    h[2] = 1e-200  # squares underflow even in float64: counts as zero too
    h = h.double()
    for frac in FRACS:
        share = measures.energy_share(h, frac)
        assert not share.isnan().any() and share[0] == 1 and share[2] == 1
    rank, hy = measures.entropy_rank(h), measures.hoyer(h)
    assert not rank.isnan().any() and rank[0] == 1 / 16 and rank[2] == 1 / 16
    assert not hy.isnan().any() and hy[0] == 1 and hy[2] == 1
    for value in (measures.energy_share(h, 0.1)[1], rank[1], hy[1]):
        assert 0 < value < 1


def test_measures_shapes_invariances_and_bad_input():
    h = torch.randn(2, 3, 20, generator=torch.Generator().manual_seed(3)).double()
    for f in (lambda x: measures.energy_share(x, 0.05), measures.entropy_rank, measures.hoyer):
        v = f(h)
        assert v.shape == (2, 3) and v.dtype == torch.float64
        assert torch.allclose(f(-7.0 * h), v, rtol=1e-12)  # scale and sign invariant
        assert torch.allclose(f(h.flip(-1)), v, rtol=1e-12)  # order invariant
        assert f(h[0, 0]).shape == ()
        with pytest.raises(ValueError):
            f(torch.ones(4, 1))


# ---- the probe -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_position_is_the_last_prompt_token(kind, byte_tok, bpe_tok):
    """Jin et al. read h at the prompt's last token: the row is `<|endoftext|>` + the prompt encoded
    alone (as a decoder is given it), nothing of the thought or the answer, nothing of the question cut."""
    tok = byte_tok if kind == "byte" else bpe_tok
    eot = tok.token_to_id(EOT)
    probe = prompt_positions_probe(tok, 11, levels=world.ARITH_LEVELS, problems_per_level=12, eot_id=eot)
    assert len(probe) == 60 and probe.skipped == 0
    assert probe.levels.tolist() == [k for k in world.ARITH_LEVELS for _ in range(12)]
    for r, text in enumerate(probe.problems):
        prompt = prompt_of(text)
        question = text.split(" <think>", 1)[0]
        assert prompt == question + " <think>" and text.startswith(prompt) and "</think>" not in prompt
        p = int(probe.positions[r])
        row = probe.tokens[r].tolist()
        assert row[: p + 1] == [eot] + tok.encode(prompt, add_special_tokens=False).ids
        assert all(t == eot for t in row[p + 1 :])  # right padding only
        assert tok.decode(row[1 : p + 1], skip_special_tokens=False) == prompt
        assert int(probe.lengths[r]) == p + 1
    strip = prompt_positions_probe(tok, 11, levels=[2], problems_per_level=4, eot_id=eot, thoughts="strip")
    for r, text in enumerate(strip.problems):
        assert tok.decode(strip.tokens[r, 1 : int(strip.positions[r]) + 1].tolist(),
                          skip_special_tokens=False) == text.split(" <think>", 1)[0] + " A:"


def test_prompt_lengths_grow_with_the_level(byte_tok):
    """The confound the matched gaps are for: with byte tokens level 1's prompts are 11 tokens, level
    5's 14-20, and within levels 3-5 the tasks differ in length (what the slope is read from)."""
    probe = prompt_positions_probe(byte_tok, 3, problems_per_level=64)
    lengths = {k: sorted(set(probe.lengths[probe.levels == k].tolist())) for k in world.ARITH_LEVELS}
    assert lengths[1] == [11] and min(lengths[5]) >= 14 and max(lengths[5]) == 20
    assert all(len(lengths[k]) > 1 for k in (3, 4, 5))


def test_probe_reproducible_and_held_out(byte_tok):
    a = prompt_positions_probe(byte_tok, 5, levels=[1, 3], problems_per_level=16)
    b = prompt_positions_probe(byte_tok, 5, levels=[1, 3], problems_per_level=16)
    c = prompt_positions_probe(byte_tok, 6, levels=[1, 3], problems_per_level=16)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.positions, b.positions) and a.problems == b.problems
    assert a.problems != c.problems
    assert level_seed(5, 1) != level_seed(5, 3) and level_seed(5, 1) > 2**32
    # Not the stream a run with data.seed = 5 trains on, nor its arith-only draw.
    train = world.generate(5, ["arith"], levels=[3])
    assert a.problems[16:] != tuple(next(train).text for _ in range(16))


def test_too_long_prompts_are_skipped_and_counted_never_cut(byte_tok):
    full = prompt_positions_probe(byte_tok, 2, levels=[1, 5], problems_per_level=8)
    block = 15
    cut = prompt_positions_probe(byte_tok, 2, levels=[1, 5], problems_per_level=8, block_size=block)
    too_long = int((full.lengths > block).sum())
    assert 0 < too_long < 8 and cut.skipped == too_long and len(cut) == 16 - too_long
    kept = [r for r in range(16) if int(full.lengths[r]) <= block]
    assert cut.problems == tuple(full.problems[r] for r in kept)
    for i, r in enumerate(kept):
        p = int(full.positions[r])
        assert int(cut.positions[i]) == p and torch.equal(cut.tokens[i, : p + 1], full.tokens[r, : p + 1])
    stats = lastlayer_stats(tiny_gpt(block_size=block), cut, 8, "cpu")
    assert stats["lastlayer/skipped"] == too_long


def test_bad_probe_arguments(byte_tok):
    for kwargs in (dict(problems_per_level=1), dict(levels=[]), dict(levels=[1, 1]), dict(block_size=0),
                   dict(thoughts="drop")):
        with pytest.raises(ValueError):
            prompt_positions_probe(byte_tok, 0, **{"problems_per_level": 4, **kwargs})
    with pytest.raises(ValueError, match="not an arith example"):
        prompt_of("reverse: abc -> cba\n")
    with pytest.raises(ValueError, match="a level for each prompt"):
        prompts_probe(byte_tok, ["Q: 1+2=? <think>"], [1, 2], 0)


# ---- the model side --------------------------------------------------------------------------------


def test_right_padding_does_not_change_h(byte_tok):
    model = tiny_gpt()
    probe = prompt_positions_probe(byte_tok, 3, levels=[1, 5], problems_per_level=6)
    one_by_one = prompt_hidden_states(model, probe, batch_size=1, device="cpu")  # no padding
    batched = prompt_hidden_states(model, probe, batch_size=len(probe), device="cpu")  # padded to the longest
    assert one_by_one.shape == (12, 32)
    assert torch.allclose(one_by_one, batched, atol=1e-5, rtol=1e-5)
    # Garbage after the position, and the record route by hand.
    r = 0
    p = int(probe.positions[r])
    row = probe.tokens[r : r + 1, : p + 1]
    padded = torch.cat([row, torch.randint(0, 256, (1, 40))], dim=1)
    with torch.no_grad():
        rec: dict = {}
        model.forward(padded, record=rec)
        h = model.transformer.ln_f(rec["resid"][-1])[0, p]
    assert torch.allclose(h, one_by_one[r], atol=1e-5, rtol=1e-5)


def test_stats_keys_and_contrast(byte_tok):
    model = tiny_gpt()
    probe = prompt_positions_probe(byte_tok, 4, levels=world.ARITH_LEVELS, problems_per_level=8)
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    stats = lastlayer_stats(model, probe, batch_size=16, device="cpu")
    assert torch.equal(torch.get_rng_state(), rng_before) and not model.training
    expected = {"lastlayer/skipped"} | {f"lastlayer/level{k}/length" for k in world.ARITH_LEVELS}
    for k in world.ARITH_LEVELS:
        for s in STATS:
            expected |= {f"lastlayer/level{k}/{s}", f"lastlayer/level{k}/{s}/se"}
            if k >= 2:
                expected |= {f"lastlayer/{gap}/level{k}/{s}{end}" for gap in ("gap", "matched_gap")
                             for end in ("", "/se", "/z")}
    assert set(stats) == expected and stats["lastlayer/skipped"] == 0
    values = lastlayer_values(prompt_hidden_states(model, probe, 16, "cpu"))
    for k in world.ARITH_LEVELS:
        assert stats[f"lastlayer/level{k}/length"] == float(probe.lengths[probe.levels == k].double().mean())
        if k >= 2:
            gap, se, z = matched_gap(values["hoyer"], probe.levels, probe.lengths, [1], [k])
            assert stats[f"lastlayer/matched_gap/level{k}/hoyer"] == pytest.approx(gap, abs=1e-9)
            assert stats[f"lastlayer/matched_gap/level{k}/hoyer/z"] == pytest.approx(z, rel=1e-6)
    assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values())
    for k in (2, 5):
        for s in STATS:
            gap = stats[f"lastlayer/level1/{s}"] - stats[f"lastlayer/level{k}/{s}"]
            se = math.hypot(stats[f"lastlayer/level1/{s}/se"], stats[f"lastlayer/level{k}/{s}/se"])
            assert math.isclose(stats[f"lastlayer/gap/level{k}/{s}"], gap, abs_tol=1e-12)
            assert math.isclose(stats[f"lastlayer/gap/level{k}/{s}/se"], se, rel_tol=1e-9)
            assert math.isclose(stats[f"lastlayer/gap/level{k}/{s}/z"], gap / se, rel_tol=1e-9)
    for k in world.ARITH_LEVELS:
        assert 0 < stats[f"lastlayer/level{k}/top1_energy"] < stats[f"lastlayer/level{k}/top10_energy"] <= 1
    model.train()  # train mode stays train mode (dropout 0: the same numbers)
    assert lastlayer_stats(model, probe, batch_size=16, device="cpu") == stats and model.training


def test_too_long_for_the_model(byte_tok):
    probe = prompt_positions_probe(byte_tok, 0, levels=[5], problems_per_level=2)
    with pytest.raises(ValueError, match="block_size"):
        prompt_hidden_states(tiny_gpt(block_size=16), probe, 2, "cpu")


def test_same_level_twice_is_no_finding(byte_tok):
    """No structure in, no finding out: two independent level-1 samples through an untrained
    GPT differ by less than 3 standard errors on every stat, over several seeds."""
    zs = []
    for seed in range(3):
        model = tiny_gpt(seed)
        a = prompt_positions_probe(byte_tok, 100 + seed, levels=[1], problems_per_level=64)
        b = prompt_positions_probe(byte_tok, 200 + seed, levels=[1], problems_per_level=64)
        va = lastlayer_values(prompt_hidden_states(model, a, 64, "cpu"))
        vb = lastlayer_values(prompt_hidden_states(model, b, 64, "cpu"))
        for s in STATS:
            gap, se, z = welch_gap(va[s], vb[s])
            assert se > 0
            zs.append(z)
    assert max(abs(z) for z in zs) < 3, zs


def test_matched_gap_two_samples_of_the_same_levels_is_no_finding(byte_tok):
    """The matched gap's null on real network output: levels 3 and 5 drawn twice, the second draw
    labelled as two more levels (13 and 15); the same distribution at the same lengths under two
    labels differs by less than 3 of its standard errors, in untrained GPTs of several seeds."""
    zs = []
    for seed in range(3):
        model = tiny_gpt(seed)
        a = prompt_positions_probe(byte_tok, 300 + seed, levels=[3, 5], problems_per_level=64)
        b = prompt_positions_probe(byte_tok, 400 + seed, levels=[3, 5], problems_per_level=64)
        va = lastlayer_values(prompt_hidden_states(model, a, 64, "cpu"))
        vb = lastlayer_values(prompt_hidden_states(model, b, 64, "cpu"))
        levels = torch.cat([a.levels, b.levels + 10])
        lengths = torch.cat([a.lengths, b.lengths])
        for s in STATS:
            values = torch.cat([va[s], vb[s]])
            for first, second in (([3], [13]), ([5], [15]), ([3, 5], [13, 15])):
                gap, se, z = matched_gap(values, levels, lengths, first, second)
                assert se > 0
                zs.append(z)
    assert max(abs(z) for z in zs) < 3, zs


def built_levels(rng: np.random.Generator, shift: float, slope: float = -0.01, noise: float = 0.002):
    """Per-problem values with the prompt lengths of the world's levels (11 at level 1, 13 at 2, then
    three task lengths a level), value = 0.4 + slope * length + shift at levels 4-5 + noise whose
    spread differs by level."""
    lengths = {1: [11], 2: [13], 3: [12, 13, 15], 4: [13, 16, 17], 5: [14, 19, 20]}
    values, levels, lens = [], [], []
    for k, options in lengths.items():
        n = rng.choice(options, size=64)
        values += list(0.4 + slope * n + (shift if k >= 4 else 0.0) + rng.normal(0, noise * k, size=64))
        levels += [k] * 64
        lens += list(n)
    return np.array(values), np.array(levels), np.array(lens)


def test_matched_gap_takes_length_out_and_keeps_the_level():
    rng = np.random.default_rng(0)
    # Length alone: the raw gap of level 1 against 5 is large; at matched length it is 0 within its se.
    values, levels, lengths = built_levels(rng, shift=0.0)
    raw = values[levels == 1].mean() - values[levels == 5].mean()
    assert raw > 0.05
    for first, second in (([1], [5]), ([1, 2, 3], [4, 5])):
        gap, se, z = matched_gap(values, levels, lengths, first, second)
        assert abs(z) < 3 and 0 < se < 0.005  # (far below the raw gap)
    # A level effect of -0.02 at levels 4-5 on top of the same lengths: found, at its size.
    values, levels, lengths = built_levels(rng, shift=-0.02)
    gap, se, z = matched_gap(values, levels, lengths, [1, 2, 3], [4, 5])
    assert gap == pytest.approx(0.02, abs=3 * se) and z > 5
    # The same lengths without noise: exact.
    values, levels, lengths = built_levels(rng, shift=-0.02, noise=0.0)
    assert matched_gap(values, levels, lengths, [1], [5])[0] == pytest.approx(0.02, abs=1e-9)


def test_matched_gap_standard_error_holds_its_coverage():
    """Under no level effect the robust z exceeds 1.96 about 5% of the time (levels of unequal spread)."""
    rng = np.random.default_rng(1)
    zs = np.array([matched_gap(*built_levels(rng, shift=0.0, noise=0.01), [1, 2, 3], [4, 5])[2] for _ in range(1000)])
    assert 0.03 < np.mean(np.abs(zs) > 1.96) < 0.075 and 0.9 < zs.std() < 1.1  # (binomial sd 0.007)


def test_a_network_blind_to_its_context_gives_no_gap(byte_tok):
    """At a world-v2 run's step 0 the blocks' projections are zero: h at the last prompt token (always
    `<think>`) is the same for every problem. Every gap, matched or not, is 0 exactly (not round-off
    over round-off)."""
    torch.manual_seed(0)
    blind = GPT(GPTConfig(vocab_size=259, block_size=64, n_layer=2, n_head=2, n_embd=32, rotary=True,
                          zero_init_projections=True)).eval()
    stats = lastlayer_stats(blind, prompt_positions_probe(byte_tok, 1, problems_per_level=16), 16, "cpu")
    gaps = {tag: v for tag, v in stats.items() if "gap/" in tag}
    assert len(gaps) == 2 * 4 * len(STATS) * 3 and set(gaps.values()) == {0.0}


def test_matched_gap_cannot_match_without_lengths_to_learn_from():
    values = np.arange(12, dtype=float)
    levels = np.repeat([1, 2, 3], 4)
    same_within = np.repeat([10, 12, 14], 4)  # each level one length: length and level cannot be told apart
    assert all(math.isnan(x) for x in matched_gap(values, levels, same_within, [1], [3]))
    assert all(math.isnan(x) for x in matched_gap(values[:3], [1, 2, 2], [10, 11, 12], [1], [2]))  # n <= p
    with pytest.raises(ValueError, match="levels"):
        matched_gap(values, levels, same_within, [1], [4])
    with pytest.raises(ValueError, match="differ in size"):
        matched_gap(values, levels[:-1], same_within, [1], [3])


def test_welch_gap_sees_a_real_shift_and_handles_ties():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, generator=g), torch.randn(64, generator=g) + 1.0
    gap, se, z = welch_gap(a, b)
    assert z < -4 and math.isclose(se, math.hypot(a.std() / 8, b.std() / 8), rel_tol=1e-6)
    assert welch_gap(torch.ones(4), torch.ones(4)) == (0.0, 0.0, 0.0)
    assert welch_gap(torch.ones(4), torch.zeros(4))[2] == math.inf
    with pytest.raises(ValueError):
        welch_gap(torch.ones(1), torch.ones(4))
