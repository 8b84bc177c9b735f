"""The newer recipe's options (model.optimizer muon, qk_norm, tie_embeddings, zero_init_projections,
logit_softcap): at their defaults the model and a fit are today's, bit for bit; each option does what
it says; Muon trains inside Lightning's automatic optimization (groups by name, one schedule, resume
bit-exact, the non-finite guard); what cannot work is refused in one line (a bad value, muon under
FSDP, export of what GPT-2 cannot hold, a resumed run asked for another shape)."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import torch.nn.functional as F

from lamina.errors import ConfigError
from lamina.export import check_exportable
from lamina.lm import LanguageModel
from lamina.model import GPT, GPTConfig
from lamina.optim import MuonWithAdamW
from lamina.pretrained import LoadedCheckpoint
from lamina.cli import main
from lamina.user_errors import check_resume_config
from tests.test_fsdp import CPUFSDPStrategy, attached, expected_decayed
from tests.test_train import QUIET, fit_args, poisoned_steps, run_cli_error, scalars  # noqa: F401 (a fixture)

NEW_KEYS = dict(qk_norm=False, tie_embeddings=True, zero_init_projections=False, logit_softcap=None)


def tiny(**overrides) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=259, block_size=16, n_layer=2, n_head=2, n_embd=32), **overrides})


def seeded(config: GPTConfig) -> GPT:
    torch.manual_seed(0)
    return GPT(config)


# ---- the defaults are today's recipe -------------------------------------------------------------


def test_the_new_keys_default_to_todays_model_in_both_places():
    defaults = {k: p.default for k, p in inspect.signature(LanguageModel.__init__).parameters.items()}
    assert {k: defaults[k] for k in NEW_KEYS} == NEW_KEYS == {k: getattr(GPTConfig(), k) for k in NEW_KEYS}
    assert (defaults["optimizer"], defaults["muon_lr"]) == ("adamw", 0.02)


@pytest.mark.parametrize("rotary", [False, True])
def test_the_defaults_given_explicitly_build_the_same_model(rotary):
    implicit, explicit = seeded(tiny(rotary=rotary)), seeded(tiny(rotary=rotary, **NEW_KEYS))
    assert implicit.state_dict().keys() == explicit.state_dict().keys()
    assert all(torch.equal(v, explicit.state_dict()[k]) for k, v in implicit.state_dict().items())
    assert implicit.lm_head.weight is implicit.transformer.wte.weight
    idx = torch.randint(0, 259, (2, 16))
    (a, loss_a), (b, loss_b) = implicit(idx, idx), explicit(idx, idx)
    assert torch.equal(a, b) and torch.equal(loss_a, loss_b)


def test_a_fit_with_the_defaults_given_explicitly_is_bit_identical(tmp_path):
    """(Also checked by hand against losses recorded from the code before these keys existed.)"""
    run = ("--trainer.max_steps", "6", "--trainer.log_every_n_steps", "1", "--trainer.val_check_interval", "3")
    main(fit_args(tmp_path, "implicit", *QUIET, *run))
    main(fit_args(tmp_path, "explicit", *QUIET, *run, "--model.optimizer", "adamw", "--model.muon_lr", "0.02",
                  "--model.qk_norm", "false", "--model.tie_embeddings", "true",
                  "--model.zero_init_projections", "false", "--model.logit_softcap", "null"))
    implicit = scalars(tmp_path / "runs" / "implicit" / "version_0")
    explicit = scalars(tmp_path / "runs" / "explicit" / "version_0")
    assert sorted(implicit["train/loss"]) == list(range(6))
    for tag in ("train/loss", "val/loss", "lr"):
        assert implicit[tag] == explicit[tag], tag


# ---- each option does what it says ---------------------------------------------------------------


def attention_inputs(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (q, k) each attention call gets, recorded."""
    seen, real = [], F.scaled_dot_product_attention

    def recording(q, k, v, *args, **kwargs):
        seen.append((q, k))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    return seen


@pytest.mark.parametrize("rotary", [False, True])
def test_qk_norm_gives_queries_and_keys_unit_rms_per_head(monkeypatch, rotary):
    seen = attention_inputs(monkeypatch)
    idx = torch.randint(0, 259, (2, 16))
    seeded(tiny(rotary=rotary, qk_norm=True))(idx)
    assert len(seen) == 2
    for q, k in seen:
        for t in (q, k):  # [B, n_head, T, head_dim]
            rms = t.pow(2).mean(-1).sqrt()
            torch.testing.assert_close(rms, torch.ones_like(rms), atol=1e-4, rtol=0)  # (rms_norm's eps)
    seen.clear()
    seeded(tiny(rotary=rotary))(idx)
    assert not torch.allclose(seen[0][0].pow(2).mean(-1).sqrt(), torch.ones(()), atol=0.1)


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    idx = torch.randint(0, 259, (2, 16))
    for qk_norm in (True, False):
        model = seeded(tiny(qk_norm=qk_norm))
        before, _ = model(idx)
        with torch.no_grad():
            for block in model.transformer.h:
                block.attn.c_attn.weight[: 2 * 32].mul_(3.0)  # the q and k rows of the fused projection
        after, _ = model(idx)
        assert torch.allclose(before, after, atol=1e-5) == qk_norm


