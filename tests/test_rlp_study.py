"""RLP that can show its effect, each mechanism on a case whose answer is known by
construction: reasoning stripped from the text (`data.thoughts`), thought slots (`model.rlp.positions`),
K-token and line rewards (`reward_tokens`), the shuffled-reward control, the thought rules and cap,
evaluations in the corpus's own format with paired intervals, pass@k and the elicitation share."""

from __future__ import annotations

import math
import random
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from lamina.data import TextDataModule, world
from lamina.data.thoughts import (
    LONGEST_THOUGHT_TOKENS,
    TWO_HOP_THOUGHT_TOKENS,
    ThoughtSlots,
    longest_thought_tokens,
    measure_longest_thoughts,
    strip_thoughts,
    thought_tokens,
    two_hop_questions,
)
from lamina.data.tokenizer import byte_tokenizer, train_bpe
from lamina.errors import ConfigError
from lamina.model import GPT, GPTConfig, KVCache
from lamina.rlp import (
    PROMPT_FORMATS,
    FormatScorer,
    RLPConfig,
    ThoughtEvalConfig,
    ThoughtEvaluator,
    ThoughtRules,
    arith_problems,
    arith_prompt,
    arith_stratum,
    best_format,
    choose_k,
    corpus_questions,
    decode,
    elicitation_share,
    elicited_share,
    format_prompt,
    halves,
    mean_pass,
    leave_one_out_advantages,
    outside_thoughts,
    paired_interval,
    pass_at_k,
    rlp_step,
    shuffled_rewards,
    step_generator,
)
from lamina.rlp.module import PROGRESS_BAR, RLPModel

THINK, END_THINK, EOT = 257, 258, 256
RULES = ThoughtRules(THINK, END_THINK, EOT)
BYTES = byte_tokenizer()


def tiny_gpt(seed: int = 0, block_size: int = 64) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=259, block_size=block_size, n_layer=2, n_head=2, n_embd=32))


def perturbed(model: GPT, scale: float = 0.05, seed: int = 1) -> GPT:
    other = GPT(model.config)
    other.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other.requires_grad_(False)


def world_examples(n: int, seed: int = 0, **filters) -> list[str]:
    examples = world.generate(seed, **filters)
    return [next(examples).text for _ in range(n)]


def stream(texts: list[str], tokenizer) -> tuple[list[int], str]:
    """Documents joined as the packer joins them (<|endoftext|> between), as ids and as text."""
    text = "<|endoftext|>".join(texts)
    return tokenizer.encode(text).ids, text


# ---- 1. reasoning left out of the text ------------------------------------------------------------


def test_strip_removes_exactly_the_spans():
    with_spans = 0
    for kept in world_examples(3000):
        stripped, slots = strip_thoughts(kept)
        assert "<think>" not in stripped and "</think>" not in stripped
        if " <think> " not in kept:
            assert stripped == kept and slots == []  # bytes elsewhere identical
            continue
        with_spans += 1
        question, rest = kept.split(" <think> ", 1)
        after = rest.split(" </think>", 1)[1]
        assert stripped == question + after  # the kept text minus the span (and its leading space)
        assert slots == [len(question)] and stripped[len(question) :].startswith(" A: ")
        assert after.rstrip("\n").endswith(kept.rstrip("\n").rsplit(" A: ", 1)[1])  # the answer intact
        if re.match(r"Q: [0-9+\-*]+=\?", kept):
            assert re.fullmatch(r"Q: [0-9+\-*]+=\? A: \d+\n", stripped)  # reads as a plain question
        else:
            assert re.fullmatch(r"Q: [^?]+\? A: [^\n]+\.\n", stripped)
    assert with_spans > 500
    # an unclosed <think> is no span; several spans go, each with its slot
    assert strip_thoughts("a <think> b") == ("a <think> b", [])
    assert strip_thoughts("x <think> 1 </think> y <think> 2 </think> z") == ("x y z", [1, 3])


def test_data_thoughts_strip_builds_its_own_cache(tmp_path):
    common = dict(batch_size=2, block_size=32, max_bytes=60_000, val_tokens=256, cache_dir=str(tmp_path),
                  families=["arith", "prose"])
    built = {}
    for mode in ("keep", "strip"):
        dm = TextDataModule(thoughts=mode, **common)
        dm.prepare_data()
        dm.setup("fit")
        built[mode] = dm
    kept, stripped = (np.asarray(built[m].train_data) for m in ("keep", "strip"))
    assert (kept == THINK).sum() > 100 and not (stripped == THINK).any() and not (stripped == END_THINK).any()
    assert built["keep"].cache_path != built["strip"].cache_path
    with pytest.raises(ConfigError, match=r"^data\.thoughts: expected one of keep, strip, got 'drop'$"):
        TextDataModule(thoughts="drop", **common)


