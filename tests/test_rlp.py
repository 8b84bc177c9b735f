"""RLP (lamina.rlp, RLPModel): rewards, advantages, clipped loss, gradients, EMA, controls, evaluations,
the package's names, and an end-to-end `lamina fit` from a checkpoint with a resume that keeps the EMA
model. Tiny models only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lamina.callbacks import ThoughtEval
from lamina.cli import LaminaCLI, cli_kwargs, main
from lamina.data import TextDataModule
from lamina.data.tokenizer import byte_tokenizer
from lamina.errors import ConfigError
from lamina.lm import LanguageModel
from lamina.model import GPT, GPTConfig
from lamina.rlp import (
    RLPConfig,
    RLPModel,
    ThoughtEvalConfig,
    ThoughtEvaluator,
    ThoughtRules,
    Thoughts,
    arith_problems,
    clipped_policy_loss,
    ema_model,
    ema_update,
    leave_one_out_advantages,
    rlp_loss,
    rlp_step,
    sample_thoughts,
    step_generator,
)

THINK, END_THINK, EOT = 257, 258, 256
RULES = ThoughtRules(THINK, END_THINK, EOT)
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def tiny_gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    config = dict(vocab_size=259, block_size=32, n_layer=2, n_head=2, n_embd=32)
    return GPT(GPTConfig(**{**config, **overrides}))


def perturbed(model: GPT, scale: float = 0.02, seed: int = 1) -> GPT:
    other = ema_model(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other


def batch(B: int = 3, T: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    window = torch.randint(0, 256, (B, T + 1), generator=torch.Generator().manual_seed(seed))
    return window[:, :-1], window[:, 1:]


def small_config(**overrides) -> RLPConfig:
    return RLPConfig(**{**dict(group_size=4, max_thought_tokens=6, temperature=1.0), **overrides})


def run_step(policy, ema, config=None, seed=0, **kwargs):
    x, y = batch()
    return rlp_step(
        policy, ema, x, y, config or small_config(), THINK, END_THINK, generator=step_generator(seed, 0, 0, "cpu"),
        **kwargs,
    )


# ---- rewards and advantages -----------------------------------------------------------------------


@pytest.mark.parametrize("rotary", [False, True])
def test_reward_is_the_log_prob_difference_by_hand(rotary):
    policy = tiny_gpt(rotary=rotary)
    ema = perturbed(policy)  # a different baseline model, so both terms matter
    step = run_step(policy, ema)
    contexts, targets, thoughts = step.contexts, step.targets, step.thoughts
    G = step.parts.rewards.size(1)
    assert step.parts.rewards.shape == (contexts.size(0), G)
    policy.eval()
    for r in range(thoughts.tokens.size(0)):
        n = int(thoughts.lengths[r])
        thought = thoughts.tokens[r, :n]
        assert thought[-1] == END_THINK and (thought[:-1] != END_THINK).all()
        sequence = torch.cat((contexts[r // G], torch.tensor([THINK]), thought))[None]
        with torch.no_grad():
            with_thought = F.log_softmax(policy(sequence)[0][0, -1], dim=-1)[targets[r // G, 0]]
            without = F.log_softmax(ema(contexts[r // G][None])[0][0, -1], dim=-1)[targets[r // G, 0]]
        torch.testing.assert_close(step.parts.rewards.view(-1)[r], with_thought - without, atol=1e-5, rtol=1e-5)


def test_thoughts_are_sampled_from_the_policy_with_cache():
    """The thought tokens are what the policy samples: same generator, same tokens, as full recompute
    (under the thought rules: no end of text or nested <think>, no empty thought)."""
    policy = tiny_gpt().eval()
    contexts = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(3))
    thoughts = sample_thoughts(policy, contexts, 3, 6, 0.7, THINK, END_THINK, torch.Generator().manual_seed(5), EOT)
    g = torch.Generator().manual_seed(5)
    rows = torch.cat((contexts.repeat_interleave(3, 0), torch.full((6, 1), THINK)), 1)
    done = torch.zeros(6, dtype=torch.bool)
    for step in range(6):  # the same draws, one full forward per step
        logits = policy(rows)[0][:, -1, :259].float()
        logits[:, [EOT, THINK] + ([END_THINK] if step == 0 else [])] = float("-inf")
        token = torch.multinomial(F.softmax(logits / 0.7, -1), 1, generator=g).squeeze(1)
        token = torch.where(done, END_THINK, token)
        done |= token == END_THINK
        rows = torch.cat((rows, token[:, None]), 1)
        if done.all():
            break
    sampled = rows[:, 21:]
    for r in range(6):
        n = int(thoughts.lengths[r])
        if thoughts.truncated[r]:
            torch.testing.assert_close(thoughts.tokens[r, : n - 1], sampled[r, : n - 1])
            assert not thoughts.trained[r, n - 1]  # the forced </think> is not trained
        else:
            torch.testing.assert_close(thoughts.tokens[r, :n], sampled[r, :n])
            assert thoughts.trained[r, :n].all()
        assert not thoughts.trained[r, n:].any()


def test_advantages_are_leave_one_out_and_sum_to_zero():
    rewards = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    advantages = leave_one_out_advantages(rewards)
    G = rewards.size(1)
    for g in range(5):
        for i in range(G):
            others = torch.cat((rewards[g, :i], rewards[g, i + 1 :]))
            torch.testing.assert_close(advantages[g, i], rewards[g, i] - others.mean())
    torch.testing.assert_close(advantages, G / (G - 1) * (rewards - rewards.mean(1, keepdim=True)))
    torch.testing.assert_close(advantages.sum(1), torch.zeros(5), atol=1e-5, rtol=0)


def test_rewards_are_constants():
    """The reward's two log-probs take no gradient: only the thought tokens' log pi do."""
    policy = tiny_gpt()
    step = run_step(policy, perturbed(policy))
    for tensor in (step.parts.rewards, step.parts.advantages, step.parts.scores, step.parts.baseline):
        assert not tensor.requires_grad
    assert step.loss.requires_grad


# ---- the loss -------------------------------------------------------------------------------------


def test_gradients_reach_only_thought_tokens():
    policy = tiny_gpt()
    ema = perturbed(policy)
    logits = []
    hook = policy.lm_head.register_forward_hook(lambda module, args, out: logits.append(out))
    try:
        step = run_step(policy, ema)
    finally:
        hook.remove()
    context_logits, tail_logits = logits[-2], logits[-1]  # the policy's two forwards with gradient
    for out in (context_logits, tail_logits):
        out.retain_grad()
    step.loss.backward()
    thoughts = step.thoughts
    W = thoughts.tokens.size(1)
    assert context_logits.grad is None or not context_logits.grad.any()  # no loss on context predictions
    grad = tail_logits.grad.abs().sum(-1)  # [R, W + 1]: position j predicts thought token j
    assert not grad[:, W].any()  # nothing after the last thought slot
    rows = torch.arange(grad.size(0))
    assert not grad[rows, thoughts.lengths].any()  # the position predicting x_t: rewards are constants
    assert not grad[:, :W][~thoughts.trained].any()  # forced </think> and padding slots
    moving = step.parts.advantages != 0
    assert (grad[:, :W][thoughts.trained & moving[:, None]] > 0).all()
    assert all(p.grad is None for p in ema.parameters())


def test_clipping_holds_at_the_bounds():
    eps = 0.2
    ratios = torch.tensor([[0.5, 0.8, 1.0, 1.2, 1.5]] * 2)
    advantages = torch.tensor([1.0, -1.0])
    old = torch.zeros(2, 5)
    logp = ratios.log().requires_grad_(True)
    mask = torch.ones(2, 5, dtype=torch.bool)
    loss, stats = clipped_policy_loss(logp, old, advantages, mask, eps)
    # A > 0: min(r, clip(r)) = [0.5, 0.8, 1.0, 1.2, 1.2]; A < 0: min(-r, -clip(r)) = [-0.8, -0.8, -1, -1.2, -1.5]
    terms = torch.tensor([[0.5, 0.8, 1.0, 1.2, 1.2], [-0.8, -0.8, -1.0, -1.2, -1.5]])
    torch.testing.assert_close(loss, -terms.mean(1).mean())
    loss.backward()
    # d/dlogp of r*A is r*A where unclipped, 0 where the clipped term is taken (beyond the bound)
    expected = -torch.tensor([[0.5, 0.8, 1.0, 1.2, 0.0], [0.0, -0.8, -1.0, -1.2, -1.5]]) / 5 / 2
    torch.testing.assert_close(logp.grad, expected)
    assert stats["clip_frac"].item() == pytest.approx(2 / 10)
    assert stats["ratio_mean"].item() == pytest.approx(ratios.mean().item())


def test_clipping_after_a_parameter_change():
    """Old log-probs from the policy at sampling time, new ones after its parameters moved: the
    ratio differs from 1, and tokens beyond the clip range in their advantage's direction get no gradient."""
    policy = tiny_gpt()
    ema = ema_model(policy)
    config = small_config(clip_eps=0.05)
    step = run_step(policy, ema, config)
    moved = perturbed(policy, scale=0.05, seed=7)
    new = rlp_loss(moved, ema, step.contexts, step.targets, step.thoughts, config, RULES)
    logps = {}
    for name, model in (("old", policy), ("new", moved)):
        hook = model.lm_head.register_forward_hook(lambda m, a, out, name=name: logps.__setitem__(name, out))
        rlp_loss(model, ema, step.contexts, step.targets, step.thoughts, config, RULES)
        hook.remove()
    W = step.thoughts.tokens.size(1)

    def token_logp(logits):  # the policy samples under the thought rules: its log-probabilities too
        banned = RULES.banned(259, W, "cpu")
        lp = F.log_softmax(logits[:, :W, :259].float().masked_fill(banned, float("-inf")) / config.temperature, -1)
        return lp.gather(-1, step.thoughts.tokens[..., None]).squeeze(-1)

    old_logp = token_logp(logps["old"]).detach()
    new_logp = token_logp(logps["new"]).detach().requires_grad_(True)
    # rewards (so advantages) are scored by the policy being updated, in the same forward
    loss, stats = clipped_policy_loss(new_logp, old_logp, new.advantages, step.thoughts.trained, config.clip_eps)
    assert stats["clip_frac"] > 0 and stats["ratio_mean"] != 1
    clipped = rlp_loss(moved, ema, step.contexts, step.targets, step.thoughts, config, RULES, old_logp=old_logp)
    torch.testing.assert_close(clipped.loss, loss)
    loss.backward()
    ratio = (new_logp - old_logp).exp()
    A = new.advantages[:, None]
    beyond = ((A > 0) & (ratio > 1 + config.clip_eps)) | ((A < 0) & (ratio < 1 - config.clip_eps))
    assert beyond.any()
    assert not new_logp.grad[beyond & step.thoughts.trained].any()
    assert new_logp.grad[~beyond & step.thoughts.trained & (A != 0)].all()


