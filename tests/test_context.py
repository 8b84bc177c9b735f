"""Context against memory: forced-choice and greedy shares, the steering vector and its nulls,
on GPTs built by hand so that the answer is known by construction."""

from __future__ import annotations

import math

import pytest
import torch

from lamina.instrument.context import (
    ALL,
    CounterfactualProbe,
    Steer,
    context_figure,
    context_scalars,
    context_vs_prior,
    counterfactual_probe,
    score_answers,
    steering_vector,
    wilson,
)
from lamina.instrument.pictures import figure_to_array
from lamina.model import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")

A, B, P, Q = 1, 2, 3, 4  # the context's answer, the prior's; prompt ends that favour A, B
FILLER = range(5, 12)
D = 8


def built_gpt(q_favours_a: bool = False) -> GPT:
    """A GPT whose blocks add nothing (zeroed output projections) and whose position embeddings
    are small noise orthogonal to u = e0 - e1: the residual at a position is its token's
    embedding plus that noise, and the answer A vs B is read off u alone (tied readout: wte[A] =
    +20u, wte[B] = -20u). A prompt ending in P (+u) prefers A; one ending in Q (-u) prefers B,
    or A too with `q_favours_a`."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=32, n_layer=3, n_head=2, n_embd=D))
    gen = torch.Generator().manual_seed(1)
    u = torch.zeros(D)
    u[0], u[1] = 1.0, -1.0
    with torch.no_grad():
        for block in model.transformer.h:
            block.attn.c_proj.weight.zero_()
            block.mlp.c_proj.weight.zero_()
        wte = torch.zeros(16, D)
        wte[:, 2:] = 0.5 * torch.randn(16, D - 2, generator=gen)
        wte[A], wte[B] = 20 * u, -20 * u
        wte[P, :2] = u[:2]
        wte[Q, :2] = u[:2] if q_favours_a else -u[:2]
        wte[Q, 2:] = wte[P, 2:]  # P and Q differ along u only
        model.transformer.wte.weight.zero_()
        model.transformer.wte.weight[:16] = wte
        pos = torch.zeros(32, D)
        pos[:, 2:] = 0.1 * torch.randn(32, D - 2, generator=gen)
        model.transformer.wpe.weight.copy_(pos)
    return model.eval()


def built_probe(n: int = 48, seed: int = 2, answer_len: int = 1) -> CounterfactualProbe:
    """Prompts of filler tokens of varied length, half ending in P, half in Q, in two bins; the
    instructed prompts have two more filler tokens before them."""
    gen = torch.Generator().manual_seed(seed)
    prompts, instructed = [], []
    for i in range(n):
        body = [FILLER[int(j)] for j in torch.randint(len(FILLER), (int(torch.randint(3, 9, (1,), generator=gen)),),
                                                      generator=gen)]
        prompt = tuple(body + [P if i % 2 == 0 else Q])
        prompts.append(prompt)
        instructed.append((5, 6) + prompt)
    bins = tuple("rare" if i % 4 < 2 else "frequent" for i in range(n))
    return CounterfactualProbe(tuple(prompts), tuple(instructed), ((A,) * answer_len,) * n,
                               ((B,) * answer_len,) * n, bins)


def test_shares_of_a_model_that_always_prefers_the_context_answer():
    model, probe = built_gpt(q_favours_a=True), built_probe(answer_len=2)
    result = context_vs_prior(model, probe, batch_size=16, device="cpu")
    tags = context_scalars(result)
    for b in ("rare", "frequent", ALL):
        assert tags[f"eval/context/follow/{b}"] == 1.0 and tags[f"eval/context/prior/{b}"] == 0.0
        assert tags[f"eval/context/greedy_follow/{b}"] == 1.0 and tags[f"eval/context/greedy_other/{b}"] == 0.0
        assert tags[f"eval/context/n/{b}"] == (48 if b == ALL else 24)
        assert tags[f"eval/context/follow/{b}/lo"] < 1.0 == tags[f"eval/context/follow/{b}/hi"]
    assert tags["eval/context/steer_layer"] == -1  # no prior-following prompt: no vector
    assert "eval/context/follow_steered/all" not in tags
    swapped = CounterfactualProbe(probe.prompts, probe.instructed, probe.prior_answers, probe.context_answers,
                                  probe.bins)
    tags = context_scalars(context_vs_prior(model, swapped, batch_size=16, device="cpu"))
    assert tags["eval/context/follow/all"] == 0.0 and tags["eval/context/prior/all"] == 1.0
    assert tags["eval/context/greedy_prior/all"] == 1.0


def test_steering_moves_the_follow_rate_as_built():
    model, probe = built_gpt(), built_probe()
    result = context_vs_prior(model, probe, batch_size=16, device="cpu", alpha=1.0)
    tags = context_scalars(result)
    assert tags["eval/context/follow/all"] == pytest.approx(0.5)  # P-ending prompts follow, Q-ending do not
    held = result.heldout
    expected = sum(probe.prompts[i][-1] == P for i in held.nonzero().squeeze(1).tolist()) / int(held.sum())
    assert tags["eval/context/follow_heldout/all"] == pytest.approx(expected)
    # The vector is wte[P] - wte[Q] (= 2u) plus position noise: it turns every Q prompt into a P one.
    assert tags["eval/context/steer_layer"] in (0.0, 1.0, 2.0)
    assert tags["eval/context/follow_steered/all"] == 1.0
    assert tags["eval/context/steer_gain/all"] == pytest.approx(1 - expected)
    assert tags["eval/context/steer_gain/all"] / tags["eval/context/steer_gain/all/se"] > 3
    assert tags["eval/context/steer_norm"] == pytest.approx(2 * math.sqrt(2), rel=0.05)
    assert tags["eval/context/steer_norm"] > 5 * tags["eval/context/steer_norm_null"]
    assert tags["eval/context/instruct_gain/all"] == 0.0  # this model ignores what comes before
    # Steering the other way turns every prompt to the prior.
    vector, _ = steering_vector(result.base.residuals[0], result.base.follows, result.base.prior)
    back = score_answers(model, probe, 16, "cpu", steer=Steer(0, -vector.float()))
    assert not bool(back.follows.any())
    assert not model.transformer.h[0]._forward_hooks  # the hook is gone


def test_no_difference_between_groups_gives_no_vector_and_no_move():
    model, probe = built_gpt(), built_probe()
    base = score_answers(model, probe, 16, "cpu", keep_residuals=True)
    # Two groups drawn at random, balanced over P and Q prompts: one population.
    gen = torch.Generator().manual_seed(3)
    group = torch.zeros(len(probe), dtype=torch.bool)
    for start in (0, 1):
        rows = torch.arange(start, len(probe), 2)
        group[rows[torch.randperm(len(rows), generator=gen)[: len(rows) // 2]]] = True
    vector, null = steering_vector(base.residuals[0], group, ~group)
    assert float(vector.norm()) < 3 * null
    assert abs(float(vector[0] - vector[1])) < 1e-6  # nothing along u
    moved = score_answers(model, probe, 16, "cpu", steer=Steer(0, vector.float()))
    assert torch.equal(moved.follows, base.follows)


def test_steering_vector_null_norm_matches_random_groups():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(400, 16, generator=gen)
    ratios = []
    for _ in range(20):
        group = torch.rand(400, generator=gen) < 0.5
        vector, null = steering_vector(x, group, ~group)
        ratios.append(float(vector.norm()) / null)
    assert 0.8 < sum(ratios) / len(ratios) < 1.2  # E|v| is a bit below sqrt(E|v|^2) = null
    shifted = x + 0.5 * torch.nn.functional.one_hot(torch.arange(400) % 2, 16)[:, :1].float()
    group = torch.arange(400) % 2 == 1
    vector, null = steering_vector(shifted, group, ~group)
    assert float(vector.norm()) > 3 * null


def test_batched_scores_equal_one_row_at_a_time():
    torch.manual_seed(5)
    model = GPT(GPTConfig(vocab_size=40, block_size=24, n_layer=2, n_head=2, n_embd=16)).eval()
    gen = torch.Generator().manual_seed(6)
    rand = lambda k: tuple(int(t) for t in torch.randint(40, (k,), generator=gen))  # noqa: E731
    prompts = tuple(rand(int(torch.randint(2, 10, (1,), generator=gen))) for _ in range(7))
    probe = CounterfactualProbe(prompts, prompts, tuple(rand(1 + i % 3) for i in range(7)),
                                tuple(rand(1 + (i + 1) % 3) for i in range(7)), ("x",) * 7)
    scores = score_answers(model, probe, batch_size=3, device="cpu")
    for i, (p, a, b) in enumerate(zip(probe.prompts, probe.context_answers, probe.prior_answers)):
        for answer, logp, greedy in ((a, scores.context_logp[i], scores.context_greedy[i]),
                                     (b, scores.prior_logp[i], scores.prior_greedy[i])):
            row = torch.tensor([p + answer])
            with torch.no_grad():
                logits = model(row[:, :-1])[0][0, len(p) - 1 :, :40].double()
            target = torch.tensor(answer)
            expected = torch.log_softmax(logits, -1).gather(1, target[:, None]).sum()
            assert float(logp) == pytest.approx(float(expected), abs=1e-4)
            assert bool(greedy) == bool((logits.argmax(-1) == target).all())


def test_probe_encoding_and_figure():
    from lamina.data.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    encode = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    items = [{"prompt": "Ada lives in Oslo. Ada lives in", "context_answer": " Oslo", "memorised_answer": " Rome",
              "exposure_bin": "high"}]
    probe = counterfactual_probe(items, encode, bos=0)
    assert probe.prompts[0][0] == 0
    assert probe.instructed[0][1:] == tuple(encode("Use the context. " + items[0]["prompt"]))
    assert probe.context_answers[0] == tuple(encode(" Oslo")) and probe.bins == ("high",)
    assert wilson(0, 10)[0] == 0.0 and 0 < wilson(5, 10)[0] < 0.5 < wilson(5, 10)[1] < 1
    model, probe = built_gpt(), built_probe()
    tags = context_scalars(context_vs_prior(model, probe, batch_size=16, device="cpu"))
    assert figure_to_array(context_figure(tags, step=3)).ndim == 3