# ---- 2. thoughts where they count ----------------------------------------------------------------


def test_two_hop_questions_are_all_and_only_the_worked_ones():
    questions = two_hop_questions()
    rng = random.Random(3)
    for _ in range(3000):
        worked = world.prose_question_two_hop(rng)
        assert worked[3 : worked.index(" <think>")] in questions
        plain = world.prose_question_one_hop(rng)
        assert plain[3 : plain.index(" A: ")] not in questions


def expected_slot_tokens(texts: list[str], tokenizer) -> tuple[list[int], set[int]]:
    """Token ids of the stripped stream and the indices of its slot tokens, from the strip offsets
    and the tokenizer's own character offsets (not from ThoughtSlots' byte table)."""
    ids, text = stream([strip_thoughts(t)[0] for t in texts], tokenizer)
    offsets = tokenizer.encode(text).offsets
    start_of = {start: i for i, (start, _) in enumerate(offsets)}
    slots, position = set(), 0
    for t in texts:
        stripped, slot = strip_thoughts(t)
        for s in slot:
            slots.add(start_of[position + s])  # every slot begins a token
        position += len(stripped) + len("<|endoftext|>")
    return ids, slots


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_thought_slots_are_found_in_tokens(kind):
    texts = world_examples(400, seed=2, families=("arith", "prose"))
    tokenizer = BYTES if kind == "byte" else train_bpe([strip_thoughts(t)[0] for t in texts * 3], 400)
    ids, slots = expected_slot_tokens(texts, tokenizer)
    assert len(slots) > 100
    finder = ThoughtSlots(tokenizer)
    width = 48
    found_any = 0
    for begin in range(0, len(ids) - width, 37):
        window = torch.tensor([ids[begin : begin + width]])
        found = set(finder(window)[0].nonzero().squeeze(1).tolist())
        text = tokenizer.decode(window[0].tolist(), skip_special_tokens=False)
        # a slot counts where its whole question line is in the window: "Q: " before it, no line break between
        whole = {t - begin for t in slots if begin <= t < begin + width}
        whole = {t for t in whole if "Q: " in tokenizer.decode(window[0, :t].tolist(), skip_special_tokens=False)
                 .rsplit("\n", 1)[-1].split("<|endoftext|>")[-1]}
        assert found == whole, text
        found_any += len(found)
    assert found_any > 50


def test_thought_slots_pick_only_slot_positions():
    texts = world_examples(300, seed=4, families=("arith", "prose"))
    ids, slots = expected_slot_tokens(texts, BYTES)
    T = 64
    starts = list(range(0, len(ids) - T - 1, 50))[:8]
    windows = torch.tensor([ids[s : s + T + 1] for s in starts])
    config = RLPConfig(group_size=2, max_thought_tokens=4, positions="thought_slots", positions_per_doc=2,
                       context_tokens=12)
    policy = tiny_gpt(block_size=T)
    step = rlp_step(policy, perturbed(policy), windows[:, :-1], windows[:, 1:], config, THINK, END_THINK,
                    generator=torch.Generator().manual_seed(0), eot_id=EOT, slots=ThoughtSlots(BYTES))
    assert step.positions.numel() >= 4
    for row, t, context in zip(step.rows.tolist(), step.positions.tolist(), step.contexts):
        assert starts[row] + t in slots
        assert BYTES.decode(context.tolist(), skip_special_tokens=False).endswith("?")
    assert (step.targets[:, 0] == ord(" ")).all() and (step.targets.size(1) == 1)


def test_uniform_positions_are_never_on_or_inside_a_thought():
    ids, _ = stream(world_examples(300, seed=4, families=("arith", "prose")), BYTES)  # kept text: thoughts
    T = 64
    windows = torch.tensor([ids[s : s + T + 1] for s in range(0, 3000, 97)][:16])
    inside = ~outside_thoughts(windows, THINK, END_THINK) | (windows == THINK)
    assert inside.float().mean() > 0.2  # the case has thoughts to avoid
    policy = tiny_gpt(block_size=T)
    step = rlp_step(policy, perturbed(policy), windows[:, :-1], windows[:, 1:],
                    RLPConfig(group_size=2, max_thought_tokens=4, positions_per_doc=8, context_tokens=12),
                    THINK, END_THINK,
                    generator=torch.Generator().manual_seed(1), eot_id=EOT)
    assert step.positions.numel() > 16
    assert not inside[step.rows, step.positions].any()


