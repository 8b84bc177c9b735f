"""lamina.finetune: drift against a reference, knowledge retained, proxy tuning, restored blocks.
Every measure on inputs whose answer is known by construction: a model against itself and against a
rotated copy of itself (the same function in another residual basis), independent features against
their permutation null, a stub that knows the answers, an expert that was taught one planted fact, a
reader built to prefer one choice, a model whose planted fact outlives its answer's format, a
model whose fact-holding block was overwritten."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from lamina.data.tokenizer import byte_tokenizer
from lamina.errors import ConfigError
from lamina.finetune import drift as drift_mod
from lamina.finetune.drift import DriftMeter, fact_probe
from lamina.pretrained import load_gpt
from lamina.finetune.proxy import ProxyTuned, main as proxy_main, sweep_logits
from lamina.finetune.restore import halves, restored
from lamina.finetune.retention import (
    ChoiceItem,
    EvalItem,
    GreedyCompleter,
    RetentionSuite,
    choice_accuracy,
    choice_chance,
    choice_credit,
    choice_items,
    continuation_log_probs,
    fact_items,
    form_chance,
    model_logits,
    question_form,
    score,
    swap_answer,
    task_items,
    wilson_interval,
)
from lamina.finetune.similarity import (
    CKAAccumulator,
    cka_permutation_null,
    fit_ridge_probe,
    linear_cka,
    weight_changes,
)
from lamina.model import GPT, GPTConfig, KVCache

EOT = 256  # the byte tokenizer's <|endoftext|>


def tiny_gpt(seed: int, n_layer: int = 2, n_embd: int = 32, block_size: int = 64) -> GPT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(GPTConfig(vocab_size=259, block_size=block_size, n_layer=n_layer, n_head=2, n_embd=n_embd)).eval()


def rotation_fixing_ones(d: int, seed: int) -> torch.Tensor:
    """A random orthogonal R [d, d] with R 1 = 1: it commutes with LayerNorm's centring."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    a[:, 0] = 1.0
    basis, _ = torch.linalg.qr(a)  # first column: +-1/sqrt(d)
    basis[:, 0] = 1.0 / math.sqrt(d)
    inner, _ = torch.linalg.qr(torch.randn(d - 1, d - 1, generator=g, dtype=torch.float64))
    block = torch.eye(d, dtype=torch.float64)
    block[1:, 1:] = inner
    return (basis @ block @ basis.T).float()


def rotated_copy(model: GPT, seed: int) -> GPT:
    """The same function with its residual stream in a rotated basis (x -> x R). Exact because the
    norms' weights are 1 (their init) with no bias, and R fixes the all-ones vector."""
    r = rotation_fixing_ones(model.config.n_embd, seed)
    out = copy.deepcopy(model)
    with torch.no_grad():
        t = out.transformer
        t.wte.weight.copy_(t.wte.weight @ r)  # (the tied output layer turns with it)
        t.wpe.weight.copy_(t.wpe.weight @ r)
        for block in t.h:
            for reads in (block.attn.c_attn, block.mlp.c_fc):
                reads.weight.copy_(reads.weight @ r)
            for writes in (block.attn.c_proj, block.mlp.c_proj):
                writes.weight.copy_(r.T @ writes.weight)
    return out


def windows(n: int = 8, length: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, length), generator=torch.Generator().manual_seed(seed))


# ---- CKA, weight change, probes -------------------------------------------------------------


def test_cka_is_one_for_a_model_and_for_its_rotated_copy(one_thread):
    ref = tiny_gpt(0)
    turned = rotated_copy(ref, seed=1)
    idx = windows()
    assert torch.allclose(ref(idx)[0], turned(idx)[0], atol=1e-5)  # the same function
    meter = DriftMeter(ref, idx, batch_rows=4)
    same, rotated = meter.measure(ref), meter.measure(turned)
    for i in range(2):
        assert same[f"drift/layer{i}/cka"] == pytest.approx(1.0, abs=1e-9)
        assert same[f"drift/layer{i}/weights"] == 0.0
        assert rotated[f"drift/layer{i}/cka"] == pytest.approx(1.0, abs=1e-5)
        assert rotated[f"drift/layer{i}/cka_mlp"] == pytest.approx(1.0, abs=1e-5)
        assert rotated[f"drift/layer{i}/weights"] > 0.1  # other weights, the same representations
        # the null it is read against: an independently initialised model is far from 1
        assert rotated[f"drift/layer{i}/cka_init"] < 0.9
        assert rotated[f"drift/layer{i}/cka_floor"] >= 0.0
    assert same["drift/embeddings/weights"] == 0.0


