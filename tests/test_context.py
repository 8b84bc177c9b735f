"""Context against memory: forced-choice and greedy shares, the no-context baseline (pull, win), the
contrastive steering vector and its nulls, on GPTs built by hand so that the answer is known by
construction; and the world corpus's counterfactual probe."""

from __future__ import annotations

import collections
import math
from dataclasses import replace

import pytest
import torch

from lamina.gates import reads_context_gate
from lamina.instrument.context import (
    ALL,
    STRENGTHS,
    CounterfactualProbe,
    Steer,
    context_figure,
    context_scalars,
    context_vs_prior,
    contrastive_vector,
    counterfactual_probe,
    fit_split,
    score_answers,
    wilson,
    world_counterfactual_probe,
)
from lamina.instrument.pictures import figure_to_array
from lamina.model import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")

A, B, P, Q = 1, 2, 3, 4  # the context's answer, the prior's; prompt ends that favour A, B
FILLER = range(5, 12)
D = 8
TAG = "eval/context"


def built_gpt(q_favours_a: bool = False) -> GPT:
    """A GPT whose blocks add nothing (zeroed output projections) and whose position embeddings
    are small noise orthogonal to u = e0 - e1: the residual at a position is its token's
    embedding plus that noise, and the answer A vs B is read off u alone (tied readout: wte[A] =
    +20u, wte[B] = -20u). A prompt ending in P (+u) prefers A; one ending in Q (-u) prefers B,
    or A too with `q_favours_a`. It reads nothing but a prompt's last token: whether a probe
    looks like a model that reads its context or one that ignores it is set by the probe's last
    tokens, with and without the context."""
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


def body(gen: torch.Generator, lo: int = 3, hi: int = 9) -> list[int]:
    n = int(torch.randint(lo, hi, (1,), generator=gen))
    return [FILLER[int(j)] for j in torch.randint(len(FILLER), (n,), generator=gen)]


def built_probe(n: int = 48, seed: int = 2, answer_len: int = 1) -> CounterfactualProbe:
    """Prompts of filler tokens of varied length, half ending in P, half in Q, in two bins; the
    instructed prompts have two more filler tokens before them."""
    gen = torch.Generator().manual_seed(seed)
    prompts, instructed = [], []
    for i in range(n):
        prompt = tuple(body(gen) + [P if i % 2 == 0 else Q])
        prompts.append(prompt)
        instructed.append((5, 6) + prompt)
    bins = tuple("rare" if i % 4 < 2 else "frequent" for i in range(n))
    return CounterfactualProbe(tuple(prompts), tuple(instructed), ((A,) * answer_len,) * n,
                               ((B,) * answer_len,) * n, bins)


def ends(k: int, share_p: float, gen: torch.Generator) -> list[int]:
    """k last tokens, P for a share `share_p` of them (rounded), the rest Q, in a random order."""
    tokens = [P] * round(k * share_p) + [Q] * (k - round(k * share_p))
    return [tokens[i] for i in torch.randperm(k, generator=gen).tolist()]


def exposure_probe(context_p: dict[str, float], question_p: dict[str, float] | None,
                   twin_p: dict[str, float] | None = None, per_bin: int = 512, people: int = 8,
                   seed: int = 3) -> CounterfactualProbe:
    """Bins "0" and "100", `per_bin` prompts each about `people` persons in turn. With its context,
    a prompt of bin b ends in P (the built GPT prefers the context's answer) for a share
    `context_p[b]`; its question alone for a share `question_p[b]` (None: the same last token as
    with the context, prompt by prompt: a model that ignores its context); its consistent twin
    (the same prompt, its last token set) for `twin_p[b]` (None: no twins). The context body and
    the question body differ, so only the last token links them."""
    gen = torch.Generator().manual_seed(seed)
    prompts, questions, twins, bins, entities = [], [], [], [], []
    for b in ("0", "100"):
        context_ends = ends(per_bin, context_p[b], gen)
        question_ends = context_ends if question_p is None else ends(per_bin, question_p[b], gen)
        twin_ends = ends(per_bin, (twin_p or context_p)[b], gen)
        for end, question_end, twin_end in zip(context_ends, question_ends, twin_ends):
            head = body(gen, 6, 12)
            prompts.append(tuple(head + [end]))
            twins.append(tuple(head + [twin_end]))
            questions.append(tuple(body(gen, 2, 5) + [question_end]))
            bins.append(b)
            entities.append(f"{b}-person{len(entities) % people}")
    n = len(prompts)
    return CounterfactualProbe(tuple(prompts), tuple((5, 6) + p for p in prompts), ((A,),) * n, ((B,),) * n,
                               tuple(bins), tuple(questions), tuple(twins) if twin_p else None, tuple(entities))


