"""FSDP (configs/fsdp.yaml): clipping by the norm of the whole gradient, and weight decay chosen by
module, checked with Lightning's own FSDPStrategy on two CPU processes (gloo) against one process
with the same global batch; and the decay groups of the plain path, which must stay exactly those of
the rule by shape they replace.

Three pieces of test scaffolding let torch's FSDP run on a CPU (configs/fsdp.yaml itself asks for
GPUs): Lightning refuses an `FSDPStrategy` on a CPU accelerator (its check is on the exact class, so
a subclass passes), and it hands FSDP `device_id=root_device.index`, which is None on a CPU, where
torch's FSDP wants the device named; the driver gives it `torch.device("cpu")`. The runs keep no
last.ckpt: Lightning's full FSDP checkpoint offloads to the CPU, which on a CPU frees memory still in
use (a segfault, Lightning issue 21804); the driver gathers the weights itself. On GPUs none of the
three applies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy

from lamina.errors import ConfigError
from lamina.lm import LanguageModel
from lamina.model import ACTIVATIONS
from tests.test_train import fit_args, scalars

STEPS = 3
CLIP = 0.5  # below the tiny model's gradient norms at the first steps (about 0.9): clipping acts
# A weight decay large enough that decaying the wrong parameters (or none) moves the weights far more
# than the two runs' rounding does: lr * wd is about 0.6% of every decayed weight a step.
WEIGHT_DECAY = 10.0

MATRICES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def expected_decayed(n_layer: int) -> set[str]:
    """The blocks' linear weight matrices, by their names in the plain model."""
    return {f"transformer.h.{i}.{m}" for i in range(n_layer) for m in MATRICES}


class CPUFSDPStrategy(FSDPStrategy):
    """Lightning's FSDPStrategy, unchanged, that Lightning lets run on a CPU accelerator."""


# ---- the plain path: the same groups as the rule by shape ---------------------------------------


def todays_groups(gpt: torch.nn.Module) -> tuple[list, list]:
    """The rule before FSDP support: matrices (dim >= 2) decay, except the embeddings."""
    decay, no_decay = [], []
    for name, p in gpt.named_parameters():
        is_embedding = name.startswith(("transformer.wte", "transformer.wpe", "lm_head"))
        (decay if p.dim() >= 2 and not is_embedding else no_decay).append(p)
    return decay, no_decay


def attached(model: LanguageModel, **trainer_kwargs) -> LanguageModel:
    kwargs = dict(accelerator="cpu", devices=1, max_steps=5, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False)
    model.trainer = L.Trainer(**{**kwargs, **trainer_kwargs})
    return model


@pytest.mark.parametrize("rotary", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_plain_decay_groups_are_exactly_todays(activation, bias, rotary):
    model = attached(LanguageModel(n_layer=2, n_head=2, n_embd=32, block_size=16, activation=activation,
                                   bias=bias, rotary=rotary, weight_decay=0.1))
    decay, no_decay = model.configure_optimizers()["optimizer"].param_groups
    old_decay, old_no_decay = todays_groups(model.model)
    # the same tensors, in the same order (optimizer state in checkpoints is keyed by position)
    assert [id(p) for p in decay["params"]] == [id(p) for p in old_decay]
    assert [id(p) for p in no_decay["params"]] == [id(p) for p in old_no_decay]
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    names = {id(p): n for n, p in model.model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == expected_decayed(2)
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert "transformer.wte.weight" in undecayed and ("transformer.wpe.weight" in undecayed) != rotary
    assert all(n.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight", "bias", "wte.weight", "wpe.weight"))
               for n in undecayed)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.model.parameters()))


def test_plain_groups_leave_out_frozen_parameters():
    model = LanguageModel(n_layer=1, n_head=2, n_embd=16, block_size=8)
    model.model.transformer.h[0].attn.c_attn.weight.requires_grad_(False)
    model.model.transformer.ln_f.weight.requires_grad_(False)
    decay, no_decay = attached(model).configure_optimizers()["optimizer"].param_groups
    grouped = {id(p) for p in decay["params"] + no_decay["params"]}
    assert id(model.model.transformer.h[0].attn.c_attn.weight) not in grouped
    assert id(model.model.transformer.ln_f.weight) not in grouped
    assert len(decay["params"]) == 3


# ---- setups lamina cannot train correctly under FSDP: one line ------------------------------------


def test_fsdp_without_orig_params_is_refused():
    model = attached(LanguageModel(n_layer=1, n_head=2, n_embd=16, block_size=8),
                     strategy=CPUFSDPStrategy(use_orig_params=False), gradient_clip_val=1.0)
    with pytest.raises(ConfigError, match=r"^trainer\.strategy\.dict_kwargs\.use_orig_params: .*got false$"):
        model.configure_optimizers()