def test_drift_under_a_bf16_autocast_runs_only_its_forwards_in_bf16(one_thread):
    # The trainer's autocast reaches the forwards (precision.model_forward) and nothing else
    # (precision.measuring): measured so, drift equals a reference arm whose models wrap their own
    # forwards in the same autocast and are measured with none, bit for bit. (`_init` numbers come
    # from a fresh twin, whose forward the arm does not wrap.)
    def bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def bf16_forward(model: GPT) -> GPT:
        out = copy.deepcopy(model)
        out.forward = bf16()(out.forward)
        return out

    ref, model, idx = tiny_gpt(0), tiny_gpt(1), windows()
    mixed = DriftMeter(ref, idx, batch_rows=4, autocast=bf16).measure(model, autocast=bf16)
    arm = DriftMeter(bf16_forward(ref), idx, batch_rows=4).measure(bf16_forward(model))
    plain = DriftMeter(ref, idx, batch_rows=4).measure(model)
    shared = [k for k in arm if not k.endswith("_init")]
    assert shared and all(mixed[k] == arm[k] for k in shared)
    assert any(mixed[k] != plain[k] for k in shared if "cka" in k)  # the forwards did run in bf16


def test_cka_of_independent_features_sits_at_its_small_sample_null():
    g = torch.Generator().manual_seed(0)
    n, p, q = 400, 16, 24
    x, y = torch.randn(n, p, generator=g), torch.randn(n, q, generator=g)
    null = cka_permutation_null(x, y, draws=40, seed=1)
    value = linear_cka(x, y)
    assert abs(value - float(null.mean())) < 4 * float(null.std())
    # isotropic features: E[CKA] ~ sqrt(pq)/n / sqrt((1 + p/n)(1 + q/n))
    expected = math.sqrt(p * q) / n / math.sqrt((1 + p / n) * (1 + q / n))
    assert float(null.mean()) == pytest.approx(expected, rel=0.25)
    # a planted linear relation clears the null by far; invariance to rotation and scale
    planted = x @ torch.randn(p, q, generator=g) + 0.1 * torch.randn(n, q, generator=g)
    assert linear_cka(x, planted) > float(null.max()) + 0.5
    rotation, _ = torch.linalg.qr(torch.randn(p, p, generator=g))
    assert linear_cka(x, 3.0 * x @ rotation + 5.0) == pytest.approx(1.0, abs=1e-9)


def test_streamed_cka_equals_the_kernel_form():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(90, 5, generator=g) + 4.0, torch.randn(90, 7, generator=g)
    y[:, :3] += x[:, :3]
    acc = CKAAccumulator()
    for part in range(3):
        acc.update(x[part * 30 : (part + 1) * 30], y[part * 30 : (part + 1) * 30])
    xd, yd = x.double(), y.double()
    h = torch.eye(90, dtype=torch.float64) - 1.0 / 90
    k, l = h @ xd @ xd.T @ h, h @ yd @ yd.T @ h
    kernel_form = float((k * l).sum() / (k.norm() * l.norm()))
    assert acc.cka() == pytest.approx(kernel_form, abs=1e-10)
    assert linear_cka(x, torch.zeros(90, 3)) == 0.0  # no variance: 0, not NaN


def test_weight_change_is_zero_against_itself_and_known_for_a_scaled_copy():
    ref = tiny_gpt(0)
    assert all(v == 0.0 for v in weight_changes(ref, ref).values())
    scaled = copy.deepcopy(ref)
    with torch.no_grad():
        for p in scaled.parameters():
            p.mul_(1.1)
    changes = weight_changes(scaled, ref)
    assert set(changes) == {"layer0", "layer1", "embeddings"}
    assert all(v == pytest.approx(0.1, rel=1e-5) for v in changes.values())