def tags_of(probe: CounterfactualProbe, **kwargs) -> dict[str, float]:
    return context_scalars(context_vs_prior(built_gpt(), probe, batch_size=256, device="cpu", **kwargs))


def test_shares_of_a_model_that_always_prefers_the_context_answer():
    model, probe = built_gpt(q_favours_a=True), built_probe(answer_len=2)
    result = context_vs_prior(model, probe, batch_size=16, device="cpu")
    tags = context_scalars(result)
    for b in ("rare", "frequent", ALL):
        assert tags[f"{TAG}/follow/{b}"] == 1.0 and tags[f"{TAG}/prior/{b}"] == 0.0
        assert tags[f"{TAG}/greedy_follow/{b}"] == 1.0 and tags[f"{TAG}/greedy_other/{b}"] == 0.0
        assert tags[f"{TAG}/n/{b}"] == (48 if b == ALL else 24)
        assert tags[f"{TAG}/follow/{b}/lo"] < 1.0 == tags[f"{TAG}/follow/{b}/hi"]
    assert tags[f"{TAG}/steer_layer"] == -1  # no consistent twins: no vector
    assert f"{TAG}/follow_steered/all" not in tags and f"{TAG}/pull/all" not in tags  # nor questions
    swapped = CounterfactualProbe(probe.prompts, probe.instructed, probe.prior_answers, probe.context_answers,
                                  probe.bins)
    tags = context_scalars(context_vs_prior(model, swapped, batch_size=16, device="cpu"))
    assert tags[f"{TAG}/follow/all"] == 0.0 and tags[f"{TAG}/prior/all"] == 1.0
    assert tags[f"{TAG}/greedy_prior/all"] == 1.0


def test_a_context_blind_model_has_no_pull_no_win_and_does_not_read():
    # It scores by its prior alone: the same choice with the context as with the question alone.
    # Bin 0: a coin of answer strings leaning 0.6 to the context's; bin 100: the prior always.
    tags = tags_of(exposure_probe({"0": 0.6, "100": 0.0}, None, twin_p={"0": 0.9, "100": 0.9}))
    assert tags[f"{TAG}/follow/0/lo"] > 0.55  # above chance: the old gate (0.5) would say it reads
    for b in ("0", "100", ALL):
        assert tags[f"{TAG}/pull/{b}"] == 0.0 and tags[f"{TAG}/win/{b}"] == 0.0
    assert tags[f"{TAG}/follow/100"] - tags[f"{TAG}/follow/0"] == pytest.approx(-0.6, abs=1e-3)  # prior strength
    assert tags[f"{TAG}/nocontext_prior/100"] == 1.0
    assert tags[f"{TAG}/nocontext_follow/0"] == pytest.approx(0.6, abs=1e-3)
    gate = reads_context_gate(tags)
    assert gate.passed is False and "with − without the context lower bound +0.000" in gate.detail
    # Not read, so no vector was fitted, though its twins would give one.
    assert tags[f"{TAG}/steer_read"] == 0.0 and tags[f"{TAG}/steer_layer"] == -1.0
    # A context that jiggles the choice at random (the same shares, other prompts) is not read either.
    jiggled = tags_of(exposure_probe({"0": 0.6, "100": 0.0}, {"0": 0.6, "100": 0.0}))
    assert jiggled[f"{TAG}/win/0"] == jiggled[f"{TAG}/win/100"] == 0.0
    assert jiggled[f"{TAG}/pull/0/lo"] < 0 and reads_context_gate(jiggled).passed is False


