"""What a measurement leaves out to cost less (issue "Watch it live"), and that nothing it keeps
changes: per-token statistics on `id` alone, the permutation null as a switch, the light tier sized
to the training between two, fewer windows for the family and level probes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lamina.data import TextDataModule
from lamina.instrument import Instrumentation
from lamina.instrument.callback import light_windows
from lamina.instrument.config import MIN_LIGHT_WINDOWS, SparsityConfig
from lamina.instrument.modularity import find_modules, modularity_scalars
from lamina.model import GPT, GPTConfig
from lamina.probes import ProbeSet, build_probes

PER_TOKEN = ("l1", "l2", "hoyer", "dead_frac", "top10_l1_share")


def small_model() -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=48, block_size=16, n_layer=2, n_head=2, n_embd=16))
    model.eval()
    return model


def probe_set() -> ProbeSet:
    gen = torch.Generator().manual_seed(1)
    windows = {name: torch.randint(0, 48, (12, 16), generator=gen) for name in ("id", "id_b", "random", "other")}
    windows["shuffled"] = windows["id"][:, torch.randperm(16, generator=gen)]
    return ProbeSet(probes=windows)


def measured(ends: bool = True, **settings):
    inst = Instrumentation(ablation={"enabled": False}, **settings)
    inst.probes = probe_set()
    return inst, inst.measure(small_model(), step=0, ends=ends)


def test_per_token_statistics_on_id_alone_leave_every_density_and_gap_as_they_were(one_thread):
    _, only_id = measured(modularity={"shuffled_draws": 0})
    _, every = measured(modularity={"shuffled_draws": 0}, sparsity={"token_stats": "all"})
    for probe in ("id_b", "random", "other", "shuffled"):
        for stat in PER_TOKEN:
            assert f"sparsity/{probe}/{stat}" in every.scalars and f"sparsity/{probe}/{stat}" not in only_id.scalars
    for stat in PER_TOKEN:
        assert only_id.scalars[f"sparsity/id/{stat}"] == every.scalars[f"sparsity/id/{stat}"]
        assert only_id.scalars[f"sparsity/id/layer1/{stat}"] == every.scalars[f"sparsity/id/layer1/{stat}"]
    kept = [tag for tag in every.scalars if tag.split("/")[-1] not in PER_TOKEN]
    assert any(tag.startswith("sparsity/gap/shuffled") for tag in kept) and any("/se" in tag for tag in kept)
    for tag in kept:  # densities, gaps with se and z, layers, modularity: bit for bit the same
        assert only_id.scalars[tag] == every.scalars[tag], tag
    for tag, rates in every.histograms.items():
        assert (only_id.histograms[tag] == rates).all(), tag
    # Under instrument.series all id's statistics by layer are series already: the picture of them is
    # drawn for several probes only; under summary (the default) they are not, and it is drawn for id too.
    _, only_id_all = measured(modularity={"shuffled_draws": 0}, series="all")
    assert "sparsity/stats_by_layer" in every.figures and "sparsity/stats_by_layer" not in only_id_all.figures
    assert "sparsity/stats_by_layer" in only_id.figures
    assert only_id_all.scalars == only_id.scalars  # the setting moves tags, it changes no number


def test_token_stats_setting_is_checked():
    from lamina.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^instrument\.sparsity\.token_stats: expected one of id, all, got 'some'$"):
        Instrumentation(sparsity={"token_stats": "some"})


@pytest.mark.parametrize(("when", "ends", "drawn"), [
    ("off", True, False), ("ends", False, False), ("ends", True, True), ("every", False, True),
])
def test_the_permutation_null_where_it_is_drawn_and_nothing_else_moves(when, ends, drawn, one_thread):
    inst, m = measured(ends=ends, modularity={"permutation_null": when, "shuffled_draws": 2})
    _, reference = measured(modularity={"permutation_null": "every", "shuffled_draws": 2})
    for layer in range(2):
        tag = f"modularity/layer{layer}"
        for key in ("q_null_mean", "q_null_std", "q_null_lo", "q_null_hi", "q_z"):
            assert (f"{tag}/{key}" in m.scalars) == drawn
            if drawn:
                assert m.scalars[f"{tag}/{key}"] == reference.scalars[f"{tag}/{key}"]
        for key in ("q", "q_heldout", "q_shuffled_mean", "q_shuffled_z", "stability_floor", "modules"):
            assert m.scalars[f"{tag}/{key}"] == reference.scalars[f"{tag}/{key}"], key  # the rest unchanged
        assert (m.modules[layer].q_null != []) == drawn and (m.modules[layer].q_z is not None) == drawn
        step, q, q_heldout, q_null, q_shuffled = inst.q_history[layer][0]
        assert (q_null != []) == drawn and len(q_shuffled) == 2 and q == m.scalars[f"{tag}/q"]
    # The picture reads the shuffled-weights null (the one that decides) wherever it was drawn.
    assert "shuffled-weights" in m.figures["modularity/q_vs_null"]._suptitle.get_text()


def test_the_picture_falls_back_to_the_permutation_null_without_shuffled_draws(one_thread):
    _, m = measured(modularity={"shuffled_draws": 0})
    assert "permutation" in m.figures["modularity/q_vs_null"]._suptitle.get_text()


def test_the_fit_draws_the_permutation_null_at_step_0_and_the_end_only():
    from lamina.instrument.callback import Instrumentation as Callback

    calls = []
    inst = Callback()
    inst.measure = lambda model, **kw: calls.append(kw) or SimpleNamespace(scalars={})  # what _measure asks
    fake = SimpleNamespace(global_step=0, precision_plugin=SimpleNamespace(forward_context=None), global_rank=0,
                           world_size=1, is_global_zero=False, loggers=[])
    module = SimpleNamespace(model=None, device=torch.device("cpu"))
    for hook in ("start", "batch", "end"):
        inst._measure(fake, module, partition=True, ablate=False, hook=hook)
    assert [c["ends"] for c in calls] == [True, False, True]


def test_find_modules_without_null_draws_logs_no_null_tags():
    gen = torch.Generator().manual_seed(2)
    active = torch.rand(200, 12, generator=gen) < 0.4
    mods = find_modules(active, active, null_draws=0)
    assert mods.q_null == [] and mods.k_null == [] and mods.q_null_mean is None
    tags = modularity_scalars([mods])
    assert "modularity/layer0/q" in tags and not any("q_null" in t or t.endswith("/q_z") for t in tags)
    with_null = find_modules(active, active, null_draws=8)
    assert with_null.q == mods.q and torch.equal(with_null.labels, mods.labels)


# ---- the light tier's windows ----------------------------------------------------------------------


def trainer(batch_size: int, accumulate: int = 1, world_size: int = 1):
    return SimpleNamespace(datamodule=SimpleNamespace(hparams=SimpleNamespace(batch_size=batch_size)),
                           accumulate_grad_batches=accumulate, world_size=world_size)


@pytest.mark.parametrize(("batch", "accumulate", "world", "every", "want"), [
    (32, 1, 1, 50, 32),  # tiny.yaml's and world-v2-tiny.yaml's batch: the 32 windows they had
    (12, 1, 1, 50, 12),  # a user's text at a batch of 12: 600 sequences between two light measurements
    (2, 1, 1, 50, MIN_LIGHT_WINDOWS),  # never fewer than 8
    (8, 4, 2, 50, 64),  # every sequence of a step counts: 8 rows x 4 micro-batches x 2 devices
    (32, 1, 1, 500, 80),  # never more than the probe holds
])
def test_light_windows_follow_the_sequences_trained_between_two(batch, accumulate, world, every, want):
    sparsity = SparsityConfig(light_every_n_steps=every)
    assert light_windows(sparsity, trainer(batch, accumulate, world), probe_windows=80) == want


def test_light_windows_set_in_the_config_are_kept():
    assert light_windows(SparsityConfig(light_windows=5), trainer(64), probe_windows=80) == 5


# ---- fewer windows for the family and level probes ----------------------------------------------------


@pytest.fixture(scope="module")
def world_dm(tmp_path_factory):
    dm = TextDataModule(block_size=32, batch_size=4, max_bytes=120_000, val_tokens=1024, val_fraction=0.05,
                        cache_dir=str(tmp_path_factory.mktemp("cache")), seed=3)
    dm.prepare_data()
    dm.setup()
    return dm


def test_family_tokens_give_the_family_and_level_probes_their_first_windows(world_dm):
    full = build_probes(world_dm, tokens=256, seed=0, tasks=False)
    fewer = build_probes(world_dm, tokens=256, seed=0, tasks=False, family_tokens=128)
    assert list(fewer.probes) == list(full.probes)
    for name, windows in full.probes.items():
        if name.startswith(("family/", "level/", "ood/level/")):
            assert fewer.probes[name].shape == (4, 32) and torch.equal(fewer.probes[name], windows[:4]), name
        else:
            assert torch.equal(fewer.probes[name], windows), name
    assert any("4 windows each, not 8 (instrument.probes.family_tokens)" in note for note in fewer.notes)
    assert not any("family_tokens" in note for note in full.notes)
    more = build_probes(world_dm, tokens=256, seed=0, tasks=False, family_tokens=10_000)  # never more than id's
    assert all(torch.equal(more.probes[n], w) for n, w in full.probes.items())