def test_ridge_probe_reads_a_planted_code_and_not_noise():
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 6, (300,), generator=g)
    codes = torch.randn(6, 20, generator=g)
    x = codes[labels] + 0.3 * torch.randn(300, 20, generator=g)
    probe = fit_ridge_probe(x[:200], labels[:200], 6)
    assert probe.accuracy(x[200:], labels[200:]) > 0.95
    noise = torch.randn(300, 20, generator=g)
    assert fit_ridge_probe(noise[:200], labels[:200], 6).accuracy(noise[200:], labels[200:]) < 0.4


def test_fact_probe_holds_out_questions_whose_answers_it_trains_on():
    facts = fact_probe(byte_tokenizer(), EOT, seed=5, block_size=128, contexts=2)
    tok = byte_tokenizer()
    train_answers = set(facts.labels[facts.train].tolist())
    assert set(facts.labels[~facts.train].tolist()) <= train_answers
    assert facts.heldout_questions >= 20
    for row in range(0, len(facts.tokens), 37):
        prefix = tok.decode(facts.tokens[row, : facts.positions[row] + 1].tolist(), skip_special_tokens=False)
        assert prefix.endswith(" A: ")  # byte tokens: the space predicts the answer's first letter
    questions = {}
    for row in range(len(facts.tokens)):
        text = tok.decode(facts.tokens[row, : facts.positions[row] + 1].tolist(), skip_special_tokens=False)
        question = text.rsplit("<|endoftext|>", 1)[1]
        questions.setdefault(question, set()).add(bool(facts.train[row]))
    assert all(len(sides) == 1 for sides in questions.values())  # no question on both sides


def test_drift_fact_probe_numbers_sit_beside_their_nulls(one_thread):
    ref = tiny_gpt(0, n_layer=1, block_size=128)
    facts = fact_probe(byte_tokenizer(), EOT, seed=5, block_size=128, contexts=1)
    meter = DriftMeter(ref, windows(4, 64), facts, batch_rows=64)
    out = meter.measure(ref)
    assert out["drift/layer0/probe_acc"] == out["drift/layer0/probe_acc_ref"]
    for key in ("probe_acc_init", "probe_acc_control"):
        assert 0.0 <= out[f"drift/layer0/{key}"] <= 1.0
    assert 0.0 < out["drift/probe_chance"] < 0.5


# ---- knowledge retained ---------------------------------------------------------------------


def test_fact_questions_are_distinct_and_parse():
    one, two = fact_items("one_hop", seed=7), fact_items("two_hop", seed=7)
    assert (len(one), len(two)) == (178, 125)  # the fixed world's every question
    assert len({q.prompt for q in one}) == 178
    assert one[0].prompt.startswith("Q: ") and one[0].prompt.endswith(" A:")
    assert two[0].prompt.endswith(" <think>") and "</think> A: " in two[0].gold
    assert question_form("Q: Where does Mira live? A:") == "Q: Where does _ live? A:"
    assert len(fact_items("one_hop", seed=7, limit=10)) == 10


def test_exact_match_reading():
    line = EvalItem("Q: x A:", "Osk")
    assert line.is_correct(" Osk.\nmore") and line.is_correct(" Osk") and not line.is_correct(" Osko.")
    think = EvalItem("Q: y <think>", "mice", "think")
    assert think.is_correct(" Mira has a fox. </think> A: mice.\n")
    assert not think.is_correct(" mice")  # no thought closed: wrong
    assert not think.is_correct(" a </think> A: mice and more.")


def test_wilson_interval_and_chance_known_values():
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(1.96**2 / (10 + 1.96**2), abs=1e-3)
    lo, hi = wilson_interval(5, 10)
    assert (lo + hi) / 2 == pytest.approx(0.5) and 0.2 < lo < 0.25
    lives = (("Mira", "Osk"), ("Tomas", "Osk"), ("Ilse", "Brill"))
    items = [EvalItem(f"Q: Where does {name} live? A:", town) for name, town in lives]
    assert form_chance(items) == pytest.approx(2 / 3)
    assert form_chance(items[2:], population=items) == 0.0  # the commonest town is Osk