def test_pull_and_win_of_models_that_read_their_context():
    # Bin 0 people: no prior (the question alone a coin), the context read: every prompt follows.
    # Bin 100: the prior wins without a context; with it, an overriding model follows 0.3 of them,
    # a perfect reader all of them.
    question = {"0": 0.5, "100": 0.0}
    overridden = tags_of(exposure_probe({"0": 1.0, "100": 0.3}, question))
    assert overridden[f"{TAG}/pull/0"] == pytest.approx(0.5) and overridden[f"{TAG}/win/0"] == pytest.approx(1.0)
    assert overridden[f"{TAG}/pull/100"] == pytest.approx(0.3, abs=1e-3)
    assert overridden[f"{TAG}/win/100"] == pytest.approx(0.3, abs=1e-3)
    assert overridden[f"{TAG}/pull/0/lo"] == pytest.approx(0.5 - 1.96 * overridden[f"{TAG}/pull/0/se"], abs=1e-3)
    assert reads_context_gate(overridden).passed is True  # 512 prompts, follow/0 at 1.0, pull/0 at 0.5
    reader = tags_of(exposure_probe({"0": 1.0, "100": 1.0}, question))
    assert reader[f"{TAG}/win/0"] == reader[f"{TAG}/win/100"] == pytest.approx(1.0)  # no override at all
    assert reader[f"{TAG}/pull/100"] - reader[f"{TAG}/pull/0"] == pytest.approx(0.5)  # the headroom the ratio removes
    # A model at chance with its context does not read it.
    chance = tags_of(exposure_probe({"0": 0.5, "100": 0.5}, question))
    assert reads_context_gate(chance).passed is False


def test_the_contrastive_vector_steers_held_out_people_as_built():
    # Bin 100: the prior wins with the counterfactual context (Q), its consistent twin ends in P;
    # bin 0 reads its context, so a vector is fitted: consistent − counterfactual = wte[P] − wte[Q].
    probe = exposure_probe({"0": 1.0, "100": 0.0}, {"0": 0.5, "100": 0.0}, twin_p={"0": 1.0, "100": 1.0},
                           per_bin=64)
    result = context_vs_prior(built_gpt(), probe, batch_size=64, device="cpu")
    tags = context_scalars(result)
    assert result.read and tags[f"{TAG}/steer_read"] == 1.0
    # Split by person: the held-out prompts are about people the vector never saw.
    fit = ~result.heldout
    assert not {probe.entities[i] for i in fit.nonzero().squeeze(1).tolist()} & {
        probe.entities[i] for i in result.heldout.nonzero().squeeze(1).tolist()}
    assert tags[f"{TAG}/steer_fit_n"] == int(fit.sum()) == 64  # 4 of each bin's 8 people, 8 prompts each
    held_100 = sum(result.bins[i] == "100" for i in result.heldout.nonzero().squeeze(1).tolist())
    assert tags[f"{TAG}/steer_heldout_n"] == held_100 == 32  # steered: the held-out prompts of bin 100
    # Blocks add nothing, so every layer has the same vector: the pairs of bin 100 differ by
    # wte[P] − wte[Q] = 2u, those of bin 0 not at all (both end in P): the mean is u.
    assert tags[f"{TAG}/steer_layer"] == 0.0 and tags[f"{TAG}/steer_sign"] == 1.0
    assert tags[f"{TAG}/steer_norm"] == pytest.approx(math.sqrt(2), rel=1e-4)
    d = math.sqrt(8 * 0.25 * 64 / 63 / 64)  # sqrt(tr(cov) / n): |d| is 0 or 2 sqrt(2), half and half
    assert tags[f"{TAG}/steer_norm_null"] == pytest.approx(d, rel=1e-3)
    # Q + u sits on the fence (no follow); Q + 4u and Q + 16u are P's side: the smallest of them is chosen.
    assert tags[f"{TAG}/steer_strength"] == 4.0
    assert tags[f"{TAG}/follow_heldout/100"] == 0.0 and tags[f"{TAG}/follow_steered/100"] == 1.0
    assert tags[f"{TAG}/steer_gain/100"] == 1.0 and tags[f"{TAG}/steer_gain/100/se"] == 0.0
    for s in (4, 16):
        assert tags[f"{TAG}/follow_steered/s{s}/100"] == 1.0
        assert tags[f"{TAG}/steer_vs_random/s{s}/100"] == pytest.approx(
            1.0 - tags[f"{TAG}/follow_steered_random/s{s}/100"])
    assert tags[f"{TAG}/follow_steered/s1/100"] < 1.0
    assert set(STRENGTHS) == {1.0, 4.0, 16.0}
    assert f"{TAG}/follow_steered/0" not in tags  # only bin 100 is steered
    # The other sign turns every prompt to the prior; the hook is gone after each use.
    back = score_answers(built_gpt(), probe, 64, "cpu", steer=Steer(0, -4 * result.choice.vector.float()))
    assert not bool(back.follows.any())
    assert not built_gpt().transformer.h[0]._forward_hooks