def test_equal_rewards_give_zero_loss():
    # the functions: equal rewards -> exactly zero advantages -> zero loss and gradient
    rewards = torch.full((2, 8), -1.2345678)
    assert not leave_one_out_advantages(rewards).any()
    logp = torch.randn(16, 5, requires_grad=True)
    loss, _ = clipped_policy_loss(logp, logp.detach() + 0.3, leave_one_out_advantages(rewards).view(-1),
                                  torch.ones(16, 5, dtype=torch.bool), 0.2)
    assert loss.item() == 0
    loss.backward()
    assert not logp.grad.any()
    # the objective: G identical thoughts per context score the same, so nothing trains
    policy = tiny_gpt()
    ema = perturbed(policy)
    config = small_config()
    step = run_step(policy, ema, config)
    G = config.group_size
    first = torch.arange(0, step.thoughts.tokens.size(0), G).repeat_interleave(G)
    t = step.thoughts
    same = Thoughts(t.tokens[first], t.lengths[first], t.trained[first], t.truncated[first], t.decode_steps)
    parts = rlp_loss(policy, ema, step.contexts, step.targets, same, config, RULES)
    assert not parts.advantages.any()
    assert parts.loss.item() == 0
    parts.loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in policy.parameters())


# ---- EMA ----------------------------------------------------------------------------------------