def test_fact_eval_is_one_for_a_stub_that_knows_and_near_zero_for_a_random_model(one_thread):
    tok = byte_tokenizer()
    suite = RetentionSuite(tok, seed=11, items=24)
    gold = {item.prompt: item.gold for items in suite.sets.values() for item in items}
    knows = suite.evaluate(lambda prompts, budget: [gold[p] for p in prompts])
    for tag in ("eval/facts/one_hop", "eval/facts/two_hop"):
        assert knows[tag].value == 1.0 and knows[tag].n == 24
        lo, hi = knows[tag].interval
        assert lo < 1.0 and hi == pytest.approx(1.0)
        assert 0.0 <= knows[tag].chance < 0.5
    random_model = tiny_gpt(4, n_layer=1, block_size=128)
    guesses = suite.evaluate(GreedyCompleter.for_model(random_model, tok, EOT, batch_size=32))
    for tag in ("eval/facts/one_hop", "eval/facts/two_hop"):
        assert guesses[tag].value <= 0.05
    scalars = RetentionSuite.scalars(knows)
    expected = {"eval/facts/one_hop", "eval/facts/one_hop/lo", "eval/facts/one_hop/n", "eval/facts/two_hop/chance"}
    assert expected <= set(scalars)


def test_task_file_pairs_and_their_bad_lines(tmp_path):
    good = tmp_path / "capitals.jsonl"
    good.write_text('{"prompt": "Q: a? A:", "answer": "b"}\n\n{"prompt": "Q: c? A:", "answer": "b"}\n')
    items = task_items(good)
    assert [i.answer for i in items] == ["b", "b"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(ConfigError, match="task_files: expected JSON lines"):
        task_items(bad)
    with pytest.raises(ConfigError, match="no such file"):
        task_items(tmp_path / "missing.jsonl")


# ---- forced choice ---------------------------------------------------------------------------


def test_choices_are_the_forms_answers_written_as_the_corpus_writes_them():
    lives = [EvalItem(f"Q: Where does {name} live? A:", town, "line", f" {town}.\n")
             for name, town in (("Mira", "Osk"), ("Tomas", "Osk"), ("Ilse", "Brill"))]
    eats = EvalItem("Q: What does the fox eat? A:", "mice", "line", " mice.\n")
    items = choice_items([*lives, eats])
    assert items[0] == ChoiceItem("Q: Where does Mira live? A:", (" Osk.\n", " Brill.\n"), 0)
    assert items[2].answer == 1 and items[3].choices == (" mice.\n",)  # one answer in its form: one choice
    # chance: the better of a uniform guess (mean 1/k over the three town questions: 1/2) and the
    # form's commonest answer (Osk: 2 of 3 right)
    assert choice_chance(lives) == pytest.approx(2 / 3)
    assert choice_chance(lives[2:], population=lives) == pytest.approx(1 / 2)
    # two-hop: the answer is put in wherever the right continuation writes it, and nowhere else
    gold = " Mira has a fox. The fox eats mice. </think> A: mice.\n"
    assert swap_answer(gold, "mice", "moths") == " Mira has a fox. The fox eats moths. </think> A: moths.\n"
    assert swap_answer(" The baker is Mira. Mira has a fox. </think> A: a fox.\n", "a fox", "an owl") == (
        " The baker is Mira. Mira has an owl. </think> A: an owl.\n")
    assert swap_answer(" Osko is Osk.", "Osk", "Dun") == " Osko is Dun."  # whole words only
    world_two = fact_items("two_hop", seed=3)
    for item, choice in zip(world_two, choice_items(world_two)):
        assert choice.choices[choice.answer] == item.gold and len(set(choice.choices)) == len(choice.choices) >= 8


def test_choice_credit_counts_ties_and_unscored_questions():
    assert choice_credit([-1.0, -2.0, -3.0], 0) == 1.0 and choice_credit([-1.0, -2.0], 1) == 0.0
    assert choice_credit([-1.0, -1.0, -1.0, -5.0], 2) == pytest.approx(1 / 3)  # an indifferent reader: 1/k
    assert choice_credit([float("-inf")] * 3, 0) == 0.0  # nothing fits the context: wrong, as in `score`


def test_continuation_log_probs_are_the_models_own_summed_log_probabilities(one_thread):
    """Batched and right-padded, each pair's number is the sum of log p(token | prefix) over its
    continuation, computed here one pair at a time without padding."""
    model, tok = tiny_gpt(6, block_size=32), byte_tokenizer()
    pairs = [("Q: a? A:", " Osk.\n"), ("Q: where? A:", " Brill.\n"), ("Q:", " x"), ("x" * 40, " too long")]
    got = continuation_log_probs(model_logits({"m": model}), pairs, tok, EOT, 32, torch.device("cpu"), batch_size=2)
    for (prompt, continuation), value in zip(pairs[:3], got["m"][:3]):
        p, c = tok.encode(prompt).ids, tok.encode(continuation).ids
        ids = torch.tensor([[EOT, *p, *c]])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids[:, :-1])[0][0, :, :259].double(), dim=-1)
        expected = sum(float(logp[len(p) + k, c[k]]) for k in range(len(c)))
        assert value == pytest.approx(expected, abs=1e-4)
    assert got["m"][3] == float("-inf")  # longer than the context: not scored