def test_outside_thoughts_by_hand():
    A, B = 65, 66
    row = torch.tensor([[A, END_THINK, A, THINK, B, B, END_THINK, A, THINK, B]])  # starts inside a thought
    assert outside_thoughts(row, THINK, END_THINK)[0].tolist() == [False, False, True, False, False, False, False,
                                                                   True, False, False]


# ---- 3. a reward that can see the answer ----------------------------------------------------------


def logprob(model: GPT, ids: list[int], target: int) -> torch.Tensor:
    with torch.no_grad():
        return F.log_softmax(model.eval()(torch.tensor([ids]))[0][0, -1].float(), -1)[target]


def test_reward_over_k_tokens_is_the_sum_of_per_token_gains():
    K = 3
    policy = tiny_gpt()
    ema = perturbed(policy)
    x = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))
    y = torch.cat((x[:, 1:], torch.randint(0, 256, (2, 1))), 1)
    config = RLPConfig(group_size=3, max_thought_tokens=5, temperature=1.0, reward_tokens=K)
    step = rlp_step(policy, ema, x, y, config, THINK, END_THINK, generator=step_generator(0, 0, 0, "cpu"), eot_id=EOT)
    assert step.targets.shape == (2, K)
    G = config.group_size
    for r in range(step.thoughts.tokens.size(0)):
        g = r // G
        context, targets = step.contexts[g].tolist(), step.targets[g].tolist()
        thought = step.thoughts.tokens[r, : int(step.thoughts.lengths[r])].tolist()
        gain = sum(
            logprob(policy, context + [THINK] + thought + targets[:k], targets[k])
            - logprob(ema, context + targets[:k], targets[k])
            for k in range(K)
        )
        torch.testing.assert_close(step.parts.rewards.view(-1)[r], gain, atol=1e-4, rtol=1e-4)


def test_reward_over_the_line_stops_at_its_end():
    text = b"Q: 12+34=? A: 46\nQ: 5+5=? A: 10\n"
    ids = torch.tensor([list(text)] * 2)
    t = text.index(b" A: 46")
    at_t = lambda w: torch.arange(w.size(1)).eq(t).expand_as(w)  # noqa: E731 - one slot, by hand
    config = RLPConfig(group_size=2, max_thought_tokens=3, positions="thought_slots", reward_tokens="line",
                       reward_line_max_tokens=10, context_tokens=8)
    policy, ema = tiny_gpt(), perturbed(tiny_gpt())
    step = rlp_step(policy, ema, ids[:, :-1], ids[:, 1:], config, THINK, END_THINK,
                    generator=torch.Generator().manual_seed(0), eot_id=EOT, line_end_ids=[ord("\n"), EOT], slots=at_t)
    assert bytes(step.targets[0].tolist()) == b" A: 46\nQ: "
    assert step.weights[0].tolist() == [1.0] * 7 + [0.0] * 3  # " A: 46\n", its line break included
    context, targets = step.contexts[0].tolist(), step.targets[0].tolist()
    for r in range(2):  # the reward is the gain over those 7 tokens only
        thought = step.thoughts.tokens[r, : int(step.thoughts.lengths[r])].tolist()
        gain = sum(logprob(policy, context + [THINK] + thought + targets[:k], targets[k])
                   - logprob(ema, context + targets[:k], targets[k]) for k in range(7))
        torch.testing.assert_close(step.parts.rewards.view(-1)[r], gain, atol=1e-4, rtol=1e-4)


# ---- 4. controls: shuffled rewards, thought rules, the thought cap ---------------------------------


def test_shuffled_rewards_are_a_permutation_across_groups():
    rewards = torch.arange(40.0).view(8, 5)
    out = shuffled_rewards(rewards, torch.Generator().manual_seed(0))
    assert torch.equal(out.flatten().sort().values, rewards.flatten())
    for g in range(8):  # each group gets another group's rewards, none its own
        source = int(out[g, 0]) // 5
        assert source != g and torch.equal(out[g].sort().values, rewards[source])
    one = shuffled_rewards(torch.arange(16.0).view(1, 16), torch.Generator().manual_seed(0))  # one group: within it
    assert torch.equal(one.sort().values, torch.arange(16.0).view(1, 16)) and not torch.equal(one, torch.arange(16.0)[None])