def test_ema_update_is_exact():
    model, ema = tiny_gpt(seed=1), tiny_gpt(seed=2)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    ema_update(ema, model, 0.9)
    for (name, phi), theta in zip(ema.named_parameters(), model.parameters()):
        torch.testing.assert_close(phi, 0.9 * before[name] + 0.1 * theta, rtol=1e-6, atol=1e-7)
        assert not phi.requires_grad or phi.grad is None
    state = {k: v.clone() for k, v in ema.state_dict().items()}
    ema_update(ema, model, 1.0)  # tau = 1: unchanged
    assert all(torch.equal(v, state[k]) for k, v in ema.state_dict().items())
    ema_update(ema, model, 0.0)  # tau = 0: a copy
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ema.state_dict().items())


def test_ema_moves_after_each_optimizer_step():
    lm = RLPModel(n_layer=2, n_head=2, n_embd=32, block_size=32, rlp=small_config(ema_decay=0.5))
    assert not any(p.requires_grad for p in lm.rlp_ema.parameters())
    assert not {id(p) for p in lm.model.parameters()} & {id(p) for p in lm.rlp_ema.parameters()}
    lm.rlp_ema.load_state_dict(lm.model.state_dict())
    start = {k: v.clone() for k, v in lm.model.named_parameters()}
    optimizer = torch.optim.SGD(lm.model.parameters(), lr=1.0)
    for p in lm.model.parameters():
        p.grad = torch.ones_like(p)
    lm.optimizer_step(0, 0, optimizer, lambda: None)  # Lightning calls it once per optimizer step
    for name, theta in lm.model.named_parameters():
        torch.testing.assert_close(theta, start[name] - 1)
    for name, phi in lm.rlp_ema.named_parameters():  # 0.5 * start + 0.5 * (start - 1)
        torch.testing.assert_close(phi, start[name] - 0.5)