def test_forced_choice_is_one_for_a_reader_that_knows_and_zero_for_one_that_knows_otherwise(one_thread):
    """A reader built to put its mass on one continuation per prompt (the right one, or the first
    wrong one): forced choice reads exactly what it knows, whatever the answer's format."""
    tok = byte_tokenizer()
    suite = RetentionSuite(tok, seed=11, items=12)
    items = suite.choices["eval/facts/one_hop"]

    def knower(pick) -> callable:
        texts = {item.prompt: item.choices[pick(item)] for item in items}

        def logits(idx):
            out = torch.zeros(*idx.shape, 259)
            for r, row in enumerate(idx.tolist()):
                text = tok.decode(row, skip_special_tokens=False).removeprefix("<|endoftext|>")
                for prompt, continuation in texts.items():
                    whole = tok.encode(prompt + continuation).ids
                    if text.startswith(prompt):
                        for t in range(len(row) - 1):  # position t predicts token t + 1 of the row
                            if t < len(whole):
                                out[r, t, whole[t]] = 30.0
            return {"reader": out}

        return logits

    device = torch.device("cpu")
    right = choice_accuracy(knower(lambda item: item.answer), items, tok, EOT, 128, device)["reader"]
    wrong = choice_accuracy(knower(lambda item: (item.answer + 1) % len(item.choices)), items, tok, EOT, 128,
                            device)["reader"]
    assert (right.value, right.n, wrong.value) == (1.0, 12, 0.0)
    # an untrained model guesses: about chance (0.10), never near what it would take to know
    guesses = suite.evaluate_choices(model_logits({"random": tiny_gpt(4, block_size=128)}), EOT, 128, device)
    assert guesses["random"]["eval/facts/one_hop"].value <= 0.4
    assert suite.choice_chance["eval/facts/one_hop"] == pytest.approx(form_chance(
        suite.sets["eval/facts/one_hop"], fact_items("one_hop", seed=11)), abs=0.1)


def test_forced_choice_reads_a_planted_fact_through_a_lost_format(one_thread):
    """A model taught one fact, then taught to write digits after `A:` (its answer's format gone):
    greedy exact match reads 0, forced choice still picks the fact."""
    fact = EvalItem("Q: Where does Mira live? A:", "Osk", "line", " Osk.\n")
    tok = byte_tokenizer()
    knows = taught(tiny_gpt(2, n_layer=1), fact.prompt + fact.gold)
    digits = taught(knows, "Q: Where does Mira live? A: 7.\n", steps=15)
    item = ChoiceItem(fact.prompt, (" Osk.\n", " Brill.\n", " Dun.\n", " Vale.\n"), 0)

    def greedy(model):
        return GreedyCompleter(lambda idx, n, stop: model.generate(idx, n, temperature=0, stop_id=stop), tok, EOT, 64,
                               torch.device("cpu"))

    assert score(greedy(digits), [fact], 8).value == 0.0
    read = choice_accuracy(model_logits({"knows": knows, "digits": digits}), [item], tok, EOT, 64, torch.device("cpu"))
    assert read["knows"].value == 1.0 and read["digits"].value == 1.0