def test_shuffled_rewards_carry_no_information_about_the_thought():
    """A built case where the reward is the thought's length: info_gain's advantages follow the
    length, the shuffled ones do not."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 30, (400, 8), generator=g).float()
    rewards = 0.1 * lengths + 0.05 * torch.randn(400, 8, generator=g)

    def correlation(advantages):
        return float(np.corrcoef(advantages.flatten(), lengths.flatten())[0, 1])

    assert correlation(leave_one_out_advantages(rewards)) > 0.9
    shuffled = correlation(leave_one_out_advantages(shuffled_rewards(rewards, g)))
    assert abs(shuffled) < 3 / math.sqrt(lengths.numel())  # 3 standard errors of a zero correlation


def test_shuffled_step_permutes_the_info_gain_of_the_same_step():
    policy = tiny_gpt()
    ema = perturbed(policy)
    x = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(2))
    y = torch.cat((x[:, 1:], x[:, :1]), 1)
    steps = {
        reward: rlp_step(policy, ema, x, y, RLPConfig(group_size=4, max_thought_tokens=4, reward=reward), THINK,
                         END_THINK, generator=step_generator(0, 0, 0, "cpu"), eot_id=EOT)
        for reward in ("info_gain", "shuffled")
    }
    info, shuffled = steps["info_gain"].parts, steps["shuffled"].parts
    torch.testing.assert_close(shuffled.info_gain, info.rewards)  # same thoughts, same scores
    assert torch.equal(shuffled.rewards.flatten().sort().values, info.rewards.flatten().sort().values)
    assert not torch.equal(shuffled.rewards, info.rewards)
    assert steps["shuffled"].flops == steps["info_gain"].flops  # same compute


def test_thoughts_keep_to_the_rules():
    """A policy that prefers the end of text, <think> and </think> above all still writes thoughts of
    at least one token holding none of the first two; its log pi is that of the masked distribution."""
    policy = tiny_gpt()
    bias = torch.zeros(policy.lm_head.out_features)
    bias[[EOT, THINK, END_THINK]] = 8.0
    handle = policy.lm_head.register_forward_hook(lambda module, args, out: out + bias)
    try:
        x = torch.randint(0, 256, (3, 64), generator=torch.Generator().manual_seed(0))
        step = rlp_step(policy, perturbed(policy), x, x, RLPConfig(group_size=4, max_thought_tokens=6, temperature=1.0),
                        THINK, END_THINK, generator=torch.Generator().manual_seed(0), eot_id=EOT)
    finally:
        handle.remove()
    t = step.thoughts
    assert (t.lengths >= 2).all() and (t.lengths == 2).float().mean() > 0.9  # one token, then </think> at once
    for r in range(t.tokens.size(0)):
        body = t.tokens[r, : int(t.lengths[r]) - 1]
        assert not torch.isin(body, torch.tensor([EOT, THINK, END_THINK])).any()
    assert torch.isfinite(step.loss)  # log pi is finite on every trained token: no banned token was sampled


def test_thought_cap_holds_the_longest_worked_thought():
    measured = measure_longest_thoughts(seed=5, n=3000)
    for level in world.ARITH_LEVELS:
        assert measured[level] <= LONGEST_THOUGHT_TOKENS[level]
    assert measured["two_hop"] <= TWO_HOP_THOUGHT_TOKENS
    assert measured[4] >= 0.9 * LONGEST_THOUGHT_TOKENS[4]  # the table is not loose either
    assert thought_tokens("Q: 1+2=? <think> 1+2=3. </think> A: 3") == [len(" 1+2=3. ") + 1]
    assert longest_thought_tokens(("arith",), [1, 2]) == 37
    assert longest_thought_tokens(("arith", "prose"), [1, 2]) == TWO_HOP_THOUGHT_TOKENS
    assert longest_thought_tokens(("strings",), None) == 32  # no worked thoughts: today's cap
    assert RLPConfig().thought_cap == LONGEST_THOUGHT_TOKENS[5]
    assert ThoughtEvalConfig(levels=[1, 2, 3, 4]).thought_budget == LONGEST_THOUGHT_TOKENS[4]


def test_bad_new_keys_are_named():
    for key, value, expected in [
        ("positions", "random", "one of uniform, thought_slots"),
        ("reward_tokens", 0, "an integer >= 1 or line"),
        ("reward_tokens", "sentence", "an integer >= 1 or line"),
        ("reward", "random", "one of info_gain, shuffled"),
        ("max_thought_tokens", 0, "null or an integer >= 1"),
        ("reward_line_max_tokens", 0, "an integer >= 1"),
    ]:
        with pytest.raises(ConfigError, match=rf"^model\.rlp\.{key}: expected {expected}, got {value!r}$"):
            RLPConfig(**{key: value})
    with pytest.raises(ConfigError, match=r"^thought_eval\.pass_at: expected integers in \[1, pass_samples=8\]"):
        ThoughtEvalConfig(pass_samples=8, pass_at=[1, 16])
    with pytest.raises(ConfigError, match=r"model\.rlp\.context_tokens: .* 3 scored token\(s\) do not fit"):
        RLPConfig(max_thought_tokens=20, reward_tokens=3).context_length(24)


# ---- 5. evaluations with power --------------------------------------------------------------------


def test_prompts_are_in_the_corpus_format():
    question = "Q: 47+38=?"

    def text(think, thoughts):
        return BYTES.decode(arith_prompt(BYTES, question, think, thoughts, THINK), skip_special_tokens=False)

    assert text(True, "keep") == "Q: 47+38=? <think>"
    assert text(False, "keep") == "Q: 47+38=? <think> </think> A:"
    assert text(False, "strip") == "Q: 47+38=? A:"
    assert text(True, "strip") == "Q: 47+38=?<think>"
    kept = world_examples(200, families=("arith",))
    assert all(k.startswith(k.split(" <think>")[0] + " <think> ") for k in kept)  # the keep prompts' lines
    assert all(strip_thoughts(k)[0].startswith(k.split(" <think>")[0] + " A: ") for k in kept)  # the strip ones
    # every format by name; each (data.thoughts, thinking) pair is one of them
    assert {f: BYTES.decode(format_prompt(BYTES, question, f, THINK), skip_special_tokens=False)
            for f in PROMPT_FORMATS} == {"think": "Q: 47+38=?<think>", "think-spaced": "Q: 47+38=? <think>",
                                         "answer": "Q: 47+38=? A:", "empty-thought": "Q: 47+38=? <think> </think> A:"}
    with pytest.raises(ConfigError, match=r"^prompt format: expected one of think, think-spaced, answer, "
                       r"empty-thought, got 'thonk'$"):
        format_prompt(BYTES, question, "thonk", THINK)


def test_paired_interval_is_the_t_interval_of_the_differences():
    d = np.array([1, 0, 0, 1, 1, 0, -1, 1, 0, 1], dtype=float)
    mean, lo, hi = paired_interval(d)
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert mean == pytest.approx(0.4) and lo == pytest.approx(low) and hi == pytest.approx(high)
    assert math.isnan(paired_interval([1.0])[1])


def test_decode_batches_prompts_of_any_length_exactly():
    model = tiny_gpt().eval()
    prompts = [list(range(40, 40 + n)) for n in (3, 7, 5, 7)]
    together, lengths = decode(model, prompts, 9, 0.0, stop_ids=[10], compact=True)
    for row, prompt in enumerate(prompts):
        alone, n = decode(model, torch.tensor([prompt]), 9, 0.0, stop_ids=[10])
        assert int(lengths[row]) == int(n[0])
        assert together[row, : int(n[0])].tolist() == alone[0, : int(n[0])].tolist()
    # equal lengths, no rules: the same tokens and random numbers as GPT.generate
    same = torch.tensor(prompts[1::2])
    mine = decode(model, same, 6, 0.8, num_samples=3, generator=torch.Generator().manual_seed(4), stop_ids=[10])
    theirs = model.generate(same, 6, temperature=0.8, stop_id=[10], num_samples=3,
                            generator=torch.Generator().manual_seed(4))
    assert torch.equal(mine[1], theirs[1])
    for r in range(6):
        n = int(mine[1][r])
        assert torch.equal(mine[0][r, :n], theirs[0][r, :n])


# ---- 6. elicitation: pass@k ----------------------------------------------------------------------


def test_pass_at_k_estimator_is_unbiased():
    n = 64
    for p in (0.02, 0.1, 0.5):
        for k in (1, 4, 16, 64):
            expected = sum(stats.binom.pmf(c, n, p) * pass_at_k(n, c, k) for c in range(n + 1))
            assert expected == pytest.approx(1 - (1 - p) ** k, abs=1e-9)
    assert pass_at_k(10, 3, 4) == pytest.approx(1 - math.comb(7, 4) / math.comb(10, 4))
    assert pass_at_k(64, 0, 64) == 0 and pass_at_k(64, 1, 64) == 1


class SolvesWithRate(torch.nn.Module):
    """A scripted language model (byte tokens) that answers `Q: a+b=? <think>` with ` x</think> A: `,
    then the right sum with probability `rate`, else `#`, then a line break. The tokens it has seen
    ride in its KV cache, so that it decodes like a GPT."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate
        self.config = GPTConfig(vocab_size=259, block_size=64, n_layer=1, n_head=1, n_embd=4)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # (a device)

    def forward(self, idx, kv_cache: KVCache):
        history = idx if kv_cache.keys[0] is None else torch.cat((kv_cache.keys[0][:, 0, :, 0].long(), idx), 1)
        kv_cache.update(0, idx[:, None, :, None].float(), idx[:, None, :, None].float())
        logits = torch.full((idx.size(0), 259), -1e9)
        for row, ids in enumerate(history.tolist()):
            text = bytes(i for i in ids if i < 256).decode()
            a, b = re.match(r"Q: (\d+)\+(\d+)=\?", text).groups()
            written = ids[ids.index(THINK) + 1 :]
            script = [ord("x"), END_THINK] + list(b" A: ")
            if len(written) < len(script):
                logits[row, script[len(written)]] = 0.0
            elif len(written) == len(script):
                logits[row, ord(str(int(a) + int(b))[0])] = math.log(self.rate)
                logits[row, ord("#")] = math.log(1 - self.rate)
            else:
                answer = bytes(w for w in written[len(script) :] if w < 256).decode()
                full = str(int(a) + int(b))
                nxt = full[len(answer)] if answer != "#" and len(answer) < len(full) else "\n"
                logits[row, ord(nxt)] = 0.0
        return logits[:, None, :].expand(-1, idx.size(1), -1), None