def test_a_vector_of_one_population_stays_at_its_null_and_moves_nothing():
    # The twins are the counterfactual prompts themselves: consistent − counterfactual is 0 per pair.
    probe = exposure_probe({"0": 1.0, "100": 0.0}, {"0": 0.5, "100": 0.0}, twin_p={"0": 1.0, "100": 0.0},
                           per_bin=64)
    probe = CounterfactualProbe(*[getattr(probe, f) for f in ("prompts", "instructed", "context_answers",
                                                              "prior_answers", "bins", "questions")],
                                consistent=probe.prompts, entities=probe.entities)
    tags = tags_of(probe)
    assert tags[f"{TAG}/steer_read"] == 1.0 and tags[f"{TAG}/steer_layer"] == -1.0  # a zero vector: none


def test_contrastive_vector_null_norm_matches_one_population():
    gen = torch.Generator().manual_seed(4)
    ratios = []
    for _ in range(20):
        a, b = torch.randn(400, 16, generator=gen), torch.randn(400, 16, generator=gen)
        vector, null = contrastive_vector(a, b)
        ratios.append(float(vector.norm()) / null)
    assert 0.8 < sum(ratios) / len(ratios) < 1.2  # E|v| is a bit below sqrt(E|v|^2) = null
    shifted = torch.randn(400, 16, generator=gen) + 1.0 * torch.nn.functional.one_hot(torch.zeros(400).long(), 16)
    vector, null = contrastive_vector(shifted, torch.randn(400, 16, generator=gen))
    assert float(vector.norm()) > 3 * null


def test_fit_split_by_person_keeps_each_persons_prompts_together():
    bins = ["0"] * 40 + ["100"] * 40
    people = [f"p{i % 8}" for i in range(40)] + [f"q{i % 8}" for i in range(40)]
    fit = fit_split(bins, seed=5, groups=people)
    by_person = collections.defaultdict(set)
    for f, person in zip(fit.tolist(), people):
        by_person[person].add(f)
    assert all(len(v) == 1 for v in by_person.values())  # all of a person's prompts on one side
    assert sum(next(iter(v)) for p, v in by_person.items() if p[0] == "p") == 4  # half of each bin's people
    assert int(fit.sum()) == 40
    assert torch.equal(fit, fit_split(bins, seed=5, groups=people)) and not torch.equal(
        fit, fit_split(bins, seed=6, groups=people))