def test_fsdp_fp16_with_norm_clipping_is_refused():
    model = attached(LanguageModel(n_layer=1, n_head=2, n_embd=16, block_size=8),
                     strategy=CPUFSDPStrategy(), precision="16-mixed", gradient_clip_val=1.0)
    with pytest.raises(ConfigError, match=r"^trainer\.precision: 16-mixed with trainer\.gradient_clip_val .*bf16"):
        model.configure_optimizers()


def test_fsdp_overlay_keeps_original_parameters():
    import yaml
    from jsonargparse import ArgumentParser

    from lamina.model import Block

    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "fsdp.yaml").read_text())
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=FSDPStrategy)
    strategy = parser.instantiate(parser.parse_object({"strategy": spec["trainer"]["strategy"]})).strategy
    assert strategy.kwargs["use_orig_params"] is True
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}


# ---- two CPU processes under FSDP against one process ---------------------------------------------

DRIVER = '''
"""A lamina fit that records, per rank, the optimizer's groups by the parameters' original names, and
at each step the gradient norm lamina computed (before clipping) and the norm after clipping."""
import json
import os
import sys

import torch
import torch.distributed.fsdp as fsdp

sys.path.insert(0, os.environ["LAMINA_TEST_ROOT"])  # tests.test_fsdp.CPUFSDPStrategy, named by the run
from lamina.cli import main  # noqa: E402
from lamina.lm import LanguageModel  # noqa: E402


class CPUFullyShardedDataParallel(fsdp.FullyShardedDataParallel):
    """torch's FSDP with the CPU named as its device where Lightning gives None (see tests/test_fsdp.py)."""

    def __init__(self, module, *args, device_id=None, **kwargs):
        device_id = torch.device("cpu") if device_id is None else device_id
        super().__init__(module, *args, device_id=device_id, **kwargs)


fsdp.FullyShardedDataParallel = CPUFullyShardedDataParallel  # where Lightning's strategy looks it up

OUT = os.environ["LAMINA_TEST_OUT"]
names, record = {}, {"groups": None, "norm": {}, "clipped": {}}


def save(module):
    with open(os.path.join(OUT, f"rank{module.global_rank}.json"), "w") as f:
        json.dump(record, f)


original_configure_model = LanguageModel.configure_model


def configure_model(self):  # before the strategy wraps the module: the plain names
    names.update({id(p): n for n, p in self.model.named_parameters()})
    original_configure_model(self)


original_configure_optimizers = LanguageModel.configure_optimizers


def configure_optimizers(self):
    out = original_configure_optimizers(self)
    record["groups"] = [
        {"weight_decay": g["weight_decay"], "params": [names[id(p)] for p in g["params"]]}
        for g in out["optimizer"].param_groups
    ]
    save(self)
    return out


original_clip = LanguageModel.configure_gradient_clipping


def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
    step = self.global_step
    record["norm"][step] = float(self.grad_norm)
    original_clip(self, optimizer, gradient_clip_val, gradient_clip_algorithm)
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    squares = torch.nn.utils.get_total_norm(grads) ** 2 if grads else torch.zeros(())
    if torch.distributed.is_initialized():  # FULL_SHARD: each gradient element lives on one rank
        torch.distributed.all_reduce(squares)
    record["clipped"][step] = float(squares.sqrt())
    save(self)


def on_train_end(self):
    """The weights after the last step, whole, from every rank. (Lightning's own full checkpoint of an
    FSDP model offloads to the CPU, which on a CPU frees memory still in use: Lightning issue 21804.)"""
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType

    root = self.trainer.strategy.model
    if isinstance(root, fsdp.FullyShardedDataParallel):
        config = FullStateDictConfig(offload_to_cpu=False, rank0_only=False)
        with fsdp.FullyShardedDataParallel.state_dict_type(root, StateDictType.FULL_STATE_DICT, config):
            state = root.state_dict()
    else:
        state = self.state_dict()
    torch.save(state, os.path.join(OUT, f"weights{self.global_rank}.pt"))


LanguageModel.configure_model = configure_model
LanguageModel.on_train_end = on_train_end
LanguageModel.configure_optimizers = configure_optimizers
LanguageModel.configure_gradient_clipping = configure_gradient_clipping
main()
'''