def test_pass_at_k_on_a_model_with_a_known_solve_rate():
    rate, n = 0.05, 64
    config = ThoughtEvalConfig(levels=[1], examples_per_level=100, pass_samples=n, pass_problems=100,
                               nll_positions=0, max_thought_tokens=4, batch_size=2048)
    evaluator = ThoughtEvaluator(config, BYTES, THINK, END_THINK, EOT, 64)
    metrics = evaluator.evaluate(SolvesWithRate(rate), pass_at_k=True)
    assert metrics["eval/arith_acc/level1"] == 0  # greedy picks `#`: never right
    for k in config.pass_at:
        truth = 1 - (1 - rate) ** k
        # each problem's estimate is unbiased; over 100 problems the spread is at most sqrt(truth (1 - truth) / 100)
        assert abs(metrics[f"eval/pass_at_{k}/level1"] - truth) < 4 * math.sqrt(truth * (1 - truth) / 100) + 1e-3, k
    record = evaluator.records[1]
    assert len(record["pass_correct"]) == 100 and record["pass_samples"] == n
    assert abs(np.mean(record["pass_correct"]) / n - rate) < 0.015


def test_elicitation_share_by_hand():
    rl = {1: {"questions": ["a", "b", "c", "d"], "think": [1, 1, 1, 0]}}
    base = {1: {"questions": ["a", "b", "c", "d"], "think": [0, 0, 0, 0], "pass_samples": 64,
                "pass_correct": [0, 5, 64, 10]}}
    assert elicitation_share(rl, base) == {1: (pytest.approx(2 / 3), 3)}  # b and c were already solved
    base[1]["pass_samples"] = 128
    share, count = elicitation_share(rl, base)[1]
    assert count == 3 and share == pytest.approx((0 + pass_at_k(128, 5, 64) + 1) / 3)
    with pytest.raises(ValueError, match="fewer than k=64"):
        elicitation_share(rl, {1: {**base[1], "pass_samples": 16}})


