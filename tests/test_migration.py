"""Checkpoints and configs of an older lamina read in today's layout (lamina.pretrained.migrate):
`model.peak_flops` is `throughput.peak_flops`, `model.thought_eval` the `thought_eval` section,
`model.rlp` the model class lamina.rlp.RLPModel, and the flat `instrument` keys its sections. And the
import hygiene of the step's module: importing lamina.lm loads neither lamina.rlp nor the world generator."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lamina.callbacks import ThoughtEval, Throughput
from lamina.cli import LaminaCLI, cli_kwargs, main
from lamina.data import TextDataModule
from lamina.instrument import Instrumentation
from lamina.instrument.config import SECTIONS
from lamina.lm import LanguageModel
from lamina.pretrained import checkpoint_config, migrate
from lamina.user_errors import INSTRUMENT_MOVED, MOVED_KEYS
from lamina.rlp import RLPConfig, RLPModel, ThoughtEvalConfig
from tests.test_train import fit_args, scalars

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(n_layer=1, n_head=2, n_embd=16, block_size=32)
RLP = dict(group_size=2, max_thought_tokens=4)


def old_hparams(module: LanguageModel, **old_keys) -> dict:
    """A module's hyperparameters as lamina wrote them before the step was in one place: every model
    key flat, with `peak_flops`, `rlp` and `thought_eval` among them (None when not set)."""
    hparams = {k: v for k, v in module.hparams.items() if not k.startswith("_")}
    return {**hparams, "peak_flops": None, "rlp": None, "thought_eval": None, **old_keys}


def test_an_older_rlp_checkpoint_becomes_an_rlp_model_checkpoint(tmp_path):
    model = RLPModel(**SHAPE, rlp=RLPConfig(**RLP))
    rlp_as_written = {**vars(RLPConfig(**RLP))}  # the CLI wrote the config's mapping, not the dataclass
    old = {"state_dict": model.state_dict(), "lamina": {"tokens_seen": 64},
           "hyper_parameters": old_hparams(model, rlp=rlp_as_written, peak_flops=2.0e14,
                                           thought_eval={"every_n_steps": 5, "levels": [1]})}
    before = {k: v for k, v in old["hyper_parameters"].items()}
    new = migrate(old)
    assert old["hyper_parameters"] == before and "moved_settings" not in old["lamina"]  # the argument is kept
    hparams = new["hyper_parameters"]
    assert hparams["_class_path"] == "lamina.rlp.RLPModel"
    assert hparams["_instantiator"] == "lightning.pytorch.cli.instantiate_module"
    assert hparams["rlp"] == rlp_as_written and hparams["n_embd"] == 16
    assert not {"peak_flops", "thought_eval"} & hparams.keys()
    assert new["lamina"] == {"tokens_seen": 64, "moved_settings": {
        "throughput": {"peak_flops": 2.0e14}, "thought_eval": {"enabled": True, "every_n_steps": 5, "levels": [1]}}}
    assert new["state_dict"]["model.lm_head.weight"] is old["state_dict"]["model.lm_head.weight"]  # not copied
    # what `lamina fit --ckpt_path` of it sets: the model class and its keys, and the sections that moved
    config = checkpoint_config(old)
    assert config["model"]["class_path"] == "lamina.rlp.RLPModel"
    assert config["model"]["init_args"]["rlp"]["group_size"] == 2
    assert config["throughput"] == {"peak_flops": 2.0e14} and config["thought_eval"]["enabled"] is True
    # and Lightning reads it back as the RLPModel it is (its EMA model's weights included)
    torch.save({**new, "pytorch-lightning_version": "2.6.6"}, tmp_path / "migrated.ckpt")
    loaded = RLPModel.load_from_checkpoint(tmp_path / "migrated.ckpt")
    assert type(loaded) is RLPModel and loaded.rlp_config == RLPConfig(**RLP)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_an_older_checkpoint_built_in_python_holds_the_settings_as_dataclasses():
    model = RLPModel(**SHAPE, rlp=RLPConfig(**RLP))
    old = {"state_dict": {}, "hyper_parameters": old_hparams(model, rlp=RLPConfig(**RLP),
                                                             thought_eval=ThoughtEvalConfig(levels=[2]))}
    new = migrate(old)
    assert new["hyper_parameters"]["rlp"]["group_size"] == 2  # a mapping, as a config holds it
    moved = new["lamina"]["moved_settings"]["thought_eval"]
    assert moved["levels"] == [2] and moved["pass_at"] == [1, 4, 16, 64] and moved["enabled"] is True


def test_an_older_next_token_checkpoint_loses_its_null_keys_and_stays_a_language_model():
    model = LanguageModel(**SHAPE)
    new = migrate({"state_dict": model.state_dict(), "hyper_parameters": old_hparams(model)})
    assert new["hyper_parameters"] == dict(model.hparams)
    assert "lamina" not in new  # nothing moved: null settings are no settings
    assert checkpoint_config(new)["model"]["class_path"] == "lamina.lm.LanguageModel"
    assert migrate(new) == new  # today's layout comes back as it is


def test_a_run_resumes_from_a_checkpoint_of_an_older_lamina(tmp_path):
    """A checkpoint written by the lamina of before (its hyperparameters with the old keys, no
    `_class_path`) resumes: its model settings take the config's place as ever, and its peak_flops,
    a model setting then, reaches the Throughput callback (an MFU on the CPU, where the table has none)."""
    main(fit_args(tmp_path, "old", "--trainer.max_steps", "2", "--instrument.enabled", "false"))
    path = tmp_path / "runs" / "old" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    checkpoint["hyper_parameters"] = {**hparams, "peak_flops": 1.0e12, "rlp": None, "thought_eval": None}
    torch.save(checkpoint, tmp_path / "old.ckpt")
    main(fit_args(tmp_path, "resumed", "--trainer.max_steps", "4", "--instrument.enabled", "false",
                  "--trainer.log_every_n_steps", "1", "--ckpt_path", str(tmp_path / "old.ckpt")))
    tags = scalars(tmp_path / "runs" / "resumed" / "version_0")
    assert sorted(tags["train/loss"]) == [2, 3] and "perf/mfu" in tags


OLD_CONFIG = """\
model:
  n_layer: 1
  n_head: 2
  n_embd: 16
  block_size: 32
  peak_flops: 1.0e+15
  rlp:
    group_size: 4
    max_thought_tokens: 6
  thought_eval:
    every_n_steps: 2
    levels: [1]