# ---- proxy tuning ---------------------------------------------------------------------------


def cached_logits(model: GPT, idx: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """`model`'s logits at each decoding step, fed the given tokens (the proxy's own path)."""
    cache = KVCache(model.config.n_layer)
    steps = [model(idx, kv_cache=cache)[0][:, -1]]
    for t in range(tokens.shape[1] - 1):
        steps.append(model(tokens[:, t : t + 1], kv_cache=cache)[0][:, -1])
    return torch.stack(steps, dim=1)[..., : model.config.vocab_size].float()


def test_proxy_with_expert_equal_to_anti_is_the_base_exactly(one_thread):
    base, expert = tiny_gpt(0), tiny_gpt(1)
    anti = copy.deepcopy(expert)
    proxy = ProxyTuned(base, expert, anti)
    idx = windows(3, 10, seed=4)
    tokens, lengths, logits = proxy.generate(idx, 12, keep_logits=True)
    base_tokens, base_lengths = base.generate(idx, 12, temperature=0)
    assert torch.equal(tokens, base_tokens) and torch.equal(lengths, base_lengths)
    assert torch.equal(logits, cached_logits(base, idx, tokens))
    sampled = proxy.generate(idx, 12, temperature=1.0, generator=torch.Generator().manual_seed(9))[0]
    base_sampled = base.generate(idx, 12, temperature=1.0, generator=torch.Generator().manual_seed(9))[0]
    assert torch.equal(sampled, base_sampled)


def taught(model: GPT, text: str, steps: int = 80) -> GPT:
    """A copy of `model` trained on one string until it writes it (the planted fact)."""
    out = copy.deepcopy(model).train()
    ids = torch.tensor([[EOT, *byte_tokenizer().encode(text).ids]])
    optimizer = torch.optim.Adam(out.parameters(), lr=1e-2)
    with torch.random.fork_rng(devices=[]):
        for _ in range(steps):
            _, loss = out(ids[:, :-1], ids[:, 1:])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return out.eval()


def test_proxy_answers_a_fact_only_the_expert_was_taught(one_thread):
    fact = EvalItem("Q: What does Zed own? A:", "a kite", "line", " a kite.\n")
    anti = tiny_gpt(2, n_layer=1)
    expert = taught(anti, fact.prompt + fact.gold)
    base = tiny_gpt(3, n_layer=1)
    tok = byte_tokenizer()
    proxy = ProxyTuned(base, expert, anti)

    def completer(decode):
        return GreedyCompleter(decode, tok, EOT, 64, torch.device("cpu"))

    def greedy(model):
        return lambda idx, n, stop: model.generate(idx, n, temperature=0, stop_id=stop)

    budget = 12
    assert score(completer(greedy(expert)), [fact], budget).value == 1.0
    assert score(completer(greedy(base)), [fact], budget).value == 0.0
    assert score(completer(lambda idx, n, stop: proxy.generate(idx, n, stop_id=stop)), [fact], budget).value == 1.0


def test_proxy_sweep_logits_are_the_combination_at_each_alpha(one_thread):
    base, expert, anti = tiny_gpt(0), tiny_gpt(1), tiny_gpt(2)
    idx = windows(2, 12, seed=3)
    models = {"base": base, "expert": expert, "anti": anti}
    out = sweep_logits(models, ("base", "expert", "anti"), {"p0": 0.0, "p1": 1.0, "p2": 2.0})(idx)
    b, e, a = (m(idx)[0][..., :259].float() for m in (base, expert, anti))
    assert torch.equal(out["p0"], b) and torch.equal(out["base"], b)
    assert torch.allclose(out["p1"], b + e - a) and torch.allclose(out["p2"], b + 2 * (e - a))
    # expert = anti: the proxy is the base at every strength, so it keeps exactly what the base knows
    same = sweep_logits({"base": base, "expert": expert, "anti": copy.deepcopy(expert)}, ("base", "expert", "anti"),
                        {"p2": 2.0})(idx)
    assert torch.equal(same["p2"], same["base"])


def save_checkpoint(model: GPT, path, kind: str = "byte") -> str:
    c = model.config
    hparams = {k: getattr(c, k) for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "activation",
                                          "mlp_ratio", "bias", "rotary")}
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "hyper_parameters": hparams,
         "datamodule_hyper_parameters": {"tokenizer": kind, "seed": 0, "source": "world", "families": None}},
        path,
    )
    return str(path)