def test_batched_scores_equal_one_row_at_a_time():
    torch.manual_seed(5)
    model = GPT(GPTConfig(vocab_size=40, block_size=24, n_layer=2, n_head=2, n_embd=16)).eval()
    gen = torch.Generator().manual_seed(6)
    rand = lambda k: tuple(int(t) for t in torch.randint(40, (k,), generator=gen))  # noqa: E731
    prompts = tuple(rand(int(torch.randint(2, 10, (1,), generator=gen))) for _ in range(7))
    questions = tuple(rand(int(torch.randint(2, 6, (1,), generator=gen))) for _ in range(7))
    probe = CounterfactualProbe(prompts, prompts, tuple(rand(1 + i % 3) for i in range(7)),
                                tuple(rand(1 + (i + 1) % 3) for i in range(7)), ("x",) * 7, questions)
    for which, rows in (("context", prompts), ("question", questions)):
        scores = score_answers(model, probe, batch_size=3, device="cpu", which=which)
        for i, (p, a, b) in enumerate(zip(rows, probe.context_answers, probe.prior_answers)):
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
    assert probe.questions is None and probe.consistent is None and probe.entities is None
    assert wilson(0, 10)[0] == 0.0 and 0 < wilson(5, 10)[0] < 0.5 < wilson(5, 10)[1] < 1
    tags = tags_of(exposure_probe({"0": 1.0, "100": 0.0}, {"0": 0.5, "100": 0.0}, twin_p={"0": 1.0, "100": 1.0},
                                  per_bin=32))
    assert figure_to_array(context_figure(tags, step=3)).ndim == 3


def test_the_world_probe_is_the_data_seeds_roster_with_questions_twins_and_people():
    from lamina.data import world
    from lamina.data.tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    eot = tok.token_to_id("<|endoftext|>")
    probe = world_counterfactual_probe(tok, eot, data_seed=4, probe_seed=0, prompts=64)
    decode = lambda ids: tok.decode(list(ids), skip_special_tokens=False)  # noqa: E731
    assert collections.Counter(probe.bins) == {"0": 16, "1": 16, "10": 16, "100": 16}
    often = {p.name for p in world.people_by_bin(seed=4)[100]}
    assert {e for e, b in zip(probe.entities, probe.bins) if b == "100"} == often
    for i in range(len(probe)):
        prompt, question, twin = decode(probe.prompts[i]), decode(probe.questions[i]), decode(probe.consistent[i])
        assert prompt.startswith("<|endoftext|>Context: ") and twin.startswith("<|endoftext|>Context: ")
        assert question.startswith("<|endoftext|>Q: ") and prompt.endswith(question[len("<|endoftext|>"):])
        assert probe.entities[i] in question
        assert decode(probe.prior_answers[i]).strip() in twin  # the twin states the memorised value
    # Another data seed deals other people into bin 100.
    other = world_counterfactual_probe(tok, eot, data_seed=5, probe_seed=0, prompts=64)
    assert {e for e, b in zip(other.entities, other.bins) if b == "100"} != often


def test_a_bin_whose_people_are_all_on_one_side_is_not_steered():
    # One person in bin 100: the split leaves them to score, none to fit the choice on.
    probe = exposure_probe({"0": 1.0, "100": 0.0}, {"0": 0.5, "100": 0.0}, twin_p={"0": 1.0, "100": 1.0},
                           per_bin=16)
    probe = replace(probe, entities=tuple(e if b == "0" else "one" for e, b in zip(probe.entities, probe.bins)))
    result = context_vs_prior(built_gpt(), probe, batch_size=64, device="cpu")
    assert bool((~result.heldout).any())  # bin 0's people were split: a vector could be fitted
    tags = context_scalars(result)
    assert tags[f"{TAG}/steer_read"] == 1.0 and tags[f"{TAG}/steer_layer"] == -1.0