# ---- controls, configs, evaluations -----------------------------------------------------------------


def test_filler_and_frozen_controls():
    policy = tiny_gpt()
    frozen = perturbed(policy, scale=0.1)
    ema = ema_model(policy)
    filler = run_step(policy, ema, small_config(thoughts="filler"), filler_id=ord("."))
    plain = run_step(policy, ema, small_config())
    t = filler.thoughts
    assert torch.equal(t.lengths, plain.thoughts.lengths) and torch.equal(t.trained, plain.thoughts.trained)
    for r in range(t.tokens.size(0)):
        n = int(t.lengths[r])
        assert (t.tokens[r, : n - 1] == ord(".")).all() and t.tokens[r, n - 1] == END_THINK
    # frozen: the thoughts are the frozen model's samples, with the same random numbers
    from_frozen = run_step(policy, ema, small_config(thoughts="frozen"), sampler=frozen)
    x, y = batch()
    by_frozen = rlp_step(frozen, ema, x, y, small_config(), THINK, END_THINK, generator=step_generator(0, 0, 0, "cpu"))
    assert torch.equal(from_frozen.thoughts.tokens, by_frozen.thoughts.tokens)
    assert not torch.equal(from_frozen.thoughts.tokens, plain.thoughts.tokens)


def test_step_cost_accounting():
    policy = tiny_gpt()
    config = small_config(positions_per_doc=2)
    step = run_step(policy, ema_model(policy), config)
    N, L, G = 3 * 2, config.context_length(32), config.group_size
    assert step.contexts.shape == (N, L)
    assert step.sample_tokens == N * (L + 1) + N * G * (step.thoughts.decode_steps - 1)
    assert step.train_tokens == N * L + N * G * (step.thoughts.tokens.size(1) + 1)
    per_token = policy.flops_per_token()
    assert step.flops == pytest.approx((step.sample_tokens + N * L) * per_token / 3 + step.train_tokens * per_token)
    # unshared: every thought its own prompt, EMA scoring and full trained sequence
    W = step.thoughts.tokens.size(1)
    unshared_forward = N * G * (L + 1) + N * G * (step.thoughts.decode_steps - 1) + N * G * L
    assert step.flops_unshared == pytest.approx(unshared_forward * per_token / 3 + N * G * (L + 1 + W) * per_token)
    assert step.flops_unshared > step.flops