def test_lamina_proxy_writes_its_report_and_refuses_other_tokenizers(tmp_path, one_thread):
    base = save_checkpoint(tiny_gpt(0, n_layer=1, block_size=128), tmp_path / "base.ckpt")
    expert = save_checkpoint(tiny_gpt(1, n_layer=1, block_size=128), tmp_path / "expert.ckpt")
    summary = proxy_main(["--base", base, "--expert", expert, "--anti", expert, "--items", "3",
                          "--out", str(tmp_path / "out")])
    written = json.loads((tmp_path / "out" / "proxy.json").read_text())
    assert written["results"]["proxy"]["eval/facts/one_hop"]["n"] == 3
    # expert = anti: the proxy answers as the base does, item for item
    contrast = summary["paired"]["eval/facts/two_hop"]["proxy_vs_base"]
    assert contrast["only_first"] == contrast["only_second"] == 0
    assert "| eval/facts/one_hop | proxy |" in (tmp_path / "out" / "proxy.md").read_text()

    wider = GPT(GPTConfig(vocab_size=300, block_size=128, n_layer=1, n_head=2, n_embd=32))
    other = save_checkpoint(wider, tmp_path / "wider.ckpt")
    with pytest.raises(ConfigError, match=r"^--expert: expected the tokenizer .*vocab_size 300 there, 259 here"):
        proxy_main(["--base", base, "--expert", other, "--anti", expert])
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)  # a run folder: its tokenizer.json beside checkpoints/
    (tmp_path / "run" / "tokenizer.json").write_text(byte_tokenizer().to_str())
    bpe = save_checkpoint(tiny_gpt(1, n_layer=1), tmp_path / "run" / "checkpoints" / "bpe.ckpt", kind="bpe")
    with pytest.raises(ConfigError, match=r"^--anti: .*data.tokenizer 'bpe' there, 'byte' here"):
        proxy_main(["--base", base, "--expert", expert, "--anti", bpe])
    with pytest.raises(ConfigError, match="^lamina proxy: the following arguments are required"):
        proxy_main(["--base", base])
    with pytest.raises(ConfigError, match="^--items: expected an integer >= 1"):
        proxy_main(["--base", base, "--expert", expert, "--anti", expert, "--items", "0"])
    with pytest.raises(ConfigError, match="^--base: no such checkpoint file"):
        proxy_main(["--base", str(tmp_path / "none.ckpt"), "--expert", expert, "--anti", expert])
    assert load_gpt(bpe, "--anti").tokenizer_file.endswith("tokenizer.json")


# ---- restoring blocks ------------------------------------------------------------------------


def test_restoring_blocks_puts_back_those_blocks_and_nothing_else(one_thread):
    assert halves(4) == ((0, 1), (2, 3)) and halves(5) == ((0, 1), (3, 4)) and halves(2) == ((0,), (1,))
    with pytest.raises(ConfigError, match="^model.n_layer: expected at least 2 blocks"):
        halves(1)
    reference, tuned = tiny_gpt(0, n_layer=4), tiny_gpt(1, n_layer=4)
    lower = restored(tuned, reference, halves(4)[0])
    for name, p in lower.named_parameters():
        source = reference if name.startswith(("transformer.h.0.", "transformer.h.1.")) else tuned
        assert torch.equal(p, dict(source.named_parameters())[name]), name
    assert not torch.equal(lower.transformer.wte.weight, reference.transformer.wte.weight)  # embeddings stay tuned
    idx = windows(2, 16)
    # nothing fine-tuned: every restoration is the model itself, logit for logit
    for blocks in halves(4):
        assert torch.equal(restored(reference, reference, blocks)(idx)[0], reference(idx)[0])
    # every block and the embeddings put back: the reference
    everything = restored(tuned, reference, range(4))
    everything.load_state_dict({**everything.state_dict(), **{k: v for k, v in reference.state_dict().items()
                                                              if not k.startswith("transformer.h.")}})
    assert torch.equal(everything(idx)[0], reference(idx)[0])
    with pytest.raises(ConfigError, match="^restore: expected a reference of the tuned model's shape"):
        restored(tuned, tiny_gpt(2, n_layer=2), [0])