trainer:
  max_steps: 5
"""


def test_an_old_style_yaml_config_is_read_in_todays_layout(tmp_path, caplog):
    old = yaml.safe_load(OLD_CONFIG)
    assert migrate(old) == {
        "model": {"class_path": "lamina.rlp.RLPModel",
                  "init_args": {"rlp": {"group_size": 4, "max_thought_tokens": 6},
                                "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32}},
        "throughput": {"peak_flops": 1.0e15},
        "thought_eval": {"enabled": True, "every_n_steps": 2, "levels": [1]},
        "trainer": {"max_steps": 5},
    }
    # an overlay over an RLP config (rlp-study-shuffled.yaml of before): RLP's keys, the evaluations on
    overlay = {"model": {"rlp": {"reward": "shuffled"}, "thought_eval": {"pass_samples": 0}}}
    assert migrate(overlay) == {"model": {"class_path": "lamina.rlp.RLPModel",
                                          "init_args": {"rlp": {"reward": "shuffled"}}},
                                "thought_eval": {"enabled": True, "pass_samples": 0}}
    assert migrate({"model": {"n_layer": 2, "rlp": None, "thought_eval": None}}) == {"model": {"n_layer": 2}}
    # through the CLI: the file as it is on disk, a line saying so
    path = tmp_path / "old.yaml"
    path.write_text(OLD_CONFIG)
    with caplog.at_level("INFO"):
        cli = LaminaCLI(LanguageModel, TextDataModule, run=False, args=["--config", str(path)], **cli_kwargs())
    assert type(cli.model) is RLPModel and cli.model.rlp_config.group_size == 4 and cli.model.hparams.n_embd == 16
    [throughput] = [c for c in cli.trainer.callbacks if isinstance(c, Throughput)]
    [thought_eval] = [c for c in cli.trainer.callbacks if isinstance(c, ThoughtEval)]
    assert throughput.peak_flops == 1.0e15 and thought_eval.config.levels == [1]
    said = [r.getMessage() for r in caplog.records if "older lamina" in r.getMessage()]
    assert len(said) == 1 and "model.rlp -> the model class lamina.rlp.RLPModel" in said[0], said


OLD_INSTRUMENT = """\
model:
  n_layer: 1
  n_head: 2
  n_embd: 16
  block_size: 32
instrument:
  enabled: true
  active: cett
  every_n_steps: 300
  light_every_n_steps: 25
  probe_tokens: 1024
  probe_batch_size: null
  modularity: false
  modularity_every_n_steps: 1200
  null_draws: 12
  ablation_every_n_steps: null
  ablation_examples: 4
  lastlayer_problems: 8
  probe_every_n_steps: 600
  probe_items: 512
  context: true
  context_prompts: 16
  pictures: false