def test_progress_bar_shows_what_can_show_learning():
    lm = RLPModel(n_layer=2, n_head=2, n_embd=32, block_size=64, rlp=RLPConfig(group_size=2, max_thought_tokens=4))
    logged = {}
    lm.log = lambda name, value, prog_bar=False, **kw: logged.__setitem__(name, prog_bar)
    lm._step_lr = torch.tensor(0.1)
    lm._step_metrics = {name: torch.tensor(1.0) for name in ("reward_mean", *PROGRESS_BAR)}
    lm.log_step(torch.tensor(0.0))
    assert {name for name, bar in logged.items() if bar} == {f"rlp/{n}" for n in PROGRESS_BAR}
    assert not logged["rlp/reward_mean"]


def rlp_model_with_data(**data_hparams):
    lm = RLPModel(n_layer=2, n_head=2, n_embd=32, block_size=64, rlp=RLPConfig(group_size=2, positions="thought_slots"))
    datamodule = SimpleNamespace(think_id=THINK, end_think_id=END_THINK, eot_id=EOT, tokenizer=BYTES,
                                 hparams=data_hparams)
    lm._trainer = SimpleNamespace(datamodule=datamodule)  # what on_fit_start reads
    return lm


def test_fit_start_resolves_the_cap_and_checks_the_slots():
    def cap(**data):
        lm = rlp_model_with_data(**data)
        return lm._resolved_thought_cap(lm.rlp_config).max_thought_tokens

    assert cap(source="world") == LONGEST_THOUGHT_TOKENS[5]  # every level trains
    assert cap(source="world", families=["arith"], levels=[1, 2]) == 37
    assert cap(source="world", families=["prose", "strings"]) == TWO_HOP_THOUGHT_TOKENS
    assert cap(source="notes.txt") == 32  # no worked thoughts known: today's cap
    with pytest.raises(ConfigError, match=r"^model\.rlp\.positions: thought_slots needs data\.thoughts: strip"):
        rlp_model_with_data(thoughts="keep")._think_ids()
    assert isinstance(rlp_model_with_data(thoughts="strip")._think_ids()["slots"], ThoughtSlots)