def test_restoring_the_corrupted_block_brings_the_planted_fact_back(one_thread):
    """A model that knows a fact, with its lower block overwritten (what a harmful fine-tuning of the
    lower layers would do): putting the lower block back restores the fact; the upper one does not."""
    fact = ChoiceItem("Q: Where does Mira live? A:", (" Osk.\n", " Brill.\n", " Dun.\n", " Vale.\n"), 0)
    knows = taught(tiny_gpt(3, n_layer=2), fact.prompt + fact.choices[0], steps=60)
    broken = copy.deepcopy(knows)
    broken.transformer.h[0].load_state_dict(tiny_gpt(9, n_layer=2).transformer.h[0].state_dict())
    lower, upper = halves(2)
    arms = {"base": knows, "finetuned": broken, "lower": restored(broken, knows, lower),
            "upper": restored(broken, knows, upper)}
    tok = byte_tokenizer()
    scores = continuation_log_probs(model_logits(arms), [(fact.prompt, c) for c in fact.choices], tok, EOT, 64,
                                    torch.device("cpu"))
    assert scores["lower"] == scores["base"]  # the very model
    assert max(scores["base"]) == scores["base"][0] and scores["lower"][0] - scores["upper"][0] > 1.0


# ---- the callback in a real (tiny) fit --------------------------------------------------------


def test_drift_and_retention_log_in_a_fit_from_init_from_and_leave_training_alone(tmp_path, one_thread):
    import lightning as L
    from lightning.pytorch.loggers import Logger

    from lamina.data import TextDataModule
    from lamina.finetune.retention import Retention
    from lamina.lm import LanguageModel

    class Recorder(Logger):
        name, version = "recorder", 0

        def __init__(self):
            super().__init__()
            self.rows = []

        def log_hyperparams(self, params, *args, **kwargs):
            pass

        def log_metrics(self, metrics, step=None):
            self.rows.append((step, dict(metrics)))

    start = save_checkpoint(tiny_gpt(5, n_layer=1, block_size=32), tmp_path / "start.ckpt")

    def fit(callbacks):
        L.seed_everything(3)
        module = LanguageModel(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=259, lr=1e-2,
                               warmup_steps=0, init_from=start)
        data = TextDataModule(source="world", block_size=32, batch_size=4, max_bytes=60_000, val_tokens=2048,
                              cache_dir=str(tmp_path / "cache"))
        recorder = Recorder()
        trainer = L.Trainer(
            max_steps=2, accelerator="cpu", devices=1, logger=recorder, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
            callbacks=callbacks,
        )
        trainer.fit(module, datamodule=data)
        return recorder, module

    recorder, measured = fit([drift_mod.Drift(every_n_steps=1, probe_tokens=256, fact_contexts=1),
                              Retention(enabled=True, every_n_steps=2, items=3)])
    drift = {step: m for step, m in recorder.rows if "drift/layer0/cka" in m}
    assert sorted(drift) == [0, 1, 2]
    assert drift[0]["drift/layer0/cka"] == pytest.approx(1.0, abs=1e-9) and drift[0]["drift/layer0/weights"] == 0.0
    assert drift[2]["drift/layer0/weights"] > 0.0
    for tag in ("cka_init", "cka_floor", "cka_mlp", "weights_init", "probe_acc", "probe_acc_ref", "probe_acc_control"):
        assert f"drift/layer{0}/{tag}" in drift[2]
    facts = {step: m for step, m in recorder.rows if "eval/facts/one_hop" in m}
    assert sorted(facts) == [0, 2] and facts[2]["eval/facts/two_hop/n"] == 3.0

    _, plain = fit([])  # measuring never changes training
    for (name, a), b in zip(measured.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match="^drift.every_n_steps: expected an integer >= 1"):
        drift_mod.Drift(every_n_steps=0)
