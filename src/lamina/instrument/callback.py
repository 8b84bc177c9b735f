"""`Instrumentation`: the Lightning callback that measures the model every N steps.

It composes the parts of this package: probes (`lamina.probes`), sparsity, modularity, layers,
ablation and pictures. At fit start it builds the probe set once; at step 0, every
`every_n_steps` optimizer steps and at the end of training it runs the probes through the model
in eval mode, without grad, under the trainer's autocast, streams the activations through
`lamina.measures` on the device, and logs scalars, images and histograms from rank zero.

Measurement never touches training state: it uses no global RNG (the probes and the clustering
have their own generators), restores every submodule's train/eval flag exactly, and adds the
ablation hook only while the ablation runs. A run with instrumentation on has the same loss
curve, bit for bit, as one with it off.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info

from lamina.errors import ConfigError
from lamina.instrument import pictures
from lamina.instrument.ablation import ablation_scalars, task_losses
from lamina.instrument.modularity import LayerModules, find_modules, modularity_scalars
from lamina.instrument.sparsity import default_eps, measure_probes, sparsity_scalars
from lamina.probes import ProbeSet, TaskProbe, build_probes

IMPLS = ("auto", "kernel", "reference")
PROBE_BATCH_TOKENS = 8192  # tokens per probe forward when probe_batch_size is null


@dataclass
class Measurement:
    """What one measurement produced: scalar tags, images (uint8 HWC) and histograms by tag."""

    step: int
    scalars: dict[str, float] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    histograms: dict[str, np.ndarray] = field(default_factory=dict)
    modules: list[LayerModules] = field(default_factory=list)


class Instrumentation(L.Callback):
    def __init__(
        self,
        enabled: bool = True,
        every_n_steps: int = 100,
        probe_tokens: int = 4096,
        probe_batch_size: int | None = None,
        probe_seed: int = 0,
        eps: float | None = None,
        modularity: bool = True,
        modularity_every_n_steps: int | None = None,
        layers: bool = True,
        ablation: bool = True,
        ablation_every_n_steps: int = 500,
        ablation_examples: int = 16,
        n_modules: int | None = None,
        max_modules: int = 8,
        pictures: bool = True,
        impl: str = "auto",
    ):
        """In-loop measurements of the model's representations (sparsity, modularity, layers).

        Args:
            enabled: the one switch: false turns every measurement, probe and tag off.
            every_n_steps: measure every this many optimizer steps (and at step 0 and at the end).
            probe_tokens: tokens in each probe set (rounded down to whole windows of block_size).
            probe_batch_size: probe windows (rows) per forward pass; null: as many as hold about
                8192 tokens (PROBE_BATCH_TOKENS), at least one.
            probe_seed: with data.seed, fixes every probe; same seeds, same probes.
            eps: a unit is active when |a| > eps for its MLP post-activation a. null: by
                model.activation, 0 for relu/relu2 (exact zeros) and the depth of the negative
                dip otherwise (gelu/geglu 0.17, silu/swiglu 0.28): GELU is never exactly 0, and
                with this eps its whole negative branch counts as inactive, so "active" is a
                single threshold on the pre-activation (x > 0.27 for GELU).
            modularity: co-activation partition of each layer's units, Q and stability.
            modularity_every_n_steps: partition every this many steps (and at step 0 and the
                end); null: every_n_steps. The eigendecomposition of a wide layer is the costly
                part of a measurement on a GPU.
            layers: effective rank of the residual stream after each block.
            ablation: zero each module in turn on the string-task probes (world corpus, strings
                family trained) and log the per-task loss increase and a specificity per layer.
            ablation_every_n_steps: ablation (the costly part) every this many steps, and at
                step 0 and the end; it needs modularity (and partitions whenever it runs).
            ablation_examples: string examples per task in the task probe.
            n_modules: modules per layer; null: chosen by the eigengap, 2..max_modules.
            max_modules: the most modules the eigengap may choose.
            pictures: images (co-activation by module, density heatmap, damage matrix) and
                firing-rate histograms, on a TensorBoard logger.
            impl: measures implementation: auto (Triton kernels on CUDA, the PyTorch reference
                elsewhere; never the CPU interpreter, which is for testing kernels), kernel,
                reference.
        """
        super().__init__()
        mod_every = every_n_steps if modularity_every_n_steps is None else modularity_every_n_steps
        for key, value, low in (
            ("every_n_steps", every_n_steps, 1),
            ("probe_tokens", probe_tokens, 1),
            ("ablation_every_n_steps", ablation_every_n_steps, 1),
            ("modularity_every_n_steps", mod_every, 1),
            ("ablation_examples", ablation_examples, 1),
            ("max_modules", max_modules, 2),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"instrument.{key}: expected an integer >= {low}, got {value!r}")
        if probe_batch_size is not None and (
            isinstance(probe_batch_size, bool) or not isinstance(probe_batch_size, int) or probe_batch_size < 1
        ):
            raise ConfigError(
                f"instrument.probe_batch_size: expected null or an integer >= 1, got {probe_batch_size!r}"
            )
        if n_modules is not None and (isinstance(n_modules, bool) or not isinstance(n_modules, int) or n_modules < 1):
            raise ConfigError(f"instrument.n_modules: expected null or an integer >= 1, got {n_modules!r}")
        if eps is not None and not eps >= 0:
            raise ConfigError(f"instrument.eps: expected null or a number >= 0, got {eps!r}")
        if impl not in IMPLS:
            raise ConfigError(f"instrument.impl: expected one of {', '.join(IMPLS)}, got {impl!r}")
        self.enabled = enabled
        self.every_n_steps = every_n_steps
        self.probe_tokens = probe_tokens
        self.probe_batch_size = probe_batch_size
        self.probe_seed = probe_seed
        self.eps = eps
        self.modularity = modularity
        self.modularity_every_n_steps = mod_every
        self.layers = layers
        self.ablation = ablation
        self.ablation_every_n_steps = ablation_every_n_steps
        self.ablation_examples = ablation_examples
        self.n_modules = n_modules
        self.max_modules = max_modules
        self.pictures = pictures
        self.impl = impl

        self.probes: ProbeSet | None = None
        self.last_step: int | None = None  # the step measured last (kept in checkpoints)
        self.previous_labels: dict[int, torch.Tensor] = {}  # per layer, for stability
        self.last_seconds: float | None = None  # wall time of the last measurement
        self.timings: list[dict] = []  # {step, hook, seconds, partition, ablate} per measurement (benchmarks)
        self._warned: set[str] = set()

    # ---- Lightning hooks -----------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        if isinstance(trainer.strategy, FSDPStrategy):
            # The probes run the plain model outside the sharded wrapper: they need whole weights.
            raise ConfigError(
                "instrument.enabled: the measurements need the whole model on each rank and do not run "
                "under FSDP yet; use DDP, or pass --instrument.enabled false"
            )
        if self.probes is None:
            self._build(trainer, pl_module)
        if self.probes is not None and trainer.global_step == 0 and self.last_step != 0:
            self._measure(trainer, pl_module, partition=True, ablate=True, hook="start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self.enabled or self.probes is None:
            return
        step = trainer.global_step
        if step == self.last_step:  # micro-batches of one accumulated step share its global_step
            return
        final = trainer.max_steps is not None and 0 < trainer.max_steps <= step  # the end: everything
        ablate = final or step % self.ablation_every_n_steps == 0
        partition = ablate or step % self.modularity_every_n_steps == 0
        if step % self.every_n_steps == 0 or partition:
            self._measure(trainer, pl_module, partition=partition, ablate=ablate, hook="end" if final else "batch")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.enabled and self.probes is not None and trainer.global_step != self.last_step:
            self._measure(trainer, pl_module, partition=True, ablate=True, hook="end")

    def state_dict(self) -> dict:
        return {
            "last_step": self.last_step,
            "previous_labels": {layer: labels.tolist() for layer, labels in self.previous_labels.items()},
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_step = state_dict.get("last_step")
        self.previous_labels = {
            int(layer): torch.tensor(labels, dtype=torch.long)
            for layer, labels in state_dict.get("previous_labels", {}).items()
        }

    # ---- building and measuring ----------------------------------------------------------------

    def _build(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or getattr(datamodule, "tokenizer", None) is None:
            self._info(
                "no-datamodule", "lamina: instrumentation off: it builds its probes from a set-up TextDataModule"
            )
            return
        started = time.perf_counter()
        self.probes = build_probes(
            datamodule,
            tokens=self.probe_tokens,
            seed=self.probe_seed,
            task_examples=self.ablation_examples,
            tasks=self.ablation and self.modularity,
        )
        device = pl_module.device
        self.probes.probes = {name: w.to(device) for name, w in self.probes.probes.items()}
        if self.probes.tasks is not None:
            t = self.probes.tasks
            self.probes.tasks = TaskProbe(t.inputs.to(device), t.targets.to(device), t.task_ids.to(device), t.tasks)
        rank_zero_info(
            f"lamina: instrumentation: {len(self.probes.probes)} probes built in "
            f"{time.perf_counter() - started:.1f}s: {', '.join(self.probes.probes)}"
        )
        for note in self.probes.notes:
            rank_zero_info(f"lamina: instrumentation: {note}")
        if self.ablation and not self.modularity:
            rank_zero_info("lamina: instrumentation: ablation skipped: it needs instrument.modularity")
        if trainer.is_global_zero and self.pictures:
            for logger in self._tensorboards(trainer):
                logger.experiment.add_text("instrument/probes", self.probes.summary().replace("\n", "  \n"), 0)

    def _measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, partition: bool, ablate: bool, hook: str
    ) -> None:
        # Under DDP each rank measures its share of the probe windows and the sums are all-reduced;
        # rank zero partitions, ablates, draws and logs (once).
        started = time.perf_counter()
        model = getattr(pl_module, "model", pl_module)
        measurement = self.measure(
            model,
            step=trainer.global_step,
            partition=partition,
            ablate=ablate,
            device=pl_module.device,
            autocast=trainer.precision_plugin.forward_context(),
            rank=trainer.global_rank,
            world_size=trainer.world_size,
        )
        self.last_step = trainer.global_step
        if trainer.is_global_zero:
            self._log(trainer, measurement)
        self.last_seconds = time.perf_counter() - started  # measuring and logging
        self.timings.append(
            {"step": trainer.global_step, "hook": hook, "seconds": self.last_seconds, "partition": partition,
             "ablate": ablate}
        )
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({"perf/instrument_seconds": self.last_seconds}, step=trainer.global_step)

    def measure(
        self,
        model: torch.nn.Module,
        *,
        step: int,
        partition: bool = True,
        ablate: bool = False,
        device: torch.device | None = None,
        autocast=None,
        rank: int = 0,
        world_size: int = 1,
    ) -> Measurement:
        """Measure `model` (a GPT) on `self.probes`; returns the tags, logs nothing. `partition`:
        run modularity (if switched on) at this step; `ablate`: also the ablation (if switched on).
        Updates the previous partitions (for stability). With world_size > 1 every rank must call
        it (the probe statistics are summed over ranks); only rank 0 gets the tags."""
        if self.probes is None:
            raise RuntimeError("Instrumentation.measure: no probes (they are built at fit start)")
        device = device or next(model.parameters()).device
        activation = getattr(getattr(model, "config", None), "activation", "gelu")
        eps = default_eps(activation) if self.eps is None else self.eps
        impl = self.impl if self.impl != "auto" else ("auto" if device.type == "cuda" else "reference")
        out = Measurement(step)
        width = next(iter(self.probes.probes.values())).shape[1]
        batch = self.probe_batch_size or max(1, PROBE_BATCH_TOKENS // width)
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad(), autocast or nullcontext():
                stats = measure_probes(
                    model, self.probes.probes, eps=eps, batch_size=batch, device=device,
                    impl=impl, gather="id", coactivation=self.modularity and partition, residual=self.layers,
                    rank=rank, world_size=world_size,
                )
                if rank != 0:
                    return out
                out.scalars.update(sparsity_scalars(stats.stats))
                if stats.grams is not None:
                    for i, gram in enumerate(stats.grams):
                        out.scalars[f"layers/layer{i}/effective_rank"] = gram.effective_rank()
                if stats.coactivation is not None:
                    for i, coact in enumerate(stats.coactivation):
                        mods = find_modules(
                            coact, self.previous_labels.get(i), self.n_modules, self.max_modules
                        )
                        self.previous_labels[i] = mods.labels
                        out.modules.append(mods)
                    out.scalars.update(modularity_scalars(out.modules))
                if ablate and self.ablation and out.modules and self.probes.tasks is not None:
                    self._ablate(model, device, out, batch)
        finally:
            for module, training in modes:
                module.training = training
        if self.pictures:
            self._pictures(stats.stats, out)
        return out

    def _ablate(self, model: torch.nn.Module, device: torch.device, out: Measurement, batch: int) -> None:
        probe = self.probes.tasks
        base = task_losses(model, probe, batch, device)
        for t, task in enumerate(probe.tasks):
            out.scalars[f"modularity/task_loss/{task}"] = float(base[t])
        for i, mods in enumerate(out.modules):
            damage = task_losses(model, probe, batch, device, i, mods.module_units()) - base
            out.scalars.update(ablation_scalars(i, damage, probe.tasks))
            if self.pictures and damage.numel():
                out.images[f"modularity/layer{i}/ablation"] = pictures.labelled_heatmap(
                    damage.T.numpy(), list(probe.tasks), [f"m{m}" for m in range(damage.shape[0])],
                    title=f"layer {i}: loss increase when module is zeroed", cell=(18, 40), fmt="{:.2f}",
                )

    def _pictures(self, stats: dict[str, list[dict]], out: Measurement) -> None:
        names = list(stats)
        n_layers = len(next(iter(stats.values())))
        density = np.array([[s["frac_active"] for s in stats[p]] for p in names])
        density = np.concatenate([density, density.mean(axis=1, keepdims=True)], axis=1)
        out.images["sparsity/density"] = pictures.labelled_heatmap(
            density, names, [f"L{i}" for i in range(n_layers)] + ["mean"],
            title=f"fraction active, step {out.step}",
        )
        for probe, layers in stats.items():
            for i, s in enumerate(layers):
                out.histograms[f"sparsity/{probe}/layer{i}/firing_rate"] = s["firing_rate"].float().cpu().numpy()
        for i, mods in enumerate(out.modules):
            out.images[f"modularity/layer{i}/coactivation"] = pictures.module_matrix(
                mods.similarity.float().cpu().numpy(), mods.labels.numpy()
            )

    # ---- logging --------------------------------------------------------------------------------

    def _log(self, trainer: L.Trainer, m: Measurement) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(m.scalars, step=m.step)
        if not (m.images or m.histograms):
            return
        boards = self._tensorboards(trainer)
        if not boards:
            self._info("no-tensorboard", "lamina: instrumentation pictures need a TensorBoardLogger; scalars only")
        for logger in boards:
            writer = logger.experiment
            for tag, image in m.images.items():
                writer.add_image(tag, image, m.step, dataformats="HWC")
            for tag, values in m.histograms.items():
                writer.add_histogram(tag, values, m.step)

    @staticmethod
    def _tensorboards(trainer: L.Trainer) -> list[TensorBoardLogger]:
        return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]

    def _info(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_info(message)