def test_logit_softcap_is_cap_tanh_of_the_logits():
    cap, idx = 2.0, torch.randint(0, 259, (2, 16))
    plain, capped = seeded(tiny()), seeded(tiny(logit_softcap=cap))
    with torch.no_grad():
        for model in (plain, capped):
            model.lm_head.weight.mul_(200.0)  # raw logits well past the cap
    raw, _ = plain(idx)
    logits, loss = capped(idx, idx)
    assert raw.abs().max() > 3 * cap
    torch.testing.assert_close(logits, cap * torch.tanh(raw / cap))
    assert logits.abs().max() <= cap and logits.abs().max() > 0.9 * cap and torch.isfinite(loss)
    moderate, _ = seeded(tiny(logit_softcap=30.0))(idx)
    assert (moderate.abs() < 30.0).all()


def test_logit_softcap_must_be_positive():
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ConfigError, match=r"^model\.logit_softcap: expected a number > 0"):
            tiny(logit_softcap=bad)


def test_zero_init_projections_start_every_block_as_the_identity():
    today, zero = seeded(tiny(bias=True)), seeded(tiny(bias=True, zero_init_projections=True))
    for name, p in zero.named_parameters():
        if name.endswith("c_proj.weight"):
            assert not p.any(), name
        else:  # everything else as today's init (the same draws from the generator)
            assert torch.equal(p, dict(today.named_parameters())[name]), name
    x = torch.randn(2, 16, 32)
    for block in zero.transformer.h:
        assert torch.equal(block(x), x)
    idx = torch.randint(0, 259, (2, 16))
    embedded = zero.transformer.wte(idx) + zero.transformer.wpe(torch.arange(16))
    assert torch.equal(zero(idx)[0], zero.lm_head(zero.transformer.ln_f(embedded)))


def test_an_untied_head_is_a_matrix_of_its_own_and_the_flop_count_holds():
    tied, untied = GPT(tiny()), GPT(tiny(tie_embeddings=False))
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert not torch.equal(untied.lm_head.weight, untied.transformer.wte.weight)
    names = {n for n, _ in untied.named_parameters()}
    assert {"lm_head.weight", "transformer.wte.weight"} <= names
    head = untied.lm_head.weight.numel()
    assert untied.num_params() == tied.num_params() + head
    c = untied.config
    attention = 12 * c.n_layer * c.n_embd * c.block_size
    # 6N counts the output layer's matrix (a matmul) once, tied or not; the untied embedding is a lookup
    assert untied.flops_per_token() == 6 * (untied.num_params() - untied.transformer.wte.weight.numel()) + attention
    assert untied.flops_per_token() == tied.flops_per_token() == 6 * tied.num_params() + attention
    idx = torch.randint(0, 259, (2, 16))
    untied(idx, idx)[1].backward()
    assert untied.lm_head.weight.grad is not None and untied.transformer.wte.weight.grad is not None
    assert not torch.equal(untied.lm_head.weight.grad, untied.transformer.wte.weight.grad)


# ---- Muon: the groups, one schedule, the state ---------------------------------------------------


def muon_model(**kwargs) -> LanguageModel:
    return attached(LanguageModel(**{**dict(n_layer=2, n_head=2, n_embd=32, block_size=16, optimizer="muon"),
                                     **kwargs}))


@pytest.mark.parametrize("tie_embeddings", [True, False])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rotary", [False, True])
def test_muon_takes_the_blocks_matrices_and_adamw_the_rest(tie_embeddings, bias, rotary):
    model = muon_model(tie_embeddings=tie_embeddings, bias=bias, rotary=rotary, lr=1e-3, muon_lr=0.02,
                       weight_decay=0.1)
    optimizer = model.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, MuonWithAdamW)
    names = {id(p): n for n, p in model.model.named_parameters()}
    (adamw_group,), (muon_group,) = optimizer.adamw.param_groups, optimizer.muon.param_groups
    assert {names[id(p)] for p in muon_group["params"]} == expected_decayed(2)
    assert all(p.ndim == 2 for p in muon_group["params"])
    to_adamw = {names[id(p)] for p in adamw_group["params"]}
    assert to_adamw == set(names.values()) - expected_decayed(2)
    assert "transformer.wte.weight" in to_adamw and ("transformer.wpe.weight" in to_adamw) != rotary
    assert ("lm_head.weight" in to_adamw) != tie_embeddings  # tied: the same tensor as wte
    assert all(n.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight", "bias", "wte.weight", "wpe.weight",
                           "lm_head.weight")) for n in to_adamw)
    assert any(n.endswith("c_attn.bias") for n in to_adamw) == bias
    # one optimizer: its groups are the two optimizers' own dicts, AdamW's first (the logged lr)
    assert optimizer.param_groups[0] is adamw_group and optimizer.param_groups[1] is muon_group
    assert optimizer.adamw.state is optimizer.muon.state is optimizer.state
    assert adamw_group["weight_decay"] == 0.0 and adamw_group["fused"]
    # a matrix shrinks by lr x weight_decay a step, as under AdamW
    assert muon_group["weight_decay"] * muon_group["initial_lr"] == pytest.approx(0.1 * 1e-3)
    assert (muon_group["momentum"], muon_group["nesterov"], muon_group["adjust_lr_fn"]) == (0.95, True, "original")