def test_positions_are_distinct_and_contexts_are_the_tokens_before():
    x, y = batch(B=2)
    config = small_config(positions_per_doc=3)
    step = rlp_step(tiny_gpt(), tiny_gpt(), x, y, config, THINK, END_THINK, generator=torch.Generator().manual_seed(0))
    windows = torch.cat((x, y[:, -1:]), 1)
    L = config.context_length(32)
    for i in range(6):
        row = windows[i // 3]
        starts = [s for s in range(0, 33 - L) if torch.equal(row[s : s + L], step.contexts[i])]
        assert any(row[s + L] == step.targets[i, 0] for s in starts)


def test_bad_rlp_keys_are_named():
    with pytest.raises(ConfigError, match="model.rlp.group_size"):
        RLPConfig(group_size=1)
    with pytest.raises(ConfigError, match="model.rlp.thoughts"):
        RLPConfig(thoughts="random")
    with pytest.raises(ConfigError, match="model.rlp.context_tokens"):
        RLPConfig(max_thought_tokens=40).context_length(32)
    with pytest.raises(ConfigError, match=r"^thought_eval\.levels"):
        ThoughtEvalConfig(levels=[9])
    with pytest.raises(ConfigError, match=r"^thought_eval\.levels"):
        ThoughtEval(levels=[9])  # checked whether the evaluations are on or off


def test_init_from_errors_name_the_key(tmp_path):
    from lamina.pretrained import load_init_from

    lm = LanguageModel(n_layer=2, n_head=2, n_embd=32, block_size=32)
    with pytest.raises(ConfigError, match="model.init_from: no such checkpoint"):
        load_init_from(lm.model, lm.hparams, str(tmp_path / "missing.ckpt"))
    other = LanguageModel(n_layer=2, n_head=2, n_embd=64, block_size=32)
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": other.state_dict(), "hyper_parameters": dict(other.hparams)}, path)
    with pytest.raises(ConfigError, match="model.init_from.*model.n_embd is 64 there, 32 here"):
        load_init_from(lm.model, lm.hparams, str(path))
    same = LanguageModel(n_layer=2, n_head=2, n_embd=32, block_size=32)
    torch.save({"state_dict": same.state_dict()}, path)
    load_init_from(lm.model, lm.hparams, str(path))
    assert all(torch.equal(a, b) for a, b in zip(lm.model.state_dict().values(), same.model.state_dict().values()))


def test_answers_are_matched_exactly():
    correct = ThoughtEvaluator._is_correct
    assert correct(" 7+8=15. </think> A: 15\n", "15", think=True)
    assert not correct(" 7+8=15. </think> A: 151\n", "15", think=True)
    assert not correct(" 7+8=15. A: 15\n", "15", think=True)  # the thought never closed
    assert correct(" 15\nQ: 1+1", "15", think=False)
    assert not correct(" 15.\n", "15", think=False)


def test_held_out_problems_and_think_tokens():
    problems = arith_problems(1_000_003, 2, 20)
    assert len(problems) == 20 and len({q for q, _ in problems}) == 20
    for question, answer in problems:
        assert question.startswith("Q: ") and question.endswith("=?")
        assert str(eval(question[3:-2])) == answer  # noqa: S307 - digits and + - * only
    ids = byte_tokenizer().encode("Q: 1+2=? <think> 1+2=3 </think> A:").ids
    assert ids.count(THINK) == 1 and ids.count(END_THINK) == 1


def test_evaluator_reports_every_level():
    tokenizer = byte_tokenizer()
    config = ThoughtEvalConfig(levels=[1, 2], examples_per_level=4, max_thought_tokens=8, nll_positions=3)
    val = torch.randint(0, 256, (400,)).numpy()
    evaluator = ThoughtEvaluator(config, tokenizer, THINK, END_THINK, EOT, 32, val, thought_tokens=6)
    metrics = evaluator.evaluate(tiny_gpt())
    for key in ("eval/arith_acc/level1", "eval/arith_acc_nothink/level2", "eval/think_acc_gain/level2",
                "eval/think_nll", "eval/nothink_nll"):
        assert key in metrics
    assert all(0 <= metrics[f"eval/arith_acc/level{k}"] <= 1 for k in (1, 2))
    gain = metrics["eval/nothink_nll"] - metrics["eval/think_nll"]  # (the mean of float64 differences)
    assert metrics["eval/think_gain"] == pytest.approx(gain, rel=1e-5)
    assert metrics["eval/think_gain/lo"] < metrics["eval/think_gain"] < metrics["eval/think_gain/hi"]


@pytest.mark.parametrize("name", ["rlp-tiny", "rlp-tiny-filler", "rlp-tiny-frozen", "ntp-tiny", "ntp-tiny-flops"])
def test_configs_parse(name):
    cli = LaminaCLI(LanguageModel, TextDataModule, run=False, args=["--config", str(CONFIGS / f"{name}.yaml")],
                    **cli_kwargs())
    model = cli.model
    assert model.hparams.init_from == "runs/tiny/version_0/checkpoints/last.ckpt"
    [thought_eval] = [c for c in cli.trainer.callbacks if isinstance(c, ThoughtEval)]  # the section's
    assert thought_eval.config is not None and thought_eval.config.levels == [1, 2, 3, 4]
    if name.startswith("rlp"):
        assert isinstance(model, RLPModel)
        assert model.hparams["_class_path"] == "lamina.rlp.RLPModel"
        assert model.rlp_config.thoughts == {"rlp-tiny": "policy"}.get(name, name.rsplit("-", 1)[1])
        assert (model.rlp_frozen is not None) == (name == "rlp-tiny-frozen")
    else:
        assert type(model) is LanguageModel and "rlp" not in model.hparams


# ---- end to end through the CLI ---------------------------------------------------------------------

TINY = [
    "--model.n_layer", "2", "--model.n_head", "2", "--model.n_embd", "32", "--model.block_size", "32",
    "--model.warmup_steps", "2", "--model.lr", "3e-3",
    "--data.batch_size", "2", "--data.max_bytes", "200000", "--data.val_tokens", "256",
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false", "--seed_everything", "7", "--trainer.log_every_n_steps", "1",
    "--instrument.enabled", "false",  # measured elsewhere; here only RLP's own work
]
RLP = [
    "--model", "lamina.rlp.RLPModel",
    "--model.rlp.group_size", "4", "--model.rlp.max_thought_tokens", "6", "--model.rlp.ema_decay", "0.5",
    "--thought_eval.enabled", "true", "--thought_eval.every_n_steps", "2", "--thought_eval.levels", "[1]",
    "--thought_eval.examples_per_level", "4", "--thought_eval.max_thought_tokens", "8",
    "--thought_eval.nll_positions", "4", "--thought_eval.pass_samples", "4",
    "--thought_eval.pass_at", "[1, 4]",
]


def fit(tmp_path: Path, name: str, *extra: str) -> Path:
    main([
        "fit", *TINY, "--data.cache_dir", str(tmp_path / "cache"),
        "--trainer.logger.class_path", "lightning.pytorch.loggers.TensorBoardLogger",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.logger.init_args.name", name, *extra,
    ])
    return tmp_path / "runs" / name / "version_0"


def scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_rlp_fit_from_a_checkpoint_and_resume_keeps_the_ema(tmp_path):
    base = fit(tmp_path, "base", "--trainer.max_steps", "2", "--trainer.val_check_interval", "2")
    start = str(base / "checkpoints" / "last.ckpt")
    common = ["--model.init_from", start, *RLP, "--trainer.val_check_interval", "2",
              "--checkpoint.every_n_train_steps", "2", "--checkpoint.save_top_k", "-1"]
    once = fit(tmp_path, "once", *common, "--trainer.max_steps", "4")
    tags = scalars(once)
    for tag in ("rlp/reward_mean", "rlp/reward_std", "rlp/advantage_abs_mean", "rlp/zero_variance_frac",
                "rlp/thought_len_mean", "rlp/clip_frac", "rlp/ratio_mean", "rlp/loss", "val/bpb",
                "perf/rlp_sample_tokens", "perf/flops", "eval/arith_acc/level1", "eval/arith_acc_nothink/level1",
                "eval/think_nll"):
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
    assert "train/loss" not in tags  # the RLP loss is not a next-token loss
    assert sorted(tags["eval/arith_acc/level1"]) == [0, 2, 4]
    assert sorted(tags["eval/pass_at_4/level1"]) == [0, 4]  # pass@k at the start and the end only
    assert sorted(p.name for p in (once / "thought_eval").glob("*.json")) == ["step0.json", "step2.json", "step4.json"]
    assert "perf/flops_unshared" in tags

    base_weights = torch.load(start, weights_only=True)["state_dict"]
    midway = next((once / "checkpoints").glob("*step=2.ckpt"))
    mid = torch.load(midway, weights_only=True)
    ema_keys = [k for k in mid["state_dict"] if k.startswith("rlp_ema.")]
    assert ema_keys
    # the EMA started from the init_from weights and moved with tau = 0.5: neither those nor the model's
    key = "rlp_ema.transformer.h.0.attn.c_attn.weight"
    model_key = key.replace("rlp_ema.", "model.")
    assert not torch.equal(mid["state_dict"][key], base_weights[model_key])
    assert not torch.equal(mid["state_dict"][key], mid["state_dict"][model_key])

    resumed = fit(tmp_path, "resumed", *common, "--trainer.max_steps", "4", "--ckpt_path", str(midway))
    a, b = scalars(once)["rlp/reward_mean"], scalars(resumed)["rlp/reward_mean"]
    later = sorted(s for s in a if s >= 2)
    assert later and [a[s] for s in later] == [b[s] for s in later]
    final_once = torch.load(once / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    final_resumed = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for k in ema_keys:
        assert torch.equal(final_once[k], final_resumed[k]), k


def test_resuming_rlp_needs_an_rlp_checkpoint():
    """(Through the CLI, --ckpt_path restores the checkpoint's own model config, RLP or not.)"""
    lm = RLPModel(n_layer=2, n_head=2, n_embd=32, block_size=32, rlp=small_config())
    plain = LanguageModel(n_layer=2, n_head=2, n_embd=32, block_size=32)
    with pytest.raises(ConfigError, match="model.init_from"):
        lm.on_load_checkpoint({"state_dict": plain.state_dict(), "lamina": {}})
    lm.on_load_checkpoint({"state_dict": lm.state_dict(), "lamina": {"rlp_sample_tokens": 5}})
    assert lm.rlp_sample_tokens == 5


# ---- the package: RLPModel, names kept, checkpoints readable -----------------------------------------


def test_rlp_is_the_model_class_rlp_model_alone_takes_rlp():
    import inspect

    lm = RLPModel(n_layer=2, n_head=2, n_embd=32, block_size=32, rlp=small_config())
    assert isinstance(lm, LanguageModel) and lm.hparams.rlp == small_config() and lm.hparams.n_embd == 32
    assert "rlp" not in inspect.signature(LanguageModel.__init__).parameters
    assert LanguageModel.__new__ is object.__new__  # no __new__ that picks the class
    with pytest.raises(TypeError):
        LanguageModel(n_layer=2, n_head=2, n_embd=32, block_size=32, rlp=small_config())
    with pytest.raises(ConfigError, match="model.rlp"):
        RLPModel(n_layer=2, n_head=2, n_embd=32, block_size=32)
    assert RLPModel.training_step is not LanguageModel.training_step


def test_old_names_and_checkpointed_settings(tmp_path):
    import io

    import lamina.rlp as rlp
    from lamina.data.sources import MASK64, splitmix64

    assert rlp.frozen_copy is rlp.ema_model and rlp.RLPModel is RLPModel
    # settings pickle under the name they had when lamina.rlp was one file, and load weights-only
    assert RLPConfig.__module__ == ThoughtEvalConfig.__module__ == "lamina.rlp"
    buffer = io.BytesIO()
    torch.save({"rlp": small_config(), "thought_eval": ThoughtEvalConfig()}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["rlp"] == small_config()
    # the batch generator's seed: data.module's splitmix64_array, the same numbers as before
    for seed, index, rank in [(0, 0, 0), (1337, 5, 1), (2**64 - 1, 10**9, 3), (-5, 7, 0)]:
        mixed = splitmix64((splitmix64(seed & MASK64) ^ (index * 65_537 + rank)) & MASK64)
        assert step_generator(seed, index, rank, "cpu").initial_seed() == mixed & ((1 << 63) - 1)