# ---- 7. held-out problems, formats, the choice of k and the difficulty-matched null ------------------


def test_corpus_questions_are_every_question_of_the_text_as_the_cap_counts_it():
    data = dict(source="world", seed=5, families=["arith", "prose"], levels=[1, 2], max_bytes=30_000)
    kept = corpus_questions({**data, "thoughts": "keep"})
    by_hand, taken = set(), 0
    for example in world.generate(5, ("arith", "prose"), levels=[1, 2]):  # the same stream, bytes counted as kept
        taken += len(example.text.encode())
        if taken > 30_000:
            break
        if example.family == "arith":
            by_hand.add(example.text.split(" <think>")[0])
    assert by_hand <= kept and len(kept - by_hand) <= 1  # (the passage the cap cuts may add its question)
    stripped = corpus_questions({**data, "thoughts": "strip"})
    assert kept < stripped and len(stripped) > 1.3 * len(kept)  # the same cap holds more stripped problems
    # problems held out of that text: none of them in it, and all of them otherwise what arith_problems draws
    held = arith_problems(9, 2, 40, frozenset(stripped))
    assert len(held) == 40 and not {q for q, _ in held} & stripped
    assert set(held) <= set(arith_problems(9, 2, 4000))


def test_format_scorer_counts_what_a_model_with_a_known_rate_solves():
    rate, n = 0.25, 32
    problems = arith_problems(1_000_003, 1, 60)
    scorer = FormatScorer(BYTES, THINK, END_THINK, EOT, problems, thought_budget=4, batch_size=2048)
    greedy = scorer.greedy(SolvesWithRate(rate), ("think", "think-spaced"))
    assert greedy == {"think": [0] * 60, "think-spaced": [0] * 60}  # greedy picks `#`: never right
    assert scorer.greedy(SolvesWithRate(0.75), ("think",))["think"] == [1] * 60  # greedy picks the sum
    counts = scorer.sampled(SolvesWithRate(rate), "think", n, seed=3)
    assert len(counts) == 60 and all(0 <= c <= n for c in counts)
    assert abs(np.mean(counts) / n - rate) < 4 * math.sqrt(rate * (1 - rate) / (60 * n))
    assert scorer.sampled(SolvesWithRate(rate), "think", n, seed=3) == counts  # seeded
    # an untrained network is at chance (0) in every format: the floor the study's gate stops at
    untrained = FormatScorer(BYTES, THINK, END_THINK, EOT, problems[:8], thought_budget=6, batch_size=64)
    assert all(sum(v) == 0 for v in untrained.greedy(tiny_gpt(block_size=64)).values())