def test_muon_leaves_out_frozen_parameters():
    model = LanguageModel(n_layer=1, n_head=2, n_embd=16, block_size=8, optimizer="muon")
    model.model.transformer.h[0].attn.c_attn.weight.requires_grad_(False)
    optimizer = attached(model).configure_optimizers()["optimizer"]
    assert len(optimizer.muon.param_groups[0]["params"]) == 3


def test_one_schedule_scales_both_learning_rates():
    model = muon_model(lr=1e-3, muon_lr=0.05, warmup_steps=4)
    config = model.configure_optimizers()
    optimizer, schedule = config["optimizer"], config["lr_scheduler"]["scheduler"]
    for step in range(5):
        adamw_lr, muon_lr = (g["lr"] for g in optimizer.param_groups)
        if step < 4:  # the warmup
            assert adamw_lr == pytest.approx(1e-3 * (step + 1) / 4)
        assert muon_lr / adamw_lr == pytest.approx(50.0)
        assert schedule.get_last_lr()[0] == adamw_lr
        optimizer.step()
        schedule.step()


def train_steps(model: LanguageModel, optimizer, steps: int) -> list[float]:
    losses = []
    for step in range(steps):
        idx = torch.randint(0, 259, (2, 16), generator=torch.Generator().manual_seed(step))
        loss = model.model(idx, idx)[1]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_muon_state_round_trips_through_state_dict():
    torch.manual_seed(0)
    first = muon_model(bias=True)
    optimizer = first.configure_optimizers()["optimizer"]
    train_steps(first, optimizer, 3)
    state = copy.deepcopy(optimizer.state_dict())  # as a checkpoint holds it (state_dict shares the tensors)
    first_muon = len(state["param_groups"][0]["params"])  # the state's index of Muon's first matrix
    assert len(state["param_groups"]) == 2 and "momentum_buffer" in state["state"][first_muon]
    torch.manual_seed(0)
    second = muon_model(bias=True)
    second.model.load_state_dict(first.model.state_dict())
    loaded = second.configure_optimizers()["optimizer"]
    loaded.load_state_dict(state)
    # re-linked: the inner optimizers step the loaded groups and state
    assert loaded.adamw.param_groups[0] is loaded.param_groups[0]
    assert loaded.muon.param_groups[0] is loaded.param_groups[1]
    assert loaded.adamw.state is loaded.muon.state is loaded.state
    assert train_steps(second, loaded, 3) == train_steps(first, optimizer, 3)
    assert all(torch.equal(p, q) for p, q in zip(first.model.parameters(), second.model.parameters(), strict=True))


# ---- Muon through the CLI: resume is exact, the guard skips -------------------------------------


def test_resume_with_muon_gives_the_same_losses_as_one_run(tmp_path):
    n = 6
    common = ("--model.optimizer", "muon", "--trainer.max_steps", str(2 * n), "--trainer.log_every_n_steps", "1",
              "--trainer.val_check_interval", str(n), "--trainer.accumulate_grad_batches", "2",
              "--trainer.gradient_clip_val", "0.5")
    main(fit_args(tmp_path, "once", *QUIET, *common, "--checkpoint.every_n_train_steps", str(n),
                  "--checkpoint.save_top_k", "-1"))
    once_dir = tmp_path / "runs" / "once" / "version_0"
    midway = next((once_dir / "checkpoints").glob(f"*step={n}.ckpt"))
    state = torch.load(midway, weights_only=True)
    assert any("momentum_buffer" in s for s in state["optimizer_states"][0]["state"].values())
    main(fit_args(tmp_path, "resumed", *QUIET, *common, "--ckpt_path", str(midway)))
    once = scalars(once_dir)["train/loss"]
    resumed = scalars(tmp_path / "runs" / "resumed" / "version_0")["train/loss"]
    later = sorted(s for s in once if s >= n)
    assert later and sorted(resumed) == later
    assert [resumed[s] for s in later] == [once[s] for s in later]


