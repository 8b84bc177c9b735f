"""Last-layer measures (Jin et al.'s beside lamina's Hoyer) and their arith-level probe."""

from __future__ import annotations

import math

import pytest
import torch

from lamina import measures
from lamina.data import world
from lamina.data.tokenizer import EOT, byte_tokenizer, train_bpe
from lamina.instrument.lastlayer import (
    STATS,
    answer_hidden_states,
    answer_positions_probe,
    lastlayer_stats,
    lastlayer_values,
    level_seed,
    position_before_answer,
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
def test_position_is_the_one_before_the_answer(kind, byte_tok, bpe_tok):
    tok = byte_tok if kind == "byte" else bpe_tok
    eot = tok.token_to_id(EOT)
    probe = answer_positions_probe(tok, 11, levels=world.ARITH_LEVELS, problems_per_level=12, eot_id=eot)
    assert len(probe) == 60 and probe.levels.tolist() == [k for k in world.ARITH_LEVELS for _ in range(12)]
    ends = set()
    for r, text in enumerate(probe.problems):
        full = tok.encode(text, add_special_tokens=False)
        p = int(probe.positions[r])
        row = probe.tokens[r].tolist()
        assert row[0] == eot and row[: p + 1] == [eot] + full.ids[:p]
        assert all(t == eot for t in row[p + 1 :])  # right padding only
        prefix = tok.decode(full.ids[:p], skip_special_tokens=False)
        nxt = tok.decode([full.ids[p]], skip_special_tokens=False)
        answer = text[text.rindex("A: ") + 3 :].rstrip("\n")
        start = len(text) - len(answer) - 1
        assert text.startswith(prefix) and len(prefix) <= start < len(prefix) + len(nxt)
        assert nxt.strip() and answer.startswith(nxt.strip())  # the next token opens the answer
        assert not any(c.isdigit() for c in text[len(prefix) : start])  # nothing of it before
        ends.add(prefix[-3:])
    if kind == "byte":
        assert ends == {"A: "}
    else:
        assert "\u0020A:" in ends  # BPE merges the space into the answer's first token (" 8")


def test_position_before_answer_from_offsets():
    text = "Q: 4+5=? <think> 4+5=9 </think> A: 9\n"
    start = text.index("A: ") + 3
    per_char = [(i, i + 1) for i in range(len(text))]
    assert position_before_answer(text, per_char) == start - 1
    merged = per_char[: start - 1] + [(start - 1, start + 1), (start + 1, start + 2)]  # " 9" one token
    assert position_before_answer(text, merged) == start - 2
    with pytest.raises(ValueError):
        position_before_answer("no answer here", per_char)


def test_probe_reproducible_and_held_out(byte_tok):
    a = answer_positions_probe(byte_tok, 5, levels=[1, 3], problems_per_level=16)
    b = answer_positions_probe(byte_tok, 5, levels=[1, 3], problems_per_level=16)
    c = answer_positions_probe(byte_tok, 6, levels=[1, 3], problems_per_level=16)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.positions, b.positions) and a.problems == b.problems
    assert a.problems != c.problems
    assert level_seed(5, 1) != level_seed(5, 3) and level_seed(5, 1) > 2**32
    # Not the stream a run with data.seed = 5 trains on, nor its arith-only draw.
    train = world.generate(5, ["arith"], levels=[3])
    assert a.problems[16:] != tuple(next(train).text for _ in range(16))


def test_long_problems_are_cut_from_the_left(byte_tok):
    full = answer_positions_probe(byte_tok, 2, levels=[5], problems_per_level=8)
    cut = answer_positions_probe(byte_tok, 2, levels=[5], problems_per_level=8, block_size=24)
    assert cut.tokens.shape[1] == 24 and (cut.positions == 23).all()
    for r in range(8):
        p = int(full.positions[r])
        assert torch.equal(cut.tokens[r], full.tokens[r, p - 23 : p + 1])


def test_bad_probe_arguments(byte_tok):
    for kwargs in (dict(problems_per_level=1), dict(levels=[]), dict(levels=[1, 1]), dict(block_size=0)):
        with pytest.raises(ValueError):
            answer_positions_probe(byte_tok, 0, **{"problems_per_level": 4, **kwargs})


# ---- the model side --------------------------------------------------------------------------------


def test_right_padding_does_not_change_h(byte_tok):
    model = tiny_gpt()
    probe = answer_positions_probe(byte_tok, 3, levels=[1, 5], problems_per_level=6)
    one_by_one = answer_hidden_states(model, probe, batch_size=1, device="cpu")  # no padding
    batched = answer_hidden_states(model, probe, batch_size=len(probe), device="cpu")  # padded to the longest
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
    probe = answer_positions_probe(byte_tok, 4, levels=world.ARITH_LEVELS, problems_per_level=8)
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    stats = lastlayer_stats(model, probe, batch_size=16, device="cpu")
    assert torch.equal(torch.get_rng_state(), rng_before) and not model.training
    expected = set()
    for k in world.ARITH_LEVELS:
        for s in STATS:
            expected |= {f"lastlayer/level{k}/{s}", f"lastlayer/level{k}/{s}/se"}
            if k >= 2:
                expected |= {f"lastlayer/gap/level{k}/{s}", f"lastlayer/gap/level{k}/{s}/se",
                             f"lastlayer/gap/level{k}/{s}/z"}
    assert set(stats) == expected
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
    probe = answer_positions_probe(byte_tok, 0, levels=[5], problems_per_level=2)
    with pytest.raises(ValueError, match="block_size"):
        answer_hidden_states(tiny_gpt(block_size=16), probe, 2, "cpu")


def test_same_level_twice_is_no_finding(byte_tok):
    """No structure in, no finding out: two independent level-1 samples through an untrained
    GPT differ by less than 3 standard errors on every stat, over several seeds."""
    zs = []
    for seed in range(3):
        model = tiny_gpt(seed)
        a = answer_positions_probe(byte_tok, 100 + seed, levels=[1], problems_per_level=64)
        b = answer_positions_probe(byte_tok, 200 + seed, levels=[1], problems_per_level=64)
        va = lastlayer_values(answer_hidden_states(model, a, 64, "cpu"))
        vb = lastlayer_values(answer_hidden_states(model, b, 64, "cpu"))
        for s in STATS:
            gap, se, z = welch_gap(va[s], vb[s])
            assert se > 0
            zs.append(z)
    assert max(abs(z) for z in zs) < 3, zs


def test_welch_gap_sees_a_real_shift_and_handles_ties():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, generator=g), torch.randn(64, generator=g) + 1.0
    gap, se, z = welch_gap(a, b)
    assert z < -4 and math.isclose(se, math.hypot(a.std() / 8, b.std() / 8), rel_tol=1e-6)
    assert welch_gap(torch.ones(4), torch.ones(4)) == (0.0, 0.0, 0.0)
    assert welch_gap(torch.ones(4), torch.zeros(4))[2] == math.inf
    with pytest.raises(ValueError):
        welch_gap(torch.ones(1), torch.ones(4))
