"""torch.compile and the instrumentation: the GPT's recording forward traces into one graph, and a compiled
bf16-mixed fit that measures runs to its end.

GPU runs train with `model.compile true` under bf16-mixed while the instrumentation measures, which no
other CPU test does cheaply (tests/test_gpu_check.py rehearses it at the 124M shape in minutes). The
instrumentation reads the model through `GPT.forward(idx, record=...)`, appending each layer's
activations to a dict: a graph break there would split every compiled forward into several graphs
with Python between them. Measurements run that forward eagerly today (`model.forward`, not the
compiled `model(...)`); the check keeps it compilable all the same, and the fit checks that compiled
training and eager measuring live side by side.

Inductor's CPU code is C++ compiled by gcc, about a second per kernel, which is most of the fit's
time: compiling in this process (no worker pool to start on a shared machine) and without vector
instructions (their headers double gcc's time) keeps it short: about 17 s with inductor's cache cold
on the development machine's two shared cores, against about 70 s with inductor's defaults, and 3 s
warm. A GPU compiles Triton kernels instead, so neither setting changes what is checked: tracing,
autograd, autocast and lowering.
"""

from __future__ import annotations

import math

import torch
import torch._dynamo

from lamina.cli import main
from lamina.model import GPT, MLP, GPTConfig
from tests.test_train import fit_args, scalars


def tiny_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()


def explain_recorded(model: GPT, idx: torch.Tensor):
    """torch._dynamo.explain of the forward a measurement makes: eval, no grad, bf16 autocast (a
    bf16-mixed run's), activations recorded; returns (the explanation, the record it filled)."""
    record: dict = {}
    torch._dynamo.reset()
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            explained = torch._dynamo.explain(model)(idx, record=record)
    finally:
        torch._dynamo.reset()
    return explained, record


def test_recording_forward_compiles_without_graph_breaks():
    model = tiny_gpt()
    idx = torch.randint(model.config.vocab_size, (2, model.config.block_size))
    explained, record = explain_recorded(model, idx)
    assert explained.graph_break_count == 0, [str(b.reason) for b in explained.break_reasons]
    assert explained.graph_count == 1
    # The record is filled as the eager forward fills it (dynamo replays the appends).
    eager: dict = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model.forward(idx, record=eager)
    assert record.keys() == eager.keys()
    for key in eager:
        assert len(record[key]) == len(eager[key]) == model.config.n_layer, key
        for got, want in zip(record[key], eager[key]):
            torch.testing.assert_close(got, want)


def test_explain_counts_a_planted_graph_break(monkeypatch):
    # The check above can fail: a print in the MLP (a side effect dynamo cannot trace) breaks the graph.
    forward = MLP.forward

    def chatty(self, x, record=None):
        print("mlp")
        return forward(self, x, record)

    monkeypatch.setattr(MLP, "forward", chatty)
    model = tiny_gpt()
    idx = torch.randint(model.config.vocab_size, (2, model.config.block_size))
    explained, _ = explain_recorded(model, idx)
    assert explained.graph_break_count > 0


def test_compiled_bf16_fit_with_measuring_runs_to_the_end(tmp_path):
    from torch._dynamo.utils import counters
    from torch._inductor import config as inductor

    steps = 1
    torch._dynamo.reset()
    counters.clear()
    try:
        with inductor.patch({"compile_threads": 1, "cpp.vec_isa_ok": False}):  # see the module's docstring
            main(fit_args(
                tmp_path, "compiled", "--model.compile", "true", "--trainer.precision", "bf16-mixed",
                "--trainer.max_steps", str(steps), "--model.n_layer", "1",
                # measuring on, at step 0 and at the end; the pictures and the modularity graphs are
                # statistics of what the forwards recorded, nothing compiled, and most of the time
                "--instrument.enabled", "true", "--instrument.probes.tokens", "512",
                "--instrument.pictures", "false", "--instrument.modularity.enabled", "false",
            ))
        compiled_graphs = counters["stats"]["unique_graphs"]
        breaks = dict(counters["graph_break"])
    finally:
        torch._dynamo.reset()
    assert compiled_graphs > 0, "model.compile true compiled nothing"
    assert not breaks, f"graph breaks in the compiled fit: {breaks}"
    tags = scalars(tmp_path / "runs" / "compiled" / "version_0")
    for tag in ("train/loss", "val/loss", "sparsity/id/mean"):
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
        assert all(math.isfinite(v) for v in tags[tag].values()), (tag, tags[tag])
    assert sorted(tags["sparsity/id/mean"]) == [0, steps]  # measured at step 0 and at the end
    assert sorted(tags["val/loss"]) == [0, steps]