def test_the_guard_skips_a_nonfinite_step_with_muon(tmp_path, poisoned_steps):  # noqa: F811
    poisoned_steps.add(3)
    main(fit_args(tmp_path, "skip", *QUIET, "--model.optimizer", "muon", "--trainer.max_steps", "6",
                  "--model.on_nonfinite", "skip", "--trainer.log_every_n_steps", "2"))
    run = tmp_path / "runs" / "skip" / "version_0"
    assert scalars(run)["train/nonfinite_skips"] == {3: 1.0}
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    optimizer_state = state["optimizer_states"][0]["state"].values()
    assert {float(s["step"]) for s in optimizer_state if "step" in s} == {5.0}  # AdamW skipped step 3 too
    assert all(torch.isfinite(t).all() for s in optimizer_state for t in s.values())
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point())


# ---- refused in one line -------------------------------------------------------------------------


def test_a_bad_optimizer_is_one_line(tmp_path, capsys):
    line = run_cli_error(tmp_path, capsys, "--model.optimizer", "sgd")
    assert "model.optimizer" in line and "sgd" in line


def test_a_bad_softcap_is_one_line(tmp_path, capsys):
    assert "model.logit_softcap" in run_cli_error(tmp_path, capsys, "--model.logit_softcap", "-1")


def test_muon_under_fsdp_is_refused_in_one_line():
    model = attached(LanguageModel(n_layer=1, n_head=2, n_embd=16, block_size=8, optimizer="muon"),
                     strategy=CPUFSDPStrategy())
    with pytest.raises(ConfigError, match=r"^model\.optimizer: muon needs whole weight matrices") as refused:
        model.configure_optimizers()
    assert "\n" not in str(refused.value) and "FSDP" in str(refused.value)


@pytest.mark.parametrize("setting, key", [(dict(qk_norm=True), "model.qk_norm"),
                                          (dict(logit_softcap=30.0), "model.logit_softcap"),
                                          (dict(tie_embeddings=False), "model.tie_embeddings")])
def test_export_refuses_what_gpt2_cannot_hold_in_one_line(setting, key):
    config = GPTConfig(vocab_size=259, block_size=24, n_layer=2, n_head=2, n_embd=16)
    # by the checkpoint's hyperparameters (what a checkpoint says, whatever config the loader built) ...
    loaded = LoadedCheckpoint("run/last.ckpt", GPT(config), {**NEW_KEYS, **setting})
    with pytest.raises(ConfigError, match=rf"^{key}: export to GPT2LMHeadModel") as refused:
        check_exportable(loaded)
    assert "\n" not in str(refused.value)
    # ... and by the model's own config
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        check_exportable(LoadedCheckpoint("run/last.ckpt", GPT(GPTConfig(**{**vars(config), **setting})), {}))


def test_export_takes_zero_init_projections_and_the_defaults():
    config = GPTConfig(vocab_size=259, block_size=24, n_layer=2, n_head=2, n_embd=16, zero_init_projections=True)
    check_exportable(LoadedCheckpoint("run/last.ckpt", GPT(config), {**NEW_KEYS, "zero_init_projections": True}))


def test_a_resumed_run_refuses_another_architecture_in_one_line(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"n_layer": 2, **NEW_KEYS}}, path)
    defaults = {k: p.default for k, p in inspect.signature(LanguageModel.__init__).parameters.items()}
    check_resume_config(str(path), {"qk_norm": False, "tie_embeddings": True}, defaults)
    for key, value in (("qk_norm", True), ("tie_embeddings", False), ("logit_softcap", 30.0)):
        with pytest.raises(ConfigError, match=rf"^ckpt_path: .*model\.{key} is"):
            check_resume_config(str(path), {key: value}, defaults)


@pytest.mark.parametrize("options", [dict(tie_embeddings=False), dict(qk_norm=True), dict(logit_softcap=5.0)])
def test_checkpoint_readers_rebuild_the_recipe_it_was_trained_with(tmp_path, options):
    """load_gpt (sample, probes, drift, export read checkpoints through it) builds the model the
    checkpoint's hyperparameters describe: its logits are the trained model's, an untied head included."""
    from lamina.pretrained import load_gpt

    config = GPTConfig(vocab_size=259, block_size=16, n_layer=2, n_head=2, n_embd=16, **options)
    torch.manual_seed(0)
    model = GPT(config).eval()
    hparams = {k: getattr(config, k) for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", *options)}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": hparams}, path)
    loaded = load_gpt(path, tokenizer=False).model
    ids = torch.randint(0, 259, (2, 16))
    with torch.no_grad():
        assert torch.equal(loaded(ids)[0], model(ids)[0])