def test_choice_and_score_halves_best_format_and_k_by_hand():
    assert halves(7) == ([1, 3, 5], [0, 2, 4, 6])
    # best format on given problems; a tie goes to the first in PROMPT_FORMATS
    outcomes = {"answer": [1, 1, 0, 0], "think": [0, 1, 0, 1], "think-spaced": [1, 1, 1, 0]}
    assert best_format(outcomes, [1, 3]) == "think" and best_format(outcomes, [0, 2]) == "think-spaced"
    assert best_format(outcomes, [1]) == "think"  # three at 1.0: think comes first
    # pass@k of 8 samples: mean over problems by hand; k closest to 0.5
    counts = [0, 1, 2, 8]
    assert mean_pass(counts, 8, 1) == pytest.approx((0 + 1 / 8 + 2 / 8 + 1) / 4)
    assert mean_pass(counts, 8, 2) == pytest.approx((0 + pass_at_k(8, 1, 2) + pass_at_k(8, 2, 2) + 1) / 4)
    values = {k: abs(mean_pass(counts, 8, k) - 0.5) for k in range(1, 9)}
    assert choose_k(counts, 8) == min(values, key=values.get)
    assert choose_k([8, 8, 8], 8) == 1 and choose_k([0, 0, 0], 8) == 1  # every k alike: the smallest
    with pytest.raises(ValueError):
        choose_k([], 8)


def test_arith_stratum_reads_the_worked_columns():
    assert arith_stratum("Q: 47+58=?") == "+ 1 regrouping, 3-digit answer"  # 7+8 carries; 4+5+1 writes 10
    assert arith_stratum("Q: 12+34=?") == "+ 0 regroupings, 2-digit answer"
    assert arith_stratum("Q: 52-38=?") == "- 1 regrouping, 2-digit answer"  # 2-8 borrows
    assert arith_stratum("Q: 7*8=?") == "* 0 regroupings, 2-digit answer"
    assert arith_stratum("Q: 9+3-5=?") == "+- 1 regrouping, 1-digit answer"  # 9+3=12 writes 12; 12-5 borrows
    with pytest.raises(ValueError, match="arith_stratum"):
        arith_stratum("Q: What does Mira's pet eat?")


def test_elicited_share_and_its_difficulty_matched_null_by_hand():
    # two strata: A (reach 0.8, 0.4) and B (reach 0.1, 0.3); gained: the 0.8 of A and the 0.1 of B
    got = elicited_share([True, False, True, False], [0.8, 0.4, 0.1, 0.3], ["A", "A", "B", "B"])
    assert got["share"] == pytest.approx((0.8 + 0.1) / 2)
    assert got["matched"] == pytest.approx((0.6 + 0.2) / 2)  # each gained problem's stratum mean
    assert got["unmatched"] == pytest.approx(0.4) and (got["gained"], got["missed"]) == (2, 4)
    assert math.isnan(elicited_share([False, False], [0.5, 0.5], ["A", "B"])["share"])  # nothing gained
    with pytest.raises(ValueError):
        elicited_share([True], [0.5, 0.1], ["A", "A"])


def test_the_matched_null_takes_out_easiness_and_keeps_reach():
    """Built per-problem worlds: the base's chance of a right sample is the problem's stratum's
    ease plus a part of its own. Where RL's gains follow the stratum alone (the confound: easier
    problems are both gained more and reached more), the unmatched null is beaten and the matched
    one is not; where they follow the base's own reach, both are."""
    rng = np.random.default_rng(0)
    strata = [f"s{i % 6}" for i in range(4000)]
    ease = {f"s{j}": e for j, e in enumerate((-2.0, -1.0, -0.5, 0.0, 0.5, 1.0))}
    own = rng.normal(0, 1.0, 4000)
    p = 1 / (1 + np.exp(-(np.array([ease[s] for s in strata]) + own)))
    counts = rng.binomial(16, p)
    reach = [pass_at_k(16, int(c), 2) for c in counts]
    by_stratum = {s: 1 / (1 + math.exp(-e)) for s, e in ease.items()}
    confound = elicited_share(list(rng.random(4000) < 0.5 * np.array([by_stratum[s] for s in strata])), reach, strata)
    assert confound["share"] - confound["unmatched"] > 0.05  # the old null: fooled by easiness
    assert abs(confound["share"] - confound["matched"]) < 0.02  # the matched one: nothing beyond it
    elicits = elicited_share(list(rng.random(4000) < 0.5 * p), reach, strata)
    assert elicits["share"] - elicits["matched"] > 0.05
