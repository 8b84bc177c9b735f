"""`Instrumentation`: the Lightning callback that measures the model every N steps.

It composes the parts of this package: probes (`lamina.probes`), sparsity, modularity, layers,
ablation, the last-layer measures and pictures. Every measure is logged beside the number it must
be read against: each density gap with its standard error and z, Q with its shuffled-weights null
(its permutation null and held-out Q beside it), stability with its floor, ablation specificity
with its random-set null, effective rank with its `id_b` floor, the last-layer measures with their
level contrasts. At fit start it builds the probe set once; at step 0, every
`every_n_steps` optimizer steps and at the end of training it runs the probes through the model
in eval mode, without grad, each forward under the trainer's autocast and every statistic in fp32
or wider (`lamina.instrument.precision`), streams the activations through `lamina.measures` on
the device, and logs scalars, images and histograms from rank zero.

Measurement never touches training state: it uses no global RNG (the probes and the clustering
have their own generators), restores every submodule's train/eval flag exactly, and adds the
ablation hook only while the ablation runs. A run with instrumentation on has the same loss
curve, bit for bit, as one with it off.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info

from lamina import measures
from lamina.cadence import Cadence, is_last_step, multiple_of
from lamina.config_types import NonNegativeInt, NonNegativeNumber, OpenUnitInterval, PositiveInt, at_least, plain
from lamina.data import world
from lamina.errors import ConfigError
from lamina.instrument import pictures
from lamina.instrument import ablation as abl
from lamina.instrument.context import context_figure, context_scalars, context_vs_prior, counterfactual_probe
from lamina.instrument.hierarchy import hierarchy_figure, hierarchy_scalars, measure_hierarchy
from lamina.instrument.lastlayer import answer_positions_probe, lastlayer_stats
from lamina.instrument.layers import layer_scalars
from lamina.instrument.modularity import (
    LayerModules,
    find_modules,
    modularity_scalars,
    shuffled_weights_null,
    with_shuffled_null,
)
from lamina.instrument.precision import AutocastFactory, measuring
from lamina.instrument.sparsity import (
    ACTIVE_RULES,
    STATS,
    ActiveRule,
    active_rule,
    default_eps,
    density_intervals,
    density_scalars,
    gap_scalars,
    measure_probes,
    sparsity_scalars,
)
from lamina.instrument.train_density import TrainDensity
from lamina.probes import ProbeSet, TaskProbe, build_probes, labelled_windows, world_seed
from lamina.step import ends_optimizer_step

IMPLS = ("auto", "kernel", "reference")
PROBE_BATCH_TOKENS = 8192  # tokens per probe forward when probe_batch_size is null
MIN_NULL_DRAWS = 8
DEFAULT_SHUFFLED_DRAWS = 8  # with 4, |q_shuffled_z| > 3 comes up in ~7% of null layers (docs/measures.md)
LIGHT_PROBES = ("id", "id_b", "shuffled", "random")  # the light tier: the familiarity gaps alone


@dataclass
class Measurement:
    """What one measurement produced: scalar tags, figures (matplotlib) and histograms by tag."""

    step: int
    scalars: dict[str, float] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)
    histograms: dict[str, np.ndarray] = field(default_factory=dict)
    modules: list[LayerModules] = field(default_factory=list)


class Instrumentation(L.Callback):
    def __init__(
        self,
        enabled: bool = True,
        every_n_steps: PositiveInt = 500,
        light_every_n_steps: PositiveInt | None = 50,
        light_windows: at_least(2) = 32,
        train_density: bool = True,
        probe_tokens: PositiveInt = 16384,
        probe_batch_size: PositiveInt | None = None,
        probe_seed: int = 0,
        active: Literal[ACTIVE_RULES] = "sign",
        cett: OpenUnitInterval = 0.2,
        eps: NonNegativeNumber | None = None,
        modularity: bool = True,
        modularity_every_n_steps: PositiveInt | None = None,
        modularity_tokens: PositiveInt | None = 4096,
        null_draws: at_least(MIN_NULL_DRAWS) = MIN_NULL_DRAWS,
        shuffled_draws: NonNegativeInt = DEFAULT_SHUFFLED_DRAWS,
        layers: bool = True,
        ablation: bool = True,
        ablation_every_n_steps: PositiveInt | None = 500,
        ablation_examples: PositiveInt = 16,
        ablation_mode: Literal[abl.MODES] = "mean",
        n_modules: PositiveInt | None = None,
        max_modules: at_least(2) = 8,
        lastlayer: bool = True,
        lastlayer_problems: at_least(2) = 64,
        hierarchy: bool = True,
        probe_every_n_steps: PositiveInt | None = None,
        probe_items: PositiveInt = 8192,
        probe_examples: PositiveInt = 256,
        context: bool = True,
        context_every_n_steps: PositiveInt | None = None,
        context_prompts: at_least(4) = 128,
        context_alpha: float = 1.0,
        pictures: bool = True,
        impl: Literal[IMPLS] = "auto",
    ):
        """In-loop measurements of the model's representations, each beside its null.

        Args:
            enabled: the one switch: false turns every measurement, probe and tag off.
            every_n_steps: the full battery (every probe and statistic, pictures, and the parts
                whose own cadence is null) every this many optimizer steps, and at step 0 and at
                the end.
            light_every_n_steps: the light tier every this many steps, where the full battery does
                not run: the density of `id`, `id_b`, `shuffled` and `random` (per layer and mean)
                and their gaps with `/se` and `/z`, on the first `light_windows` windows of each,
                under the same active rule, with no per-token statistics, partition or pictures.
                It logs the same tags as the full battery, so a curve has a point every this many
                steps; its intervals are wider (its `/se` says by how much). null: off.
            light_windows: windows of each light probe (the first ones of the full probe; `shuffled`
                stays paired with `id` window for window). The gaps' standard errors grow as
                1/sqrt(windows): 32 of tiny's 80 give about 1.6x the full battery's.
            train_density: `sparsity/train/layer<i>` and `.../mean`, the density of the training
                batches, counted from the training forward itself at every step the trainer logs
                (hooks on the MLP input projections for that step: no extra pass, the loss bit for
                bit the same; `lamina.instrument.train_density`). Off under `model.compile`, where a
                hook would recompile the model.
            probe_tokens: tokens in each probe set (rounded down to whole windows of block_size);
                every probe has as many windows as `id`. The intervals of the gaps narrow with
                the square root of the windows.
            probe_batch_size: probe windows (rows) per forward pass; null: as many as hold about
                8192 tokens (PROBE_BATCH_TOKENS), at least one.
            probe_seed: with data.seed, fixes every probe and every null draw; same seeds, same probes.
            active: when a unit counts as active. sign: its pre-activation (for gated MLPs, the
                gate's) is > 0, which the scale of the input weights cannot move; cett: its
                contribution |a_j| * ||W_down[:, j]|| exceeds the per-layer threshold at which
                dropping all smaller contributions changes the MLP output by `cett` (mean relative
                L2, calibrated on `id` at each measurement; arXiv 2411.02335); eps: |a| > eps on the
                post-activation (moves with weight scale; kept for comparison).
            cett: the output error the cett threshold is calibrated to, in (0, 1).
            eps: the threshold of the eps rule. null: by model.activation, 0 for relu/relu2 and
                the depth of the negative dip otherwise (gelu/geglu 0.17, silu/swiglu 0.28).
            modularity: co-activation partition of each layer's units, Q against its shuffled-weights
                null (`shuffled_draws`) and its permutation null, held-out Q, stability against its floor.
            modularity_every_n_steps: partition every this many steps (and at step 0 and the
                end); null: every_n_steps.
            modularity_tokens: the co-activation graphs (and their nulls) are built from the first
                this many tokens of `id` and of `id_b`; null: all of them. Its cost (counts and
                null draws) grows with it; the partition's eigendecomposition does not.
            null_draws: draws of each null (modularity: per-unit permuted activity; ablation:
                random unit sets of the modules' sizes), at least 8.
            shuffled_draws: draws of modularity's shuffled-weights null (Filan et al., arXiv
                2103.03386): the model with every weight matrix of its blocks shuffled within the
                matrix, the same probe windows, Q found the same way (`modularity/layer<i>/q_shuffled_*`).
                0 turns it off; otherwise at least 2 (a null needs a spread). Each draw costs a
                partition per layer and a forward of the modularity tokens (about 0.55 s on
                `tiny`'s shape on a CPU).
            layers: effective rank of the centred residual stream after each block, on id and id_b.
            ablation: mean- (or zero-) ablate each module in turn on the string-task probes
                (world corpus, strings family trained) and log the per-task loss increase and a
                specificity per layer against random unit sets.
            ablation_every_n_steps: ablation (the costly part) every this many steps, and at
                step 0 and the end (null: only at step 0 and the end); it needs modularity (and partitions whenever it runs).
            ablation_examples: string examples per task in the task probe.
            ablation_mode: mean (units set to their mean on the task probe) or zero.
            n_modules: modules per layer; null: chosen in 2..max_modules by Q on the `id` graph (the
                held-out Q is scored on `id_b`, which the choice never sees).
            max_modules: the most modules the choice may pick.
            lastlayer: Jin et al.'s last-layer measures (arXiv 2603.03415) on the final hidden
                state before the answer of held-out arithmetic problems, by level (world corpus).
            lastlayer_problems: arithmetic problems per level for them.
            hierarchy: linear probes per layer on the residual stream for labels of rising tiers
                (token, digit; entity, attribute, town; operator, carry, task; answer) of labelled
                world examples, fitted in closed form on one split and scored on another, each against
                a control task (the same probe on labels re-mapped at random per token type, Hewitt &
                Liang): `layers/layer<i>/probe/<label>/selectivity` and the layer where it peaks.
            probe_every_n_steps: the hierarchy probes every this many steps (and at step 0 and the
                end; null: only then).
            probe_items: labelled token positions the probes fit and score on (at most).
            probe_examples: labelled world examples they are drawn from.
            context: context against memory (world `people` family trained): on counterfactual
                prompts, the share of answers that follow the context vs the memorised fact by
                exposure bin, with a steering vector (held-out split), a random direction of its norm
                (its null) and an instruction in the text (`eval/context/...`).
            context_every_n_steps: that evaluation every this many steps (null: at step 0 and the end).
            context_prompts: counterfactual prompts (half fit the steering vector, half score it).
            context_alpha: the steering vector's scale.
            pictures: figures (density with intervals, Q against its null, co-activation by
                module, damage matrix) and firing-rate histograms, on a TensorBoard logger.
            impl: measures implementation: auto (Triton kernels on CUDA, the PyTorch reference
                elsewhere; never the CPU interpreter, which is for testing kernels), kernel,
                reference.
        """
        super().__init__()
        # The types above are checked when a config is parsed, not on a call from Python. Parsed
        # restricted numbers are jsonargparse's own int/float subclasses: kept as builtins.
        self.enabled = enabled
        self.every_n_steps = plain(every_n_steps)
        self.light_every_n_steps = plain(light_every_n_steps)
        self.light_windows = plain(light_windows)
        self.train_density = train_density
        self.probe_tokens = plain(probe_tokens)
        self.probe_batch_size = plain(probe_batch_size)
        self.probe_seed = probe_seed
        self.active = active
        self.cett = plain(cett)
        self.eps = plain(eps)
        self.modularity = modularity
        self.modularity_every_n_steps = plain(
            every_n_steps if modularity_every_n_steps is None else modularity_every_n_steps
        )
        self.modularity_tokens = plain(modularity_tokens)
        self.null_draws = plain(null_draws)
        self.shuffled_draws = plain(shuffled_draws)
        if self.shuffled_draws == 1:
            raise ConfigError(
                "instrument.shuffled_draws: expected 0 (off) or at least 2 draws (a null needs a spread), got 1"
            )
        self.layers = layers
        self.ablation = ablation
        self.ablation_every_n_steps = plain(ablation_every_n_steps)
        self.ablation_examples = plain(ablation_examples)
        self.ablation_mode = ablation_mode
        self.n_modules = plain(n_modules)
        self.max_modules = plain(max_modules)
        self.lastlayer = lastlayer
        self.lastlayer_problems = plain(lastlayer_problems)
        self.hierarchy = hierarchy
        self.probe_every_n_steps = plain(probe_every_n_steps)
        self.probe_items = plain(probe_items)
        self.probe_examples = plain(probe_examples)
        self.context = context
        self.context_every_n_steps = plain(context_every_n_steps)
        self.context_prompts = plain(context_prompts)
        self.context_alpha = float(context_alpha)
        self.pictures = pictures
        self.impl = impl
        self.hierarchy_probe: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None
        self.context_probe = None

        self.probes: ProbeSet | None = None
        self.answer_probe = None  # the last-layer measures' arithmetic problems
        self.cadence = Cadence(self.every_n_steps)  # the full battery's (its last step kept in checkpoints)
        self.light_cadence = Cadence(self.light_every_n_steps, at_start=False, at_end=False)
        self.rule: ActiveRule | None = None  # the active rule of the last measurement (train density reads it)
        self.train_hooks = TrainDensity()
        self.previous_labels: dict[int, torch.Tensor] = {}  # per layer, for stability
        self.q_history: dict[int, list[tuple]] = {}  # per layer (step, q, q_heldout, q_null), for the picture
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
        if self.probes is not None and self.cadence.starts(trainer):
            self._measure(trainer, pl_module, partition=True, ablate=True, hook="start", probe=True, context=True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.enabled and self.train_density and self.rule is not None and not self.train_hooks.attached:
            if self._logs_next_step(trainer) and not getattr(pl_module.hparams, "compile", False):
                self.train_hooks.attach(getattr(pl_module, "model", pl_module), self.rule)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self.enabled or self.probes is None:
            return
        if self.train_hooks.attached and ends_optimizer_step(trainer, batch_idx):
            self._log_train_density(trainer)
        step = trainer.global_step
        if step == self.cadence.last_step:  # micro-batches of one accumulated step share its global_step
            return
        final = is_last_step(trainer)  # the end: everything
        ablate = final or multiple_of(step, self.ablation_every_n_steps)
        partition = ablate or multiple_of(step, self.modularity_every_n_steps)
        probe = final or multiple_of(step, self.probe_every_n_steps)
        context = final or multiple_of(step, self.context_every_n_steps)
        if self.cadence.due(trainer) or partition or probe or context:
            self._measure(
                trainer, pl_module, partition=partition, ablate=ablate, hook="end" if final else "batch",
                probe=probe, context=context,
            )
        elif self.light_cadence.due(trainer):
            self._measure_light(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_hooks.detach()
        if self.enabled and self.probes is not None and self.cadence.ends(trainer):
            self._measure(trainer, pl_module, partition=True, ablate=True, hook="end", probe=True, context=True)

    def state_dict(self) -> dict:
        return {
            **self.cadence.state_dict(),
            "light_last_step": self.light_cadence.last_step,
            # The rule train density counts with until the next measurement: a resumed run counts the same.
            "rule": None if self.rule is None else {
                "name": self.rule.name,
                "thresholds": [t.tolist() if isinstance(t, torch.Tensor) else t for t in self.rule.thresholds],
            },
            "previous_labels": {layer: labels.tolist() for layer, labels in self.previous_labels.items()},
            "q_history": {layer: [list(entry) for entry in h] for layer, h in self.q_history.items()},
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.cadence.load_state_dict(state_dict)
        self.light_cadence.last_step = state_dict.get("light_last_step")
        rule = state_dict.get("rule")
        if rule is not None:
            self.rule = ActiveRule(rule["name"], [
                torch.tensor(t, dtype=torch.float32) if isinstance(t, list) else t for t in rule["thresholds"]
            ])
        self.previous_labels = {
            int(layer): torch.tensor(labels, dtype=torch.long)
            for layer, labels in state_dict.get("previous_labels", {}).items()
        }
        self.q_history = {
            int(layer): [tuple(entry) for entry in h] for layer, h in state_dict.get("q_history", {}).items()
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
        hp = datamodule.hparams
        if self.lastlayer and hp.source == "world":
            self.answer_probe = answer_positions_probe(
                datamodule.tokenizer, world_seed(int(hp.seed), self.probe_seed, "lastlayer"), world.ARITH_LEVELS,
                self.lastlayer_problems, int(hp.block_size), datamodule.eot_id,
            )
        if hp.source == "world":
            self._build_world_evaluations(datamodule, device)
        rank_zero_info(
            f"lamina: instrumentation: {len(self.probes.probes)} probes of {len(self.probes.probes['id'])} windows "
            f"built in {time.perf_counter() - started:.1f}s: {', '.join(self.probes.probes)}"
        )
        for note in self.probes.notes:
            rank_zero_info(f"lamina: instrumentation: {note}")
        if self.ablation and not self.modularity:
            rank_zero_info("lamina: instrumentation: ablation skipped: it needs instrument.modularity")
        if trainer.is_global_zero and self.pictures:
            for logger in self._tensorboards(trainer):
                logger.experiment.add_text("instrument/probes", self.probes.summary().replace("\n", "  \n"), 0)

    def _build_world_evaluations(self, datamodule, device: torch.device) -> None:
        """The hierarchy's labelled windows (of the families the run trains) and, where the run
        trains the people family, the counterfactual prompts about its roster."""
        hp = datamodule.hparams
        families = world.trained_families(
            hp.families or world.FAMILIES, hp.get("levels"), hp.get("tasks"), hp.get("exposure_bins")
        )
        seed = int(hp.seed)
        if self.hierarchy:
            examples = world.labelled_examples(
                world_seed(seed, self.probe_seed, "hierarchy"), self.probe_examples, families, hp.get("levels"),
                hp.get("tasks"), level_weights=hp.get("level_weights", "by_kind"), exposure_bins=hp.get("exposure_bins"),
            )
            windows = labelled_windows(
                examples, datamodule.tokenizer, datamodule.eot_id, int(hp.block_size), self.probe_examples
            )
            self.hierarchy_probe = (windows.inputs.to(device), {k: v.to(device) for k, v in windows.labels.items()})
        if self.context and "people" in families:
            # The corpus writes `A: <answer>`: the candidates are the text after the prompt's `A:`.
            items = [
                {"prompt": c.prompt, "context_answer": " " + c.context_answer,
                 "memorised_answer": " " + c.memorised_answer, "exposure_bin": c.bin}
                for c in world.counterfactuals(
                    world_seed(seed, self.probe_seed, "context"), self.context_prompts, hp.get("exposure_bins")
                )
            ]
            tokenizer = datamodule.tokenizer
            self.context_probe = counterfactual_probe(
                items, lambda text: tokenizer.encode(text, add_special_tokens=False).ids, bos=datamodule.eot_id
            )
        elif self.context:
            self._info("context", "lamina: instrumentation: context against memory skipped: it needs the world "
                       "people family (data.families with people) for memorised facts to contradict")

    def _measure(
        self, trainer: L.Trainer, pl_module: L.LightningModule, partition: bool, ablate: bool, hook: str,
        probe: bool = False, context: bool = False,
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
            probe=probe,
            context=context,
            device=pl_module.device,
            autocast=trainer.precision_plugin.forward_context,  # a factory: entered once per forward
            rank=trainer.global_rank,
            world_size=trainer.world_size,
        )
        self.cadence.ran(trainer)
        if trainer.is_global_zero:
            self._log(trainer, measurement)
        if pl_module.device.type == "cuda":  # kernels still queued would be timed into the next training step
            torch.cuda.synchronize(pl_module.device)
        self.last_seconds = time.perf_counter() - started  # measuring and logging
        self.timings.append(
            {"step": trainer.global_step, "hook": hook, "seconds": self.last_seconds, "partition": partition,
             "ablate": ablate, "shuffled_seconds": measurement.scalars.get("perf/modularity_shuffled_seconds", 0.0)}
        )
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({"perf/instrument_seconds": self.last_seconds}, step=trainer.global_step)

    def _measure_light(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The light tier: see `light_every_n_steps`. Same forwards' precision and eval mode as a
        full measurement; logs density and gap tags, `perf/instrument_light_seconds`."""
        started = time.perf_counter()
        model = getattr(pl_module, "model", pl_module)
        probes = {name: w[: self.light_windows] for name, w in self.probes.probes.items() if name in LIGHT_PROBES}
        device = pl_module.device
        batch = self._batch_rows()
        with evaluating(model), torch.no_grad(), measuring(trainer.precision_plugin.forward_context):
            self.rule = self._rule(model, batch, device)
            stats = measure_probes(
                model, probes, rule=self.rule, batch_size=batch, device=device, impl=self._impl(device),
                rank=trainer.global_rank, world_size=trainer.world_size, density_only=True,
            )
        self.light_cadence.ran(trainer)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        self.timings.append({"step": trainer.global_step, "hook": "light", "seconds": seconds, "partition": False,
                             "ablate": False, "shuffled_seconds": 0.0})
        if trainer.is_global_zero:
            scalars = {**density_scalars(stats.stats), **gap_scalars(stats.stats), "perf/instrument_light_seconds": seconds}
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=trainer.global_step)

    @staticmethod
    def _logs_next_step(trainer: L.Trainer) -> bool:
        """Whether the optimizer step now running is one whose metrics the trainer writes."""
        n, step = trainer.log_every_n_steps, trainer.global_step + 1
        return bool(n) and (step % n == 0 or (trainer.max_steps is not None and step == trainer.max_steps))

    def _log_train_density(self, trainer: L.Trainer) -> None:
        self.train_hooks.detach()
        reduce = (lambda t: trainer.strategy.reduce(t, reduce_op="sum")) if trainer.world_size > 1 else None
        scalars = self.train_hooks.scalars(reduce)
        if scalars and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=trainer.global_step)

    def _impl(self, device: torch.device) -> str:
        return self.impl if self.impl != "auto" else ("auto" if device.type == "cuda" else "reference")

    def _batch_rows(self) -> int:
        return self.probe_batch_size or max(1, PROBE_BATCH_TOKENS // self.probes.probes["id"].shape[1])

    def measure(
        self,
        model: torch.nn.Module,
        *,
        step: int,
        partition: bool = True,
        ablate: bool = False,
        probe: bool = False,
        context: bool = False,
        device: torch.device | None = None,
        autocast: AutocastFactory | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> Measurement:
        """Measure `model` (a GPT) on `self.probes`; returns the tags, logs nothing. `partition`:
        run modularity (if switched on) at this step; `ablate`: also the ablation; `probe`: the
        hierarchy probes; `context`: context against memory (each if switched on and built).
        `autocast`: a factory of the context each forward runs in (the trainer's
        `precision_plugin.forward_context`); None: the autocast in force at the call. Only the
        forwards run in it: every statistic runs with autocast off, in fp32 or wider, whatever the
        run's precision (`lamina.instrument.precision`).
        Updates the previous partitions (for stability). With world_size > 1 every rank must call
        it (the probe statistics are summed over ranks); only rank 0 gets the tags."""
        if self.probes is None:
            raise RuntimeError("Instrumentation.measure: no probes (they are built at fit start)")
        device = device or next(model.parameters()).device
        impl = self._impl(device)
        out = Measurement(step)
        probes = self.probes.probes
        batch = self._batch_rows()
        samples = tuple(name for name in ("id", "id_b") if name in probes)  # modularity and layers read these
        with evaluating(model):
            # Not the trainer's autocast around all of it: under it the statistics' fp32 matmuls
            # (co-activation counts, CETT calibration, probe scores) would run in bf16.
            with torch.no_grad(), measuring(autocast):
                rule = self.rule = self._rule(model, batch, device)
                stats = measure_probes(
                    model, probes, rule=rule, batch_size=batch, device=device, impl=impl,
                    keep_active=samples if self.modularity and partition else (),
                    residual=samples if self.layers else (), rank=rank, world_size=world_size,
                )
                if rank != 0:
                    return out
                out.scalars.update(sparsity_scalars(stats.stats))
                out.scalars.update(gap_scalars(stats.stats))
                out.scalars.update(layer_scalars(stats.grams))
                if stats.active:
                    # Hundreds of small graph ops: one CPU thread is faster than several that wait.
                    with measures.one_cpu_thread() if device.type == "cpu" else nullcontext():
                        self._partition(stats.active, out, model, batch, device)
                if ablate and self.ablation and out.modules and self.probes.tasks is not None:
                    self._ablate(model, device, out, batch)
                if self.answer_probe is not None:
                    out.scalars.update(lastlayer_stats(model, self.answer_probe, min(batch, 32), device))
                if probe and self.hierarchy_probe is not None:
                    self._probe_hierarchy(model, batch, device, out)
                if context and self.context_probe is not None:
                    self._context_vs_prior(model, batch, device, out)
        if self.pictures:
            self._pictures(stats.stats, out)
        return out

    def _probe_hierarchy(self, model: torch.nn.Module, batch: int, device: torch.device, out: Measurement) -> None:
        tokens, labels = self.hierarchy_probe
        results = measure_hierarchy(
            model, tokens, labels, batch, device, max_items=self.probe_items, seed=self._seed("hierarchy", 0)
        )
        out.scalars.update(hierarchy_scalars(results))
        if self.pictures and results:
            out.figures["layers/probe/selectivity"] = hierarchy_figure(results, out.step)

    def _context_vs_prior(self, model: torch.nn.Module, batch: int, device: torch.device, out: Measurement) -> None:
        result = context_vs_prior(
            model, self.context_probe, min(batch, 64), device, alpha=self.context_alpha, seed=self._seed("context", 0)
        )
        tags = context_scalars(result)
        out.scalars.update(tags)
        if self.pictures:
            out.figures["eval/context/follow"] = context_figure(tags, step=out.step)

    def _rule(self, model: torch.nn.Module, batch: int, device: torch.device):
        activation = getattr(getattr(model, "config", None), "activation", "gelu")
        eps = default_eps(activation) if self.eps is None else self.eps
        return active_rule(
            self.active, model, eps=eps, cett=self.cett, calibration=self.probes.probes["id"],
            batch_size=batch, device=device,
        )

    def _partition(
        self, active: dict[str, list[torch.Tensor]], out: Measurement, model: torch.nn.Module | None = None,
        batch: int = 1, device: torch.device | None = None,
    ) -> None:
        # Without id_b (a tiny validation split) the held-out choice falls back to id itself.
        heldout = active.get("id_b", active["id"])
        rows = slice(None, self.modularity_tokens)
        for i, (act, act_b) in enumerate(zip(active["id"], heldout)):
            mods = find_modules(
                act[rows], act_b[rows], self.previous_labels.get(i), n_modules=self.n_modules, max_modules=self.max_modules,
                null_draws=self.null_draws, seed=self._seed("modularity", i),
            )
            self.previous_labels[i] = mods.labels
            self.q_history.setdefault(i, []).append((out.step, mods.q, mods.q_heldout, list(mods.q_null)))
            out.modules.append(mods)
        if self.shuffled_draws and model is not None:
            # Rank 0 only, as the partition: a copy of the model with its block weights shuffled,
            # the same windows and rule; the model itself is not written, no global RNG is drawn.
            probes = self.probes.probes
            null = shuffled_weights_null(
                model, probes["id"], probes.get("id_b"), draws=self.shuffled_draws,
                seed=self._seed("modularity_shuffled", 0),
                layer_seeds=[self._seed("modularity", i) for i in range(len(out.modules))],
                tokens=self.modularity_tokens, n_modules=self.n_modules, max_modules=self.max_modules,
                rule=lambda shuffled: self._rule(shuffled, batch, device), batch_size=batch, device=device,
            )
            for mods, q, q_heldout in zip(out.modules, null.q, null.q_heldout):
                with_shuffled_null(mods, q, q_heldout)
            out.scalars["perf/modularity_shuffled_seconds"] = null.seconds
        out.scalars.update(modularity_scalars(out.modules))

    def _seed(self, purpose: str, layer: int) -> int:
        """A null's seed: fixed by the probe seed, the purpose and the layer, never by the global RNG,
        so a resumed run draws the same nulls."""
        return world_seed(self.probe_seed, layer, purpose) % (2**63)

    def _ablate(self, model: torch.nn.Module, device: torch.device, out: Measurement, batch: int) -> None:
        probe = self.probes.tasks
        base = abl.task_losses(model, probe, batch, device)
        chance = abl.chance_losses(probe)
        learned = abl.learned_tasks(base, chance)
        out.scalars.update(abl.task_scalars(probe.tasks, base, chance, learned))
        if int(learned.sum()) < 2:  # specificity needs two learned tasks: spare the forwards
            return
        means = abl.unit_means(model, probe, batch, device) if self.ablation_mode == "mean" else None
        for i, mods in enumerate(out.modules):
            result = abl.layer_ablation(
                model, probe, batch, device, i, mods.labels, means, base, learned,
                mode=self.ablation_mode, null_draws=self.null_draws, seed=self._seed("ablation", i),
            )
            out.scalars.update(abl.ablation_scalars(i, result, probe.tasks))
            if self.pictures and result.damage.numel():
                out.figures[f"modularity/layer{i}/ablation"] = pictures.ablation_figure(
                    result.damage.numpy(), list(probe.tasks),
                    title=f"layer {i}: loss increase, each module {self.ablation_mode}-ablated, step {out.step}",
                )

    def _pictures(self, stats: dict[str, list[dict]], out: Measurement) -> None:
        density, halfwidth = density_intervals(stats)
        out.figures["sparsity/density"] = pictures.density_figure(density, halfwidth, list(stats), out.step)
        by_layer = {key: [[s[key] for s in layers] for layers in stats.values()] for key in STATS[1:]}
        out.figures["sparsity/stats_by_layer"] = pictures.layer_stats_figure(by_layer, list(stats), out.step)
        for probe, layers in stats.items():
            for i, s in enumerate(layers):
                out.histograms[f"sparsity/{probe}/layer{i}/firing_rate"] = s["firing_rate"].float().cpu().numpy()
        for i, mods in enumerate(out.modules):
            out.figures[f"modularity/layer{i}/coactivation"] = pictures.coactivation_figure(
                mods.similarity.float().cpu().numpy(), mods.labels.numpy(),
                title=f"layer {i}: phi similarity by module (k={mods.k}), step {out.step}",
            )
        if out.modules:
            out.figures["modularity/q_vs_null"] = pictures.modularity_figure(self.q_history)

    # ---- logging --------------------------------------------------------------------------------

    def _log(self, trainer: L.Trainer, m: Measurement) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(m.scalars, step=m.step)
        if not (m.figures or m.histograms):
            return
        boards = self._tensorboards(trainer)
        if not boards:
            self._info("no-tensorboard", "lamina: instrumentation pictures need a TensorBoardLogger; scalars only")
        for logger in boards:
            writer = logger.experiment
            for tag, figure in m.figures.items():
                writer.add_figure(tag, figure, m.step, close=False)
            for tag, values in m.histograms.items():
                writer.add_histogram(tag, values, m.step)

    @staticmethod
    def _tensorboards(trainer: L.Trainer) -> list[TensorBoardLogger]:
        return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]

    def _info(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_info(message)


@contextmanager
def evaluating(model: torch.nn.Module):
    """Eval mode for a measurement, every submodule's train/eval flag restored exactly after it."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
