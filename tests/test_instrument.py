"""lamina.instrument: known answers on planted models and matrices, and end to end through the CLI."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lamina import kernels as K
from lamina import measures
from lamina.cli import main
from lamina.instrument import Instrumentation
from lamina.instrument.ablation import task_losses
from lamina.instrument.config import AblationConfig, ModularityConfig
from lamina.instrument.layers import GramAccumulator
from lamina.instrument.modularity import find_modules
from lamina.instrument.pictures import figure_to_array
from lamina.model import GPT, GPTConfig
from lamina.probes import ProbeSet, TaskProbe

IMPLS = ["reference"] + (["kernel"] if K.HAS_TRITON and K.interpreted() else [])

# ---- modularity and layers on planted inputs ---------------------------------------------------------


def test_planted_modules_are_found_with_their_q_and_dead_units_excluded():
    # Units 0-5 fire together on a, 6-11 together on b (a, b independent and balanced); 12-13 dead.
    a = torch.tensor([1, 1, 0, 0] * 25, dtype=torch.float32)
    b = torch.tensor([1, 0, 1, 0] * 25, dtype=torch.float32)
    acts = torch.cat([a[:, None].repeat(1, 6), b[:, None].repeat(1, 6), torch.zeros(100, 2)], dim=1)
    active = acts > 0.5
    mods = find_modules(active, active)
    assert mods.k == 2
    assert mods.labels[:6].unique().numel() == 1 and mods.labels[6:12].unique().numel() == 1
    assert mods.labels[0] != mods.labels[6] and (mods.labels[12:] == -1).all()
    assert mods.q == pytest.approx(0.5)
    again = find_modules(active, active, previous=mods.labels)
    assert again.stability == pytest.approx(1.0)


def test_streamed_gram_gives_the_effective_rank_of_the_whole_stream():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=gen) @ torch.diag(torch.linspace(0.1, 3.0, 12))
    gram = GramAccumulator()
    for chunk in x.view(3, 100, 12):
        gram.update(chunk)
    assert gram.effective_rank() == pytest.approx(measures.effective_rank(x - x.mean(dim=0)), rel=1e-9)
    assert gram.effective_rank(centred=False) == pytest.approx(measures.effective_rank(x), rel=1e-9)


# ---- a planted ReLU model whose densities are known -----------------------------------------------------

N_EMBD, D_FF = 16, 64


def planted_model() -> GPT:
    """Attention and MLP outputs are zero, so every layer sees LN(wte[token]) with wte[t] = s1 v + s2 u
    (v, u orthogonal +-1 Walsh vectors; s1 = +1 for even t, s2 = +1 for t % 4 < 2). Layer l: units
    0..8l+7 read v (active iff t even), the next 8 read u (active iff t % 4 < 2), the rest have bias -1
    (dead)."""
    config = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=N_EMBD, activation="relu", bias=True)
    model = GPT(config)
    v = torch.tensor([1.0, -1.0] * (N_EMBD // 2))
    u = torch.tensor([1.0, 1.0, -1.0, -1.0] * (N_EMBD // 4))
    t = torch.arange(config.padded_vocab_size)
    s1, s2 = 1.0 - 2.0 * (t % 2), 1.0 - 2.0 * ((t // 2) % 2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.wte.weight.copy_(s1[:, None] * v + s2[:, None] * u)
        for layer, block in enumerate(model.transformer.h):
            for ln in (block.ln_1, block.ln_2):
                ln.weight.fill_(1.0)
            n_v = 8 * (layer + 1)
            block.mlp.c_fc.weight[:n_v] = v / N_EMBD
            block.mlp.c_fc.weight[n_v : n_v + 8] = u / N_EMBD
            block.mlp.c_fc.bias[n_v + 8 :] = -1.0
        model.transformer.ln_f.weight.fill_(1.0)
    return model


@pytest.mark.parametrize("impl", IMPLS)
def test_planted_relu_model_gives_known_sparsity(impl):
    cycle = torch.arange(4).repeat(8).view(2, 16)  # tokens 0,1,2,3: both features balanced, independent
    probes = ProbeSet(
        probes={
            "id": cycle,
            "even": torch.full((2, 16), 6),  # even, 6 % 4 >= 2: only the v units fire
            "odd": torch.full((2, 16), 3),  # odd, 3 % 4 >= 2: nothing fires
        }
    )
    inst = Instrumentation(impl=impl, ablation=AblationConfig(enabled=False))
    inst.probes = probes
    model = planted_model()
    model.train()
    m = inst.measure(model, step=0)
    assert model.training and all(mod.training for mod in model.modules())  # modes restored
    for layer in range(2):
        n_v = 8 * (layer + 1)
        assert m.scalars[f"sparsity/id/layer{layer}"] == pytest.approx((n_v + 8) / D_FF * 0.5)
        assert m.scalars[f"sparsity/even/layer{layer}"] == pytest.approx(n_v / D_FF)
        assert m.scalars[f"sparsity/odd/layer{layer}"] == 0.0
        assert m.scalars[f"sparsity/id/layer{layer}/dead_frac"] == pytest.approx(1 - (n_v + 8) / D_FF)
        rates = m.histograms[f"sparsity/id/layer{layer}/firing_rate"]
        np.testing.assert_allclose(rates, [0.5] * (n_v + 8) + [0.0] * (D_FF - n_v - 8))
        # Two planted modules (v units, u units), independent: two cliques of similarity 1 and nothing
        # between them, so Q = 1 - (d_v^2 + d_u^2) / (d_v + d_u)^2 with clique degrees n (n - 1).
        mods = m.modules[layer]
        assert mods.k == 2 and (mods.labels[n_v + 8 :] == -1).all()
        assert mods.labels[:n_v].unique().numel() == 1 and mods.labels[n_v : n_v + 8].unique().numel() == 1
        d_v, d_u = n_v * (n_v - 1), 8 * 7
        assert m.scalars[f"modularity/layer{layer}/q"] == pytest.approx(1 - (d_v**2 + d_u**2) / (d_v + d_u) ** 2)
    mean_id = (16 / D_FF * 0.5 + 24 / D_FF * 0.5) / 2
    assert m.scalars["sparsity/id/mean"] == pytest.approx(mean_id)
    assert m.scalars["sparsity/gap/odd"] == pytest.approx(mean_id)
    assert m.scalars["sparsity/gap/even"] == pytest.approx(mean_id - (8 + 16) / 2 / D_FF)
    for tag in ("sparsity/density", "modularity/layer0/coactivation", "modularity/q_vs_null"):
        image = figure_to_array(m.figures[tag])
        assert image.dtype == np.uint8 and image.shape[2] == 3 and image.std() > 0, tag


def test_ablation_hook_equals_zeroing_the_projection_columns_and_is_removed():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, n_embd=16))
    model.eval()
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, 40, (5, 12), generator=gen)
    targets = torch.where(torch.rand(5, 12, generator=gen) < 0.5, torch.randint(0, 40, (5, 12), generator=gen), -1)
    task_ids = torch.where(targets >= 0, torch.randint(0, 3, (5, 12), generator=gen), -1)
    probe = TaskProbe(inputs, targets, task_ids, ("a", "b", "c"))
    modules = [torch.tensor([0, 5, 7]), torch.arange(20, 64)]
    with torch.no_grad():
        got = task_losses(model, probe, 3, torch.device("cpu"), layer=1, modules=modules)
        for m, units in enumerate(modules):
            ablated = copy.deepcopy(model)
            ablated.transformer.h[1].mlp.c_proj.weight[:, units] = 0.0
            logits, _ = ablated(inputs)
            loss = F.cross_entropy(logits[targets >= 0], targets[targets >= 0], reduction="none")
            want = [loss[task_ids[targets >= 0] == t].mean().item() for t in range(3)]
            np.testing.assert_allclose(got[m].numpy(), want, rtol=1e-5)
    assert all(not block.mlp.c_proj._forward_pre_hooks for block in model.transformer.h)


# ---- end to end through the CLI -------------------------------------------------------------------------

TINY = [
    "--model.n_layer", "2", "--model.n_head", "2", "--model.n_embd", "32", "--model.block_size", "32",
    "--model.warmup_steps", "5", "--model.lr", "3e-3",
    "--data.batch_size", "8", "--data.max_bytes", "300000", "--data.val_tokens", "2048",
    "--data.families", "[prose, strings]",
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false", "--seed_everything", "7",
    "--trainer.max_steps", "12", "--trainer.log_every_n_steps", "1", "--trainer.val_check_interval", "6",
    "--instrument.every_n_steps", "5", "--instrument.ablation.every_n_steps", "10",
    "--instrument.probes.tokens", "256", "--instrument.ablation.examples", "4",
]


def fit(tmp_path: Path, name: str, *extra: str) -> Path:
    main([
        "fit", *TINY,
        "--data.cache_dir", str(tmp_path / "cache"),
        "--trainer.logger.class_path", "lightning.pytorch.loggers.TensorBoardLogger",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.logger.init_args.name", name,
        *extra,
    ])
    return tmp_path / "runs" / name / "version_0"


def events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "histograms": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator) -> dict[str, dict[int, float]]:
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


INSTRUMENT_PREFIXES = ("sparsity/", "modularity/", "layers/", "lastlayer/", "perf/instrument")


def test_fit_logs_tags_and_pictures_and_leaves_the_loss_curve_bit_identical(tmp_path):
    probe_file = tmp_path / "letters.txt"
    probe_file.write_text("Dear friend, the weather here is fine and the sea is calm.\n" * 30)
    # (every measured tag a series: instrument.series summary is tests/test_instrument_series.py's)
    on = events(fit(tmp_path, "on", "--data.probe_files", f"[{probe_file}]", "--instrument.series", "all",
                    "--instrument.sparsity.light_every_n_steps", "2", "--instrument.sparsity.light_windows", "4"))
    off = events(fit(tmp_path, "off", "--data.probe_files", f"[{probe_file}]", "--instrument.enabled", "false"))
    tags = scalars(on)
    expected = [
        "sparsity/id/layer0", "sparsity/id/layer1", "sparsity/id/mean", "sparsity/id/layer0/hoyer",
        "sparsity/random/mean", "sparsity/shuffled/layer1", "sparsity/ood/arith/layer0", "sparsity/ood/letters/mean",
        "sparsity/level/5/mean", "sparsity/gap/id_b", "sparsity/gap/random", "sparsity/gap/ood/arith",
        "sparsity/gap/id_b/se", "sparsity/gap/id_b/z", "sparsity/gap/random/layer1/z", "sparsity/random_uniform/mean",
        "sparsity/gap/shuffled/layer0/se",
        "modularity/layer0/q", "modularity/layer0/q_z", "modularity/layer0/q_null_mean", "modularity/layer0/q_heldout",
        "modularity/layer1/stability", "modularity/layer1/stability_floor", "modularity/layer0/modules",
        "modularity/unlearned_tasks", "modularity/task_loss/reverse", "modularity/task_chance/reverse",
        "layers/layer1/effective_rank", "layers/layer1/effective_rank_floor",
        "lastlayer/level1/top5_energy", "lastlayer/level3/entropy_rank/se", "lastlayer/gap/level4/hoyer/z",
    ]
    for tag in expected:
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
    # The full battery at step 0, every 5 and the end; the light tier every 2 steps in between.
    assert sorted(tags["sparsity/id/mean"]) == [0, 2, 4, 5, 6, 8, 10, 12]
    assert sorted(tags["sparsity/id/layer0/hoyer"]) == [0, 5, 10, 12]  # per-token statistics: full only
    assert sorted(tags["sparsity/ood/arith/mean"]) == [0, 5, 10, 12]  # the light tier's four probes only
    assert sorted(tags["perf/instrument_light_seconds"]) == [2, 4, 6, 8]
    # On 4 of the 8 windows, the light gap's interval is wider than the full battery's next to it.
    assert tags["sparsity/gap/id_b/se"][4] > tags["sparsity/gap/id_b/se"][5]
    # The training batches' density, from the training forward, at every step train/loss is logged.
    assert sorted(tags["sparsity/train/mean"]) == sorted(tags["train/loss"]) == list(range(12))
    assert all(0 < v < 1 for v in tags["sparsity/train/layer1"].values())
    assert sorted(tags["modularity/unlearned_tasks"]) == [0, 10, 12]  # ablation: 0, every 10, end
    # 12 steps learn no string task: specificity is undefined, and not logged as if it were a number.
    assert tags["modularity/unlearned_tasks"][12] == 11 and "modularity/layer0/specificity" not in tags
    assert sorted(tags["modularity/layer0/stability"]) == [5, 10, 12]  # needs a previous partition
    for tag in ("sparsity/id/mean", "sparsity/random/mean", "modularity/layer0/q"):
        assert all(math.isfinite(v) for v in tags[tag].values()), tag
    images = on.Tags()["images"]
    for tag in ("sparsity/density", "modularity/layer0/coactivation", "modularity/q_vs_null"):
        assert tag in images, f"{tag} missing from {images}"
    assert "sparsity/id/layer0/firing_rate" in on.Tags()["histograms"]

    off_tags = scalars(off)
    assert not [t for t in off_tags if t.startswith(INSTRUMENT_PREFIXES)]
    assert not off.Tags()["images"] and not off.Tags()["histograms"]
    # Instrumentation changes nothing in training: the same losses, bit for bit.
    assert sorted(tags["train/loss"]) == sorted(off_tags["train/loss"]) and len(tags["train/loss"]) >= 10
    assert tags["train/loss"] == off_tags["train/loss"]
    assert tags["val/loss"] == off_tags["val/loss"]


def test_bad_instrument_key_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fit(tmp_path, "bad", "--instrument.every_n_steps", "0")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "instrument.every_n_steps" in err


@pytest.mark.parametrize("ablation_every, ablated", [(None, [12]), (4, [4, 8, 12])])
def test_measurement_schedule_counts_optimizer_steps_and_ablates_at_the_end(ablation_every, ablated):
    inst = Instrumentation(every_n_steps=3, modularity=ModularityConfig(every_n_steps=6),
                           ablation=AblationConfig(every_n_steps=ablation_every))
    inst.probes = ProbeSet(probes={"id": torch.zeros(1, 4, dtype=torch.long)})
    calls = []
    probed = []

    def record(trainer, module, partition, ablate, hook, probe, context):
        calls.append((trainer.global_step, partition, ablate))
        probed.append((trainer.global_step, probe, context))

    inst._measure = record
    for step in range(1, 13):
        trainer = type("T", (), {"global_step": step, "max_steps": 12})()
        inst.on_train_batch_end(trainer, None, None, None, 0)
        inst.cadence.last_step = step
    assert [s for s, _, _ in calls] == [3, 4, 6, 8, 9, 12] if ablation_every == 4 else [3, 6, 9, 12]
    assert [s for s, _, ablate in calls if ablate] == ablated
    assert all(partition for s, partition, ablate in calls if s % 6 == 0 or ablate)
    # Without their own cadence, the hierarchy probes and the context test run at the end only.
    assert [s for s, probe, _ in probed if probe] == [12]
    assert [s for s, _, context in probed if context] == [12]


@pytest.mark.parametrize("activation, rule", [("relu2", "sign"), ("swiglu", "sign"), ("gelu", "eps")])
def test_train_density_counts_the_training_forward_and_changes_nothing(activation, rule):
    """The hooks' count equals the active share of the same forward's recorded pre-activations
    (known by construction), skip eval-mode forwards, and leave the loss and gradients bit-identical."""
    from lamina.instrument.sparsity import ActiveRule
    from lamina.instrument.train_density import TrainDensity

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64, activation=activation))
    x, y = torch.randint(0, 64, (2, 3, 16)), torch.randint(0, 64, (2, 3, 16))
    active_rule = ActiveRule(rule, [0.0] if rule == "sign" else [0.05])
    plain = copy.deepcopy(model)
    hooks = TrainDensity()
    hooks.attach(model, active_rule)
    for i in range(2):  # two micro-batches of one step
        _, loss = model(x[i], y[i])
        _, plain_loss = plain(x[i], y[i])
        assert torch.equal(loss, plain_loss)
        loss.backward(), plain_loss.backward()
    model.eval()
    model(x[0])  # an evaluation inside the step: not counted
    hooks.detach()
    assert not hooks.attached and not any(m._forward_hooks for m in model.modules())
    for p, q in zip(model.parameters(), plain.parameters()):
        assert torch.equal(p.grad, q.grad)
    got = hooks.scalars()
    with torch.no_grad():
        record: dict = {}
        plain.eval()
        plain(x.flatten(0, 1), record=record)
    for layer in range(2):
        expected = active_rule.active(record, layer).double().mean().item()
        assert got[f"sparsity/train/layer{layer}"] == pytest.approx(expected, abs=1e-12)
    assert got["sparsity/train/mean"] == pytest.approx(sum(got[f"sparsity/train/layer{i}"] for i in range(2)) / 2)
    assert TrainDensity().scalars() == {}


def test_density_accumulator_equals_the_sparsity_accumulators_density():
    torch.manual_seed(1)
    acts, gate = torch.randn(3, 5, 7, 24), torch.randn(3, 5, 7, 24)
    thresholds = torch.rand(24)
    for eps, g in ((0.0, gate), (0.3, None), (thresholds, None)):
        full, light = measures.SparsityAccumulator(24, eps), measures.DensityAccumulator(24, eps)
        for batch, batch_gate in zip(acts, gate):
            full.update(batch, gate=None if g is None else batch_gate)
            light.update(batch, gate=None if g is None else batch_gate)
        a, b = full.compute(), light.compute()
        assert b["frac_active"] == pytest.approx(a["frac_active"], abs=1e-15) and b["tokens"] == a["tokens"] == 105
        assert torch.equal(b["firing_rate"], a["firing_rate"])
        assert torch.equal(light.window_frac_active(), full.window_frac_active())
    with pytest.raises(ValueError, match="windows"):
        measures.DensityAccumulator(24, 0.0).update(torch.randn(5, 24))
