"""The study's presets read from configs/study/<group>.yaml (lamina.study.presets, claim.Presets):
the repository's files give the presets the study ran at before they moved there (the words byte
for byte, in order: a study reuses fits by their argv), values flatten as the file writes them, a
bad file is one line naming the file and the key, and `--configs DIR` reads DIR/study/."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lamina.errors import ConfigError
from lamina.study import finetune_runs, rlp_runs, world_runs
from lamina.study.claim import GPU, Presets, StudyContext, preset_for, rehearsal, repo_configs, shrunk
from lamina.study.presets import read_presets

MODULES = (world_runs, finetune_runs, rlp_runs)


def words(*pairs: str) -> tuple[str, ...]:
    """`"a.b 1", "c 2"` -> ("--a.b", "1", "--c", "2")."""
    return tuple(w for pair in pairs for w in (f"--{pair.split(' ', 1)[0]}", pair.split(" ", 1)[1]))


# ---- the repository's files: the presets as they were (literal, from before the move) -------------


def test_the_world_v2_presets_are_the_ones_the_study_ran_at():
    cpu, gpu, toy = world_runs.CPU, world_runs.GPU, world_runs.TOY
    assert cpu == world_runs.Preset(every=words("trainer.enable_progress_bar false"), steps=1500,
                                    measure_every=500, problems=128)
    assert gpu.every == (*GPU, *words("model.n_layer 6", "model.n_head 8", "model.n_embd 256",
                                      "data.max_bytes 12000000", "checkpoint.every_n_train_steps 1000",
                                      "trainer.enable_progress_bar false"))
    assert gpu.small == words("model.n_layer 4", "model.n_head 4", "model.n_embd 128")
    assert (gpu.steps, gpu.measure_every, gpu.problems, gpu.batch_size) == (3000, 1000, 256, 256)
    # dotted keys keep the order of keys that come back after others (model.warmup_steps, ...null_draws)
    assert toy.every == words(
        "data.max_bytes 120000", "data.val_tokens 512", "data.batch_size 4", "model.n_layer 2", "model.n_head 2",
        "model.n_embd 32", "trainer.log_every_n_steps 1", "trainer.val_check_interval 2",
        "checkpoint.every_n_train_steps 2", "model.warmup_steps 0", "instrument.probes.tokens 1024",
        "instrument.modularity.tokens 256", "instrument.hierarchy.items 1024", "instrument.hierarchy.examples 48",
        "instrument.context.prompts 16", "instrument.lastlayer.problems 4", "instrument.modularity.null_draws 8",
        "thought_eval.examples_per_level 8", "thought_eval.batch_size 16", "trainer.enable_progress_bar false")
    assert (toy.small, toy.steps, toy.measure_every, toy.problems, toy.batch_size) == (
        words("model.n_layer 3", "model.n_head 2", "model.n_embd 32"), 4, 4, 4, 16)


def test_the_finetune_and_rlp_presets_are_the_ones_the_study_ran_at():
    assert finetune_runs.CPU == finetune_runs.Preset()  # the configs as they are
    gpu = finetune_runs.GPU
    assert gpu.every == (*GPU, *words("data.batch_size 64", "model.block_size 128", "data.max_bytes 8000000"))
    assert gpu.tune == ("--data.levels", "[1,2]", "--data.max_bytes", "2000000")  # the list as written
    assert (gpu.pretrain_steps, gpu.tune_steps, gpu.fact_items, gpu.arith_items, gpu.probe_tokens, gpu.batch_size,
            gpu.stop_on_gate) == (3000, 800, None, 200, 16384, 256, True)
    assert finetune_runs.TOY.stop_on_gate is False and finetune_runs.TOY.fact_items == 4
    assert finetune_runs.TOY.every[-4:] == words("retention.items 3", "drift.probe_tokens 192")

    assert rlp_runs.CPU == rlp_runs.Preset() and rlp_runs.CPU.gate_range == rlp_runs.GATE_RANGE
    assert rlp_runs.GPU == rlp_runs.Preset(every=GPU, phase2=words("data.batch_size 16"), phase2_steps=60,
                                           problems=1024, samples=32)
    toy = rlp_runs.TOY
    assert toy.rlp == words("model.rlp.group_size 2", "model.rlp.max_thought_tokens 6") and toy.rlp_only == ()
    assert toy.gate_range == (0.0, 1.0) and all(type(x) is float for x in toy.gate_range)
    assert (toy.pretrain_steps, toy.phase2_steps, toy.problems, toy.samples, toy.thought_budget, toy.eval_batch) == (
        2, 2, 8, 2, 6, 64)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_each_group_reads_its_file_and_derives_test_and_rehearsal(module):
    presets = module.PRESETS
    assert isinstance(presets, Presets) and presets.path == repo_configs() / "study" / f"{presets.group}.yaml"
    assert list(presets) == ["cpu", "gpu", "test"]
    assert presets["test"] == shrunk(presets["cpu"], presets.toy)  # test: cpu at the toy's sizes
    assert presets["gpu"].every[:len(GPU)] == GPU  # one CUDA device, bf16-mixed, first
    for name in presets:  # every field of CLI words a tuple of strings, the others their dataclass's types
        for field in dataclasses.fields(presets[name]):
            value, default = getattr(presets[name], field.name), getattr(module.Preset(), field.name)
            assert type(value) is type(default) or value is None or default is None, (name, field.name)
    ctx = StudyContext("x", Path("unused"), [1], "gpu", None, repo_configs(), rehearse=True)
    assert preset_for(ctx, presets, module.TOY) == rehearsal(presets["gpu"], presets.toy)


# ---- the file's format ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    every: tuple[str, ...] = ()
    steps: int = 1
    cap: int | None = None
    stop: bool = True
    span: tuple[float, float] = (0.0, 1.0)


GOOD = {"every": "{}", "steps": "3", "cap": "null", "stop": "true", "span": "[0, 0.5]"}


def preset_file(tmp_path: Path, gpu: dict[str, str] | None = None, drop: str = "", extra: str = "") -> Path:
    """A preset file of `Sizes`: cpu and toy GOOD, gpu GOOD with `gpu`'s fields (YAML text) instead."""
    def section(name, fields):
        return f"{name}:\n" + "".join(f"  {k}: {v}\n" for k, v in fields.items())
    text = "".join(section(name, {**GOOD, **(gpu or {})} if name == "gpu" else GOOD)
                   for name in ("cpu", "gpu", "toy") if name != drop) + extra
    path = tmp_path / "sizes.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_values_flatten_as_the_file_writes_them(tmp_path):
    every = """
    trainer: {enable_progress_bar: false, accelerator: gpu}
    model: {n_layer: 3, lr: 1e-5, wd: 3.0e-5, init: "1e-05", name: 'a b', levels: [1,2], spaced: [1, 2]}
    trainer.precision: bf16-mixed
    instrument:
      probes: {tokens: 0010}
      modularity.null_draws: False
    data.max_bytes: null"""
    path = preset_file(tmp_path, {"every": every.replace("\n", "\n  "), "span": "[0.25, 1]", "cap": "7"})
    read = read_presets(path, Sizes)
    assert read["cpu"] == Sizes(steps=3, span=(0.0, 0.5)) and read["toy"] == read["cpu"]
    assert read["gpu"].every == words(
        "trainer.enable_progress_bar false", "trainer.accelerator gpu", "model.n_layer 3", "model.lr 1e-5",
        "model.wd 3.0e-5", "model.init 1e-05", "model.name a b", "model.levels [1,2]", "model.spaced [1, 2]",
        "trainer.precision bf16-mixed", "instrument.probes.tokens 0010", "instrument.modularity.null_draws False",
        "data.max_bytes null")
    assert read["gpu"].span == (0.25, 1.0) and read["gpu"].cap == 7
    # a plain value's word reads back (the CLI reads words as YAML) to what the file holds there
    held = yaml.safe_load(path.read_text(encoding="utf-8"))["gpu"]["every"]
    assert (held["model"]["lr"], held["model"]["wd"], held["instrument"]["probes"]["tokens"]) == ("1e-5", 3.0e-5, 8)
    plain = {"trainer.enable_progress_bar": False, "model.n_layer": 3, "model.lr": "1e-5", "model.wd": 3.0e-5,
             "model.levels": [1, 2], "instrument.probes.tokens": 8, "instrument.modularity.null_draws": False,
             "data.max_bytes": None}  # (YAML 1.1: 1e-5, without a dot, is a string; 0010 is octal)
    got = dict(zip(read["gpu"].every[0::2], read["gpu"].every[1::2]))
    assert {key: yaml.safe_load(got[f"--{key}"]) for key in plain} == plain