def run_fit(tmp: Path, name: str, *extra: str) -> tuple[Path, dict[int, dict], dict[int, Path]]:
    """The run folder, each rank's record and each rank's file of the final weights."""
    (tmp / "driver.py").write_text(DRIVER)
    out = tmp / f"{name}-record"
    out.mkdir()
    args = [
        sys.executable, str(tmp / "driver.py"), *fit_args(
            tmp, name, "--trainer.max_steps", str(STEPS), "--trainer.log_every_n_steps", "1",
            "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--instrument.enabled", "false", "--trainer.gradient_clip_val", str(CLIP),
            "--model.weight_decay", str(WEIGHT_DECAY), "--checkpoint.save_last", "false", *extra,
        ),
    ]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LAMINA_TEST_OUT": str(out), "LAMINA_TEST_ROOT": root}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    records = {int(f.stem.removeprefix("rank")): json.loads(f.read_text()) for f in out.glob("rank*.json")}
    weights = {int(f.stem.removeprefix("weights")): f for f in out.glob("weights*.pt")}
    return tmp / "runs" / name / "version_0", records, weights


@pytest.fixture(scope="module")
def fsdp_and_single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    # fit_args' tiny model has data.batch_size 8: two ranks of 4 hold one process's global batch.
    fsdp = run_fit(
        tmp, "fsdp", "--trainer.devices", "2", "--data.batch_size", "4",
        "--trainer.strategy", "tests.test_fsdp.CPUFSDPStrategy",
        "--trainer.strategy.auto_wrap_policy", "[lamina.model.Block]",
        "--trainer.strategy.state_dict_type", "full", "--trainer.strategy.dict_kwargs.use_orig_params", "true",
    )
    single = run_fit(tmp, "single", "--trainer.devices", "1", "--data.batch_size", "8")
    return fsdp, single


def test_fsdp_grad_norm_is_the_global_one(fsdp_and_single):
    (_, fsdp, _), (_, single, _) = fsdp_and_single
    assert sorted(fsdp) == [0, 1] and sorted(single) == [0]
    steps = [str(s) for s in range(STEPS)]
    assert sorted(single[0]["norm"]) == steps
    assert single[0]["norm"]["0"] > CLIP  # clipping acted
    for rank in (0, 1):
        assert sorted(fsdp[rank]["norm"]) == steps
        for step in steps:
            # every rank reports the norm of the whole gradient, not of its shard
            assert fsdp[rank]["norm"][step] == pytest.approx(single[0]["norm"][step], rel=1e-5), (rank, step)


def test_fsdp_clips_the_whole_gradient_to_the_limit(fsdp_and_single):
    (_, fsdp, _), (_, single, _) = fsdp_and_single
    for record in (fsdp[0], fsdp[1], single[0]):
        for step, norm in record["norm"].items():
            assert record["clipped"][step] == pytest.approx(min(norm, CLIP), rel=1e-5), step
    for step in single[0]["clipped"]:
        assert fsdp[0]["clipped"][step] == pytest.approx(single[0]["clipped"][step], rel=1e-5)


def test_fsdp_decays_the_block_matrices_by_their_original_names(fsdp_and_single):
    (_, fsdp, _), (_, single, _) = fsdp_and_single
    n_layer = 2  # fit_args' tiny model
    for record in (fsdp[0], fsdp[1], single[0]):
        decay, no_decay = record["groups"]
        assert (decay["weight_decay"], no_decay["weight_decay"]) == (WEIGHT_DECAY, 0.0)
        assert set(decay["params"]) == expected_decayed(n_layer)
        assert len(decay["params"]) == len(expected_decayed(n_layer))
        assert "transformer.wte.weight" in no_decay["params"] and "transformer.ln_f.weight" in no_decay["params"]
    # the same groups, in the same order, as one process
    assert fsdp[0]["groups"] == fsdp[1]["groups"] == single[0]["groups"]


def test_fsdp_steps_follow_one_process(fsdp_and_single):
    """The same losses, and after the last step the same weights, gathered whole on each rank: with
    this weight decay, decaying other parameters than one process does would show."""
    (fsdp_run, _, fsdp_weights), (single_run, _, single_weights) = fsdp_and_single
    losses, reference = scalars(fsdp_run)["train/loss"], scalars(single_run)["train/loss"]
    assert sorted(losses) == sorted(reference) and len(reference) == STEPS
    for step, value in reference.items():
        assert losses[step] == pytest.approx(value, rel=1e-5, abs=1e-6), step
    assert sorted(fsdp_weights) == [0, 1] and sorted(single_weights) == [0]
    plain = torch.load(single_weights[0])
    for rank in (0, 1):
        sharded = torch.load(fsdp_weights[rank])
        assert sorted(sharded) == sorted(plain)
        for key, value in plain.items():
            torch.testing.assert_close(sharded[key], value, rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
