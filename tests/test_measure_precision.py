"""Measurements in fp32 whatever the trainer's precision (issue "Right on the GPU the first time").

In a `bf16-mixed` fit the callback hands `Instrumentation.measure` the trainer's autocast. The
model's forward runs under it (what is measured is the network as training computes it); no
statistic may: under autocast an fp32 matmul is a bf16 matmul with a bf16 result, so the
co-activation counts, the CETT calibration's W a and the hierarchy probe's scores keep 8
significant bits. Every CPU config trains in `32-true`, so only these tests see it.

The comparison that isolates the statistics: a reference arm whose model wraps its own forward in
the same autocast and is measured with no autocast around the measurement. Its forward rounds
exactly as the bf16-mixed arm's does, so its statistics read bit for bit the same activations, in
fp32. Nothing but the statistics' precision can then tell the arms apart, and the tests ask for
equality, no tolerance: a tolerance could only hide what they are here to catch.
"""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from lamina.instrument import Instrumentation
from lamina.instrument import callback as callback_module
from lamina.instrument.context import CounterfactualProbe
from lamina.instrument.hierarchy import embedding_output, probe_hierarchy
from lamina.instrument.lastlayer import LastLayerProbe
from lamina.instrument.modularity import find_modules
from lamina.instrument.sparsity import active_rule, forward_recorded
from lamina.lm import LanguageModel
from lamina.probes import ProbeSet, TaskProbe

VOCAB, T = 64, 32
ACTIVE_RULE = callback_module.active_rule  # the callback's own, before any test wraps it
# 4096 tokens per probe, all that modularity.tokens' default reads: pair counts reach 1000 to 2000,
# where a bf16 result keeps steps of 8 (at the 16384 tokens, steps of 64: off by up to 32).
WINDOWS = 128


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def tiny_lm() -> LanguageModel:
    torch.manual_seed(0)  # a fresh init: weak co-activation structure, Q not far above its null
    return LanguageModel(n_layer=2, n_head=2, n_embd=32, block_size=T, vocab_size=VOCAB)


def with_bf16_forward(lm: LanguageModel) -> LanguageModel:
    """A copy whose model runs its own forward under CPU bf16 autocast, as the trainer's
    forward_context does: its activations are the bf16-mixed forward's, whatever surrounds it."""
    ref = copy.deepcopy(lm)
    ref.model.forward = bf16_autocast()(ref.model.forward)
    return ref


def trainer(precision: str) -> L.Trainer:
    return L.Trainer(precision=precision, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)


def instrumentation(active: str) -> Instrumentation:
    """Every part of a measurement on synthetic probes (no tokenizer, no data module)."""
    gen = torch.Generator().manual_seed(1)
    # shuffled_draws 0: the shuffled-weights null copies the model's weights, and the bf16 reference
    # below is a wrapper around the model whose copies would lose its bf16 forward (the null's copies
    # run through the same model_forward as every other forward of a measurement).
    inst = Instrumentation(sparsity={"active": active}, pictures=False, impl="reference", ablation={"examples": 4},
                           modularity={"shuffled_draws": 0})
    task_inputs = torch.randint(VOCAB, (8, T), generator=gen)
    targets = torch.full((8, T), -1)
    targets[:, 20:24] = task_inputs[:, 21:25]
    task_ids = torch.where(targets >= 0, torch.arange(8)[:, None] % 2, -1)
    inst.probes = ProbeSet(
        probes={name: torch.randint(VOCAB, (WINDOWS, T), generator=gen) for name in ("id", "id_b", "random")},
        tasks=TaskProbe(task_inputs, targets, task_ids, ("copy", "reverse")),
    )
    tokens = torch.randint(16, (48, T), generator=gen)
    inst.hierarchy_probe = (tokens, {"noise": torch.randint(3, (48, T), generator=gen), "parity": tokens % 2})
    rows = torch.randint(VOCAB, (16, 12), generator=gen)
    inst.answer_probe = LastLayerProbe(rows, torch.randint(6, 12, (16,), generator=gen),
                                       torch.tensor([1, 2] * 8), ("",) * 16)
    prompts = tuple(tuple(int(t) for t in torch.randint(8, VOCAB, (int(n),), generator=gen))
                    for n in torch.randint(3, 9, (16,), generator=gen))
    inst.context_probe = CounterfactualProbe(prompts, tuple((5, 6) + p for p in prompts), ((1,),) * 16,
                                             ((2,),) * 16, tuple("rare" if i % 2 else "frequent" for i in range(16)))
    return inst


def measure_in_fit(lm: LanguageModel, precision: str, active: str, monkeypatch):
    """A whole measurement the way the callback runs one in a fit of `precision` (its `_measure`,
    the trainer's precision plugin): (the Measurement, the active rule's thresholds per layer)."""
    inst = instrumentation(active)
    measured, rules = [], []
    monkeypatch.setattr(inst, "_log", lambda _trainer, m: measured.append(m))
    monkeypatch.setattr(callback_module, "active_rule", lambda *a, **k: rules.append(ACTIVE_RULE(*a, **k)) or rules[-1])
    inst._measure(trainer(precision), lm, partition=True, ablate=True, hook="start", probe=True, context=True)
    return measured[0], rules[0].thresholds