@pytest.mark.parametrize("gpu, drop, extra, key", [
    ({"stepz": "3"}, "", "", "gpu.stepz"),  # an unknown field
    ({}, "toy", "", "no toy"),  # a missing preset
    ({}, "", "test:\n  steps: 1\n", "test:"),  # test is derived, not written
    ({"steps": "many"}, "", "", "gpu.steps: expected an integer, got 'many'"),
    ({"steps": "true"}, "", "", "gpu.steps: expected an integer, got True"),  # a bool is no count
    ({"cap": "1.5"}, "", "", "gpu.cap: expected an integer or null"),
    ({"stop": "1"}, "", "", "gpu.stop: expected true or false"),
    ({"span": "[0.1]"}, "", "", "gpu.span: expected a list of 2"),
    ({"every": "[--model.n_layer, 2]"}, "", "", "gpu.every: expected a mapping of config keys"),
    ({"every": "{model: {n_layer: 2}, model.n_layer: 3}"}, "", "", "gpu.every: expected each config key once, "
                                                                  "got model.n_layer twice"),
    ({"every": "{model: {n_layer: }}"}, "", "", "gpu.every.model.n_layer: expected a value"),
    ({"every": "{a: {1: 2}}"}, "", "", "gpu.every.a: expected a mapping of config keys"),
    ({"steps": "3\n  steps: 4"}, "", "", "gpu.steps: expected it once"),
    ({"steps": "[3"}, "", "", "expected a YAML file of presets"),
])
def test_a_bad_preset_file_is_one_line_naming_the_file_and_the_key(tmp_path, gpu, drop, extra, key):
    path = preset_file(tmp_path, gpu, drop, extra)
    with pytest.raises(ConfigError) as err:
        read_presets(path, Sizes)
    line = str(err.value)
    assert line.startswith(f"{path}: ") and key in line and "\n" not in line, line