"""


def test_an_old_instrument_section_is_read_in_its_sections(tmp_path, caplog):
    old = yaml.safe_load(OLD_INSTRUMENT)
    new = migrate(old)
    assert old["instrument"]["modularity"] is False  # the argument is kept
    assert new["instrument"] == {
        "enabled": True,
        "sparsity": {"active": "cett", "light_every_n_steps": 25},
        "every_n_steps": 300,
        "probes": {"tokens": 1024, "batch_size": None},
        "modularity": {"enabled": False, "every_n_steps": 1200, "null_draws": 12},
        "ablation": {"every_n_steps": None, "examples": 4},
        "lastlayer": {"problems": 8},
        "hierarchy": {"every_n_steps": 600, "items": 512},
        "context": {"enabled": True, "prompts": 16},
        "pictures": False,
    }
    assert new["model"] == old["model"] and migrate(new) == new  # today's layout comes back as it is
    # a section of today beside a flat key of before (an overlay written by hand): the section's key wins
    mixed = {"instrument": {"modularity": {"tokens": 64, "every_n_steps": 7}, "modularity_every_n_steps": 9,
                            "ablation": False}}
    assert migrate(mixed) == {"instrument": {"modularity": {"tokens": 64, "every_n_steps": 7},
                                             "ablation": {"enabled": False}}}
    # every old key has a section and a key there that the callback takes
    for old_key, (section, key) in INSTRUMENT_MOVED.items():
        assert key in {f.name for f in dataclasses.fields(SECTIONS[section])}, old_key
        assert MOVED_KEYS[f"instrument.{old_key}"] == f"instrument.{section}.{key}"
    # through the CLI: the file as it is on disk, the same settings, a line naming what moved
    path = tmp_path / "old.yaml"
    path.write_text(OLD_INSTRUMENT)
    with caplog.at_level("INFO"):
        cli = LaminaCLI(LanguageModel, TextDataModule, run=False, args=["--config", str(path)], **cli_kwargs())
    [inst] = [c for c in cli.trainer.callbacks if isinstance(c, Instrumentation)]
    assert inst.sparsity.active == "cett" and inst.sparsity.light_every_n_steps == 25
    assert inst.probes_config.tokens == 1024 and inst.modularity.enabled is False
    assert inst.modularity.every_n_steps == 1200 and inst.modularity.null_draws == 12
    assert inst.ablation.every_n_steps is None and inst.ablation.examples == 4 and inst.lastlayer.problems == 8
    assert inst.hierarchy.every_n_steps == 600 and inst.hierarchy.items == 512 and inst.context.prompts == 16
    assert inst.sparsity.cett == 0.2 and inst.hierarchy.examples == 256  # the keys it did not set: defaults
    said = [r.getMessage() for r in caplog.records if "older lamina" in r.getMessage()]
    assert len(said) == 1, said
    assert "instrument.modularity_every_n_steps -> instrument.modularity.every_n_steps" in said[0], said
    assert "instrument.modularity -> instrument.modularity.enabled" in said[0], said


def test_instrument_sections_from_python_and_their_checks():
    from lamina.errors import ConfigError
    from lamina.instrument.config import ModularityConfig

    inst = Instrumentation(every_n_steps=7, modularity=ModularityConfig(tokens=64), ablation={"enabled": False})
    assert inst.modularity.every_n_steps == 7  # null: every_n_steps
    assert inst.modularity.tokens == 64 and inst.ablation.enabled is False and inst.ablation.examples == 16
    with pytest.raises(ConfigError, match=r"^instrument\.ablation\.exampels: no such key \(expected some of "):
        Instrumentation(ablation={"exampels": 4})
    with pytest.raises(ConfigError, match=r"^instrument\.hierarchy\.items: expected an integer >= 1, got 0$"):
        Instrumentation(hierarchy={"items": 0})
    with pytest.raises(ConfigError, match=r"^instrument\.sparsity\.light_windows: expected an integer >= 2, got 1$"):
        Instrumentation(sparsity={"light_windows": 1})
    with pytest.raises(ConfigError, match=r"^instrument\.context\.enabled: expected true or false, got 'no'$"):
        Instrumentation(context={"enabled": "no"})
    with pytest.raises(ConfigError, match=r"^instrument\.layers: expected a LayersConfig or a mapping"):
        Instrumentation(layers=False)


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_todays_configs_need_no_migration(config):
    content = yaml.safe_load((ROOT / "configs" / config).read_text())
    assert migrate(content) == content


# ---- the step's module: lamina.lm imports nothing from lamina.rlp, nor the world generator -------------


def test_importing_lamina_lm_loads_neither_rlp_nor_the_world_generator():
    code = ("import sys, lamina.lm; print(sorted(m for m in sys.modules "
            "if m.startswith(('lamina.rlp', 'lamina.data', 'lamina.callbacks'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
    tree = ast.parse((ROOT / "src" / "lamina" / "lm.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name and name.startswith(("lamina.rlp", "lamina.data"))}


def test_a_checkpoint_with_rlp_settings_reads_where_lamina_rlp_is_not_imported(tmp_path):
    """A module built in Python keeps RLPConfig itself among its hyperparameters; lamina.lm no longer
    imports lamina.rlp, so the checkpoint readers import it when a file needs it (weights-only loading)."""
    model = RLPModel(**SHAPE, rlp=RLPConfig(**RLP))
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, tmp_path / "rlp.ckpt")
    code = (f"from lamina.pretrained import load_gpt; loaded = load_gpt({str(tmp_path / 'rlp.ckpt')!r}, "
            "tokenizer=False); print(loaded.hparams['rlp'].group_size, loaded.model.config.n_embd)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["2", "16"]
