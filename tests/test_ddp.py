"""Scale-out through Lightning's own DDP: two CPU processes (gloo) against one process with the
same global batch. Losses, validation and every instrumentation tag must agree, and rank zero must
log each tag once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lamina.data.module import ContiguousShards, window_offsets
from tests.test_train import fit_args, scalars

STEPS = 10
# Tags whose values depend on timing, not on the model.
NOT_COMPARED = ("perf/", "epoch")


def run_fit(tmp_path: Path, name: str, *extra: str) -> Path:
    lamina = Path(sys.executable).parent / "lamina"
    args = [
        str(lamina), *fit_args(
            tmp_path, name, "--trainer.max_steps", str(STEPS), "--trainer.log_every_n_steps", "1",
            "--trainer.val_check_interval", "5",
            "--instrument.every_n_steps", "5", "--instrument.probes.tokens", "512",
            "--instrument.ablation.enabled", "false",
            "--instrument.series", "all",  # every per-layer reduction compared across ranks, not the summary only
            *extra,
        ),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / "runs" / name / "version_0"


@pytest.fixture(scope="module")
def ddp_and_single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    # TINY has data.batch_size 8: two ranks of 4 hold the same global batch as one process of 8.
    ddp = run_fit(tmp, "ddp", "--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.batch_size", "4")
    single = run_fit(tmp, "single", "--trainer.devices", "1", "--data.batch_size", "8")
    return ddp, single


def test_ddp_losses_match_one_process_with_the_same_global_batch(ddp_and_single):
    ddp, single = (scalars(run) for run in ddp_and_single)
    for tag in ("train/loss", "val/loss", "val/bpb"):
        assert sorted(ddp[tag]) == sorted(single[tag]), tag
        for step, value in single[tag].items():
            assert ddp[tag][step] == pytest.approx(value, rel=1e-5, abs=1e-6), (tag, step)
    assert len(single["train/loss"]) == STEPS
    assert single["train/loss"][STEPS - 1] < single["train/loss"][0]  # it trained


def test_ddp_instrumentation_reduces_over_ranks(ddp_and_single):
    ddp, single = (scalars(run) for run in ddp_and_single)
    measured = [tag for tag in single if tag.startswith(("sparsity/", "modularity/", "layers/"))]
    assert any(t.startswith("sparsity/id/") for t in measured) and any(t.startswith("modularity/") for t in measured)
    assert "sparsity/train/mean" in measured  # the training batches' density: summed over the ranks' halves
    for tag in measured:
        assert sorted(ddp[tag]) == sorted(single[tag]), tag
        if tag.startswith("sparsity/train/"):
            assert sorted(single[tag]) == sorted(single["train/loss"]), tag  # every logged step
        else:
            assert set(single[tag]) <= {0, 5, STEPS} and len(single[tag]) >= 2, tag
        for step, value in single[tag].items():
            # each rank measured half the probe windows; the sums were all-reduced
            assert ddp[tag][step] == pytest.approx(value, rel=1e-4, abs=1e-6), (tag, step)


def test_ddp_logs_each_tag_once_from_rank_zero(ddp_and_single):
    ddp, _ = ddp_and_single
    assert len(list(ddp.glob("events.out.tfevents.*"))) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(ddp), size_guidance={"scalars": 0})
    acc.Reload()
    for tag in acc.Tags()["scalars"]:
        if tag.startswith(NOT_COMPARED):
            continue
        steps = [e.step for e in acc.Scalars(tag)]
        assert len(steps) == len(set(steps)), f"{tag} logged more than once per step: {steps}"


def test_rank_batches_together_are_the_one_process_batch():
    """Rank r's k-th batch of b rows is global batch k * W + r; together the W ranks' rows at step k
    are exactly the rows of one process's batch k of W * b (none twice, none missing)."""
    seed, n_starts, per_rank, world = 7, 10_000, 4, 2
    for step in range(5):
        ranks = [window_offsets(seed, step * world + r, per_rank, n_starts) for r in range(world)]
        one = window_offsets(seed, step, per_rank * world, n_starts)
        assert np.array_equal(np.concatenate(ranks), one)


@pytest.mark.parametrize("n, world", [(63, 2), (5, 4), (8, 3), (3, 3)])
def test_val_shards_count_every_window_once(n, world):
    shards = [list(ContiguousShards(range(n), r, world)) for r in range(world)]
    assert sum(shards, []) == list(range(n))
    assert [len(ContiguousShards(range(n), r, world)) for r in range(world)] == [len(s) for s in shards]