def test_presets_come_from_the_configs_folder_the_study_is_pointed_at(tmp_path):
    """`--configs DIR`: DIR/study/<group>.yaml, its toy sizes too; the repository's otherwise."""
    shutil.copytree(repo_configs() / "study", tmp_path / "study")
    path = tmp_path / "study" / "world-v2.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("steps: 3000", "steps: 3100").replace("  steps: 4\n", "  steps: 5\n"),
                    encoding="utf-8")
    ctx = StudyContext("hierarchy", Path("unused"), [1], "gpu", None, tmp_path)
    assert world_runs.preset_of(ctx).steps == 3100
    assert world_runs.preset_of(dataclasses.replace(ctx, rehearse=True)).steps == 5  # DIR's toy
    assert world_runs.preset_of(dataclasses.replace(ctx, configs=repo_configs())).steps == 3000
    fine = StudyContext("finetune-fragility", Path("unused"), [1], "test", None, tmp_path)
    assert preset_for(fine, finetune_runs.PRESETS, finetune_runs.TOY) == finetune_runs.PRESETS["test"]  # same text
    with pytest.raises(ConfigError, match=r"^study world-v2: expected the study's configs, got no .*world-v2.yaml"):
        Presets("world-v2", world_runs.Preset, tmp_path / "nowhere")
    (tmp_path / "study" / "finetune-fragility.yaml").unlink()
    with pytest.raises(ConfigError, match="^study finetune-fragility: expected the study's configs"):
        preset_for(fine, finetune_runs.PRESETS, finetune_runs.TOY)