def assert_same_modules(got, want):
    for layer, (g, w) in enumerate(zip(got, want, strict=True)):
        assert torch.equal(g.labels, w.labels), f"layer {layer}: labels"
        for key in ("k", "q", "q_heldout", "q_null", "q_z", "stability_floor"):
            assert getattr(g, key) == getattr(w, key), f"layer {layer}: {key} {getattr(g, key)} != {getattr(w, key)}"


@pytest.mark.parametrize("active", ["sign", "cett"])
def test_a_bf16_mixed_measurement_computes_every_statistic_in_fp32(active, one_thread, monkeypatch):
    lm = tiny_lm()
    reference = with_bf16_forward(lm)
    seen = []  # the dtype of c_fc's output in each forward: the measurement's forward must stay bf16
    lm.model.transformer.h[0].mlp.c_fc.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    got, got_thresholds = measure_in_fit(lm, "bf16-mixed", active, monkeypatch)
    want, want_thresholds = measure_in_fit(reference, "32-true", active, monkeypatch)
    assert seen and set(seen) == {torch.bfloat16}
    # The parts the comparison stands on all ran: probes, modularity, ablation losses, the last
    # layer, the hierarchy probes, context against memory.
    for tag in ("sparsity/id/layer0", "modularity/layer1/q_z", "modularity/task_loss/copy",
                "lastlayer/level2/hoyer", "layers/layer1/probe/parity/acc", "eval/context/follow/all"):
        assert tag in want.scalars, tag
    assert_same_modules(got.modules, want.modules)
    for layer, (g, w) in enumerate(zip(got_thresholds, want_thresholds, strict=True)):
        assert torch.equal(torch.as_tensor(g), torch.as_tensor(w)), f"layer {layer}: active-rule thresholds"
    differ = {tag: (want.scalars[tag], got.scalars.get(tag)) for tag in want.scalars
              if got.scalars.get(tag) != want.scalars[tag]}
    assert not differ and got.scalars.keys() == want.scalars.keys(), differ


def test_the_statistics_of_recorded_activations_ignore_an_outer_autocast(one_thread):
    lm = tiny_lm()
    model = lm.model.eval()
    gen = torch.Generator().manual_seed(2)
    windows = torch.randint(VOCAB, (2, WINDOWS, T), generator=gen)
    with torch.no_grad(), bf16_autocast():
        records = [forward_recorded(model, w) for w in windows]  # the forward in bf16, as in a fit
    active = [[(r["mlp_pre"][layer] > 0).reshape(-1, r["mlp_pre"][layer].shape[-1]) for r in records]
              for layer in range(2)]
    tokens = windows[0, :48]
    residuals = [r.reshape(-1, r.shape[-1]).float() for r in records[0]["resid"]]
    residuals = [r[: 48 * T] for r in residuals]
    with torch.no_grad():
        embedding = embedding_output(model, tokens).reshape(48 * T, -1).float()
    labels = {"noise": torch.randint(3, (48 * T,), generator=gen)}

    def statistics():
        mods = [find_modules(a, b, seed=layer) for layer, (a, b) in enumerate(active)]
        probes = probe_hierarchy(residuals, labels, tokens.reshape(-1), split=0, embedding=embedding)
        return mods, probes

    plain_mods, plain_probes = statistics()
    with bf16_autocast():
        outer_mods, outer_probes = statistics()
    assert_same_modules(outer_mods, plain_mods)
    for name, probe in plain_probes.items():
        for layer, (o, p) in enumerate(zip(outer_probes[name].layers, probe.layers, strict=True)):
            assert (o.acc, o.base_acc, o.ridge, o.gain_se) == (p.acc, p.base_acc, p.ridge, p.gain_se), f"{name} layer {layer}"

    # The CETT calibration runs forwards of its own: under an outer autocast they stay bf16 (the
    # reference's forward is bf16 by itself) while its W a runs in fp32.
    calibrate = dict(eps=0.0, cett=0.2, calibration=windows[0], batch_size=64, device=torch.device("cpu"))
    with torch.no_grad():
        plain = active_rule("cett", with_bf16_forward(lm).model, **calibrate)
        with bf16_autocast():
            outer = active_rule("cett", model, **calibrate)
    for layer, (o, p) in enumerate(zip(outer.thresholds, plain.thresholds, strict=True)):
        assert torch.equal(o, p), f"layer {layer}: cett thresholds"


def test_the_modularity_null_of_independent_units_ignores_an_outer_autocast(one_thread):
    # The case: 16384 tokens, 256 independent units, whose phi similarities are all
    # sampling noise. In bf16 the counts moved q_z from 0.80 to -0.09, k from 4 to 7 and 208 labels.
    gen = torch.Generator().manual_seed(0)
    rate = torch.rand(256, generator=gen) * 0.6 + 0.2
    a, b = (torch.rand(16384, 256, generator=gen) < rate for _ in range(2))
    plain = find_modules(a, b, seed=0)
    with bf16_autocast():
        outer = find_modules(a, b, seed=0)
    assert_same_modules([outer], [plain])


def test_measure_refuses_an_entered_autocast_it_could_not_enter_per_forward():
    inst = Instrumentation(pictures=False)
    inst.probes = ProbeSet(probes={"id": torch.zeros(1, 4, dtype=torch.long)})
    with pytest.raises(TypeError, match="factory"):
        inst.measure(tiny_lm().model, step=0, autocast=trainer("bf16-mixed").precision_plugin.forward_context())