@pytest.mark.parametrize("overlay", ["ddp", "fsdp"])
def test_scale_out_overlays_parse_onto_gpt2(overlay, capsys):
    """The overlays (which need GPUs to run) parse on top of a model config, and FSDP wraps each
    transformer block."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import FSDPStrategy

    from lamina.cli import main
    from lamina.model import Block

    root = Path(__file__).resolve().parents[1] / "configs"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(root / "gpt2-124m.yaml"), "--config", str(root / f"{overlay}.yaml"),
              "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "devices: -1" in printed and "num_nodes: 1" in printed
    if overlay == "fsdp":
        import yaml

        spec = yaml.safe_load((root / "fsdp.yaml").read_text())["trainer"]["strategy"]
        parser = ArgumentParser()
        parser.add_argument("--strategy", type=FSDPStrategy)
        strategy = parser.instantiate(parser.parse_object({"strategy": spec})).strategy
        assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}


POISON_RANK_ONE = """
import sys
from lamina.cli import main
from lamina.lm import LanguageModel

original = LanguageModel.training_step

def training_step(self, batch, batch_idx):  # a NaN loss on rank 1 only, at step 3
    loss = original(self, batch, batch_idx)
    return loss * float("nan") if self.global_rank == 1 and self.global_step == 3 else loss

LanguageModel.training_step = training_step
main()
"""


def test_ddp_ranks_skip_a_nonfinite_step_together(tmp_path):
    """A NaN on one rank reaches every rank's gradients through the all-reduce: all ranks skip the
    same update (no rank waits in a collective the others left) and the run goes on."""
    script = tmp_path / "poisoned_fit.py"
    script.write_text(POISON_RANK_ONE)
    args = [
        sys.executable, str(script), *fit_args(
            tmp_path, "nan", "--trainer.max_steps", "6", "--trainer.log_every_n_steps", "1",
            "--instrument.enabled", "false", "--model.on_nonfinite", "skip",
            "--trainer.devices", "2", "--trainer.strategy", "ddp", "--data.batch_size", "4",
        ),
    ]
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "nan" / "version_0"
    assert scalars(run)["train/nonfinite_skips"] == {3: 1.0}
    import torch

    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert {float(s["step"]) for s in state["optimizer_states"][0]["state"].values()} == {5.0}


def test_ctrl_c_under_ddp_stops_every_rank_at_one_step(tmp_path):
    import signal
    import time

    import torch

    lamina = Path(sys.executable).parent / "lamina"
    args = [
        str(lamina), *fit_args(
            tmp_path, "int", "--trainer.max_steps", "100000",
            "--trainer.log_every_n_steps", "5", "--trainer.val_check_interval", "100000",
            "--instrument.enabled", "false", "--trainer.devices", "2", "--trainer.strategy", "ddp",
            "--data.batch_size", "4",
        ),
    ]
    process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in process.stderr:  # training has started once the module reports its MFU status
        if "MFU" in line:
            break
    time.sleep(1.5)
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in a terminal: every process of the group
    err = process.stderr.read()
    assert process.wait(timeout=120) == 130, err[-3000:]
    assert "Traceback" not in err
    stopped = [line for line in err.splitlines() if line.startswith("lamina: stopped by SIGINT")]
    assert len(stopped) == 1, err[-3000:]  # from rank zero only
    step = int(stopped[0].split("after step ")[1].split(";")[0])
    assert step > 0 and step % 5 == 0  # the ranks agree at logging steps
    last = tmp_path / "runs" / "int" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == step


def test_ddp_with_muon_matches_one_process(tmp_path):
    # Muon orthogonalises each rank's all-reduced gradient: the same update on every rank, the same
    # update as one process with the whole batch.
    muon = ("--model.optimizer", "muon", "--instrument.enabled", "false")
    ddp = scalars(run_fit(tmp_path, "ddp-muon", *muon, "--trainer.devices", "2", "--trainer.strategy", "ddp",
                          "--data.batch_size", "4"))
    single = scalars(run_fit(tmp_path, "single-muon", *muon, "--trainer.devices", "1", "--data.batch_size", "8"))
    for tag in ("train/loss", "val/loss"):
        assert sorted(ddp[tag]) == sorted(single[tag]), tag
        for step, value in single[tag].items():
            assert ddp[tag][step] == pytest.approx(value, rel=1e-4, abs=1e-5), (tag, step)
    assert single["train/loss"][STEPS - 1] < single["train/loss"][0]
