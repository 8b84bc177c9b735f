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
the device, and logs scalars, images and histograms from rank zero. Under `instrument.series:
summary` (the default) only the scalars a reader and the custom-scalars layout read are TensorBoard
series; the rest go, at the same step, to the run's `measurements.jsonl` (`in_summary`, `write_sidecar`).

Measurement never touches training state: it uses no global RNG (the probes and the clustering
have their own generators), restores every submodule's train/eval flag exactly, and adds the
ablation hook only while the ablation runs. A run with instrumentation on has the same loss
curve, bit for bit, as one with it off.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info

from lamina import measures, tags
from lamina.cadence import Cadence, is_last_step, multiple_of
from lamina.config_types import PositiveInt, plain
from lamina.data import world
from lamina.errors import ConfigError
from lamina.instrument import pictures
from lamina.instrument import ablation as abl
from lamina.instrument.config import (
    DEFAULT_SHUFFLED_DRAWS,  # noqa: F401 (kept importable from here)
    LIGHT_ROWS_PER_WINDOW,
    MIN_LIGHT_WINDOWS,
    MIN_NULL_DRAWS,  # noqa: F401
    SERIES,
    AblationConfig,
    ContextConfig,
    HierarchyConfig,
    LastLayerConfig,
    LayersConfig,
    ModularityConfig,
    ProbesConfig,
    SparsityConfig,
    section,
)
from lamina.instrument.context import ALL as ALL_PROMPTS
from lamina.instrument.context import context_figure, context_scalars, context_vs_prior, world_counterfactual_probe
from lamina.instrument.hierarchy import hierarchy_figure, hierarchy_scalars, measure_hierarchy
from lamina.instrument.lastlayer import lastlayer_stats, prompt_positions_probe
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
    STATS,
    ActiveRule,
    ProbeStats,
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
from lamina.step import ends_optimizer_step, runs_logged_step

IMPLS = ("auto", "kernel", "reference")
PROBE_BATCH_TOKENS = 8192  # tokens per probe forward when instrument.probes.batch_size is null
# On a CPU, smaller forwards keep a layer's recorded activations in cache: at tiny's shape the probes
# took 7% less time in forwards of 2048 tokens than of 8192 (one core, 2026-12-07).
CPU_PROBE_BATCH_TOKENS = 2048
LIGHT_PROBES = ("id", "id_b", "shuffled", "random")  # the light tier: the familiarity gaps alone

# ---- instrument.series summary: which measured scalars stay TensorBoard series ---------------------
# A tag with a layer index stays only as a measure beside its null: Q in its shuffled-weights band
# and its z (the custom-scalars layout draws the band: lamina.tensorboard.layout), ablation
# specificity and its z, the effective rank and its id_b floor. Every other per-layer tag goes to
# the sidecar (and, where drawn, a picture).
PER_LAYER = re.compile(r"(^|/)layer\d+(/|$)")
LAYER = r"\d+"  # any layer index, as regular-expression text in the builders
PER_LAYER_SERIES = re.compile("|".join([
    tags.q(LAYER), tags.q_shuffled(LAYER, "lo"), tags.q_shuffled(LAYER, "hi"), tags.q_shuffled(LAYER, "z"),
    tags.specificity(LAYER), tags.specificity(LAYER, "z"),
    tags.effective_rank(LAYER), tags.effective_rank(LAYER, "floor"),
]))
# Detail without a layer index, summarised by a tag that stays: per label (layers/tier/*), per level
# and unmatched (lastlayer/matched_gap/*), per exposure bin (the bin of all prompts, `all`).
BY_LABEL_OR_LEVEL = (tags.LABEL_PROBES, tags.LASTLAYER_LEVELS, tags.LASTLAYER_GAPS)
CONTEXT = tags.context("")
STATISTIC_SUFFIXES = (tags.LO, tags.HI, tags.SE)
SIDECAR = "measurements.jsonl"  # the scalars instrument.series summary does not log, in the run's log folder


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
        probes: ProbesConfig = ProbesConfig(),
        sparsity: SparsityConfig = SparsityConfig(),
        modularity: ModularityConfig = ModularityConfig(),
        ablation: AblationConfig = AblationConfig(),
        layers: LayersConfig = LayersConfig(),
        lastlayer: LastLayerConfig = LastLayerConfig(),
        hierarchy: HierarchyConfig = HierarchyConfig(),
        context: ContextConfig = ContextConfig(),
        pictures: bool = True,
        series: Literal[SERIES] = "summary",
        impl: Literal[IMPLS] = "auto",
    ):
        """In-loop measurements of the model's representations, each beside its null.

        Each part's settings are a section of their own (`lamina.instrument.config`: one dataclass
        per part, each key explained there): `--instrument.modularity.every_n_steps 300` on the
        command line, a nested mapping in YAML; from Python a section's dataclass or a mapping of
        its keys (`Instrumentation(modularity=ModularityConfig(every_n_steps=6))`,
        `Instrumentation(ablation={"enabled": False})`).

        Args:
            enabled: the one switch: false turns every measurement, probe and tag off.
            every_n_steps: the full battery (every probe and statistic, pictures, and the parts
                whose own cadence is null) every this many optimizer steps, and at step 0 and at
                the end.
            probes: the probe sets (tokens, batch_size, seed).
            sparsity: the active rule (active, cett, eps), the light tier between full measurements
                (light_every_n_steps, light_windows) and the training batches' density (train_density).
            modularity: the co-activation partition, its nulls and its cadence (enabled,
                every_n_steps, tokens, null_draws, shuffled_draws, n_modules, max_modules).
            ablation: ablating each module on the string-task probes (enabled, every_n_steps,
                examples, mode); it needs modularity and draws modularity.null_draws random sets.
            layers: effective rank of the residual stream after each block (enabled).
            lastlayer: the last-layer measures on arithmetic problems by level (enabled, problems).
            hierarchy: linear probes per layer for labels of rising tiers (enabled, every_n_steps,
                items, examples).
            context: context against memory on counterfactual prompts (enabled, every_n_steps,
                prompts, alpha).
            pictures: figures (density with intervals, Q against its null, co-activation by
                module, damage matrix) and firing-rate histograms, on a TensorBoard logger.
            series: which measured scalars are TensorBoard series. all: every one. summary (the
                default): those a reader and the custom-scalars layout (lamina.tensorboard.layout)
                read, by kind of tag (`in_summary`): (1) means over layers and their statistics:
                each probe's density `sparsity/<probe>/mean` and its per-token statistics'
                means, `sparsity/train/mean`, each gap `sparsity/gap/<probe>` with `/se`, `/z` (the
                headline gaps also `/lo`, `/hi`); (2) per layer only a measure beside its null:
                `modularity/layer<i>/q` with its shuffled-weights band `q_shuffled_lo`, `_hi` and
                `q_shuffled_z`, `specificity` with `specificity_z`, `layers/layer<i>/effective_rank`
                with `effective_rank_floor`; (3) the readings that summarise labels, levels or
                prompts: `modularity/task_*` and `unlearned_tasks`, `layers/tier/*`,
                `lastlayer/matched_gap/*` (level gaps at matched length, with `/se`, `/z`),
                `lastlayer/skipped`, `eval/context/*` over all prompts (bin `all`) and the steering
                vector's own tags; (4) every `perf/` tag. The rest (every other per-layer tag;
                `layers/probe/<label>/*`; `lastlayer/level<k>/*` and the unmatched
                `lastlayer/gap/*`; `eval/context/...` by exposure bin) is written at the same step to
                `measurements.jsonl` in the run's log folder (a JSON line per measurement: `step`,
                `kind` full, light or train, `scalars` {tag: value} at full precision; non-finite
                values as Python's json writes them) and drawn where a picture shows it
                (`sparsity/density`, `sparsity/stats_by_layer`, `modularity/q_vs_null`,
                `modularity/layer<i>/ablation`, `layers/probe/gain`, `eval/context/follow`). The
                numbers are the same either way, and so are the capability gates, which read every
                value. Scalars logged by anything else (loss, val, lr, throughput, thinking
                evaluations) are not touched. `tiny.yaml` (4 layers, 15 probes) for 20 steps: 211
                series, 821 with all.
            impl: measures implementation: auto (Triton kernels on CUDA, the PyTorch reference
                elsewhere; never the CPU interpreter, which is for testing kernels), kernel,
                reference.
        """
        super().__init__()
        # The types above are checked when a config is parsed; the sections check themselves again
        # (__post_init__), so a call from Python fails alike. Parsed restricted numbers are
        # jsonargparse's own int/float subclasses: kept as builtins.
        self.enabled = enabled
        self.every_n_steps = plain(every_n_steps)
        if not isinstance(enabled, bool):
            raise ConfigError(f"instrument.enabled: expected true or false, got {enabled!r}")
        if not (isinstance(self.every_n_steps, int) and not isinstance(self.every_n_steps, bool)
                and self.every_n_steps >= 1):
            raise ConfigError(f"instrument.every_n_steps: expected an integer >= 1, got {every_n_steps!r}")
        if impl not in IMPLS:
            raise ConfigError(f"instrument.impl: expected one of {', '.join(IMPLS)}, got {impl!r}")
        if series not in SERIES:
            raise ConfigError(f"instrument.series: expected one of {', '.join(SERIES)}, got {series!r}")
        # (`self.probes` is the ProbeSet built at fit start: the section's settings are `probes_config`)
        self.probes_config: ProbesConfig = section(ProbesConfig, probes)
        self.sparsity: SparsityConfig = section(SparsityConfig, sparsity)
        modularity = section(ModularityConfig, modularity)
        if modularity.every_n_steps is None:  # null: the full battery's cadence
            modularity = dataclasses.replace(modularity, every_n_steps=self.every_n_steps)
        self.modularity: ModularityConfig = modularity
        self.ablation: AblationConfig = section(AblationConfig, ablation)
        self.layers: LayersConfig = section(LayersConfig, layers)
        self.lastlayer: LastLayerConfig = section(LastLayerConfig, lastlayer)
        self.hierarchy: HierarchyConfig = section(HierarchyConfig, hierarchy)
        self.context: ContextConfig = section(ContextConfig, context)
        self.pictures = pictures
        self.series = series
        self.impl = impl
        self.hierarchy_probe: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None
        self.context_probe = None

        self.probes: ProbeSet | None = None
        self.light_windows: int | None = None  # the light tier's windows a probe (set with the probes)
        self.answer_probe = None  # the last-layer measures' arithmetic problems
        self.cadence = Cadence(self.every_n_steps)  # the full battery's (its last step kept in checkpoints)
        self.light_cadence = Cadence(self.sparsity.light_every_n_steps, at_start=False, at_end=False)
        self.rule: ActiveRule | None = None  # the active rule of the last measurement (train density reads it)
        self.train_hooks = TrainDensity()
        self.previous_labels: dict[int, torch.Tensor] = {}  # per layer, for stability
        # Per layer (step, q, q_heldout, permutation-null draws, shuffled-weights draws), for the picture.
        self.q_history: dict[int, list[tuple]] = {}
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
        if self.enabled and self.sparsity.train_density and self.rule is not None and not self.train_hooks.attached:
            if runs_logged_step(trainer) and not getattr(pl_module.hparams, "compile", False):
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
        ablate = final or multiple_of(step, self.ablation.every_n_steps)
        partition = ablate or multiple_of(step, self.modularity.every_n_steps)
        probe = final or multiple_of(step, self.hierarchy.every_n_steps)
        context = final or multiple_of(step, self.context.every_n_steps)
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
            tokens=self.probes_config.tokens,
            family_tokens=self.probes_config.family_tokens,
            seed=self.probes_config.seed,
            task_examples=self.ablation.examples,
            tasks=self.ablation.enabled and self.modularity.enabled,
        )
        device = pl_module.device
        self.probes.probes = {name: w.to(device) for name, w in self.probes.probes.items()}
        if self.probes.tasks is not None:
            t = self.probes.tasks
            self.probes.tasks = TaskProbe(t.inputs.to(device), t.targets.to(device), t.task_ids.to(device), t.tasks)
        hp = datamodule.hparams
        if self.lastlayer.enabled and hp.source == "world":
            self.answer_probe = prompt_positions_probe(
                datamodule.tokenizer, world_seed(int(hp.seed), self.probes_config.seed, "lastlayer"),
                world.ARITH_LEVELS, self.lastlayer.problems, int(hp.block_size), datamodule.eot_id,
                thoughts=hp.get("thoughts", "keep"),
            )
        if hp.source == "world":
            self._build_world_evaluations(datamodule, device)
        rank_zero_info(
            f"lamina: instrumentation: {len(self.probes.probes)} probes of {len(self.probes.probes['id'])} windows "
            f"built in {time.perf_counter() - started:.1f}s: {', '.join(self.probes.probes)}"
        )
        for note in self.probes.notes:
            rank_zero_info(f"lamina: instrumentation: {note}")
        self.light_windows = light_windows(self.sparsity, trainer, len(self.probes.probes["id"]))
        if self.sparsity.light_every_n_steps is not None:
            rank_zero_info(
                f"lamina: instrumentation: light tier every {self.sparsity.light_every_n_steps} steps on "
                f"{min(self.light_windows, len(self.probes.probes['id']))} windows a probe (their gaps' /se say how wide)"
                + (" (instrument.sparsity.light_windows null: one per 50 sequences trained between two)"
                   if self.sparsity.light_windows is None else "")
            )
        if self.ablation.enabled and not self.modularity.enabled:
            rank_zero_info("lamina: instrumentation: ablation skipped: it needs instrument.modularity.enabled")
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
        if self.hierarchy.enabled:
            examples = world.labelled_examples(
                world_seed(seed, self.probes_config.seed, "hierarchy"), self.hierarchy.examples, families,
                hp.get("levels"),
                hp.get("tasks"), level_weights=hp.get("level_weights", "by_kind"), exposure_bins=hp.get("exposure_bins"),
                roster_seed=seed,
            )
            windows = labelled_windows(
                examples, datamodule.tokenizer, datamodule.eot_id, int(hp.block_size), self.hierarchy.examples
            )
            self.hierarchy_probe = (windows.inputs.to(device), {k: v.to(device) for k, v in windows.labels.items()})
        if self.context.enabled and "people" in families:
            self.context_probe = world_counterfactual_probe(
                datamodule.tokenizer, datamodule.eot_id, data_seed=seed, probe_seed=self.probes_config.seed,
                prompts=self.context.prompts, exposure_bins=hp.get("exposure_bins"),
            )
        elif self.context.enabled:
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
            ends=hook in ("start", "end"),
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
             "ablate": ablate,
             "shuffled_seconds": measurement.scalars.get(tags.perf("modularity_shuffled_seconds"), 0.0)}
        )
        if trainer.is_global_zero:
            timing = {tags.perf("instrument_seconds"): self.last_seconds}
            self._log_scalars(trainer, timing, trainer.global_step, "full")

    def _measure_light(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The light tier: see `instrument.sparsity.light_every_n_steps`. Same forwards' precision and eval
        mode as a full measurement; logs density and gap tags, `perf/instrument_light_seconds`."""
        started = time.perf_counter()
        model = getattr(pl_module, "model", pl_module)
        windows = self.light_windows
        probes = {name: w[:windows] for name, w in self.probes.probes.items() if name in LIGHT_PROBES}
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
            scalars = {**density_scalars(stats.stats), **gap_scalars(stats.stats),
                       tags.perf("instrument_light_seconds"): seconds}
            self._log_scalars(trainer, scalars, trainer.global_step, "light")

    def _log_train_density(self, trainer: L.Trainer) -> None:
        self.train_hooks.detach()
        reduce = (lambda t: trainer.strategy.reduce(t, reduce_op="sum")) if trainer.world_size > 1 else None
        scalars = self.train_hooks.scalars(reduce)
        if scalars and trainer.is_global_zero:
            # At train/loss's step: the forward ran with the weights after global_step - 1 updates.
            self._log_scalars(trainer, scalars, trainer.global_step - 1, "train")

    def _impl(self, device: torch.device) -> str:
        return self.impl if self.impl != "auto" else ("auto" if device.type == "cuda" else "reference")

    def _batch_rows(self) -> int:
        windows = self.probes.probes["id"]
        tokens = CPU_PROBE_BATCH_TOKENS if windows.device.type == "cpu" else PROBE_BATCH_TOKENS
        return self.probes_config.batch_size or max(1, tokens // windows.shape[1])

    def measure(
        self,
        model: torch.nn.Module,
        *,
        step: int,
        partition: bool = True,
        ablate: bool = False,
        probe: bool = False,
        context: bool = False,
        ends: bool = True,
        device: torch.device | None = None,
        autocast: AutocastFactory | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> Measurement:
        """Measure `model` (a GPT) on `self.probes`; returns the tags, logs nothing. `partition`:
        run modularity (if switched on) at this step; `ablate`: also the ablation; `probe`: the
        hierarchy probes; `context`: context against memory (each if switched on and built);
        `ends`: this is the step-0 or the final measurement (the permutation null's default
        cadence, `instrument.modularity.permutation_null`).
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
                stats = self._measure_probes(
                    model, probes, rule=rule, batch_size=batch, device=device, impl=impl,
                    keep_active=samples if self.modularity.enabled and partition else (),
                    residual=samples if self.layers.enabled else (), rank=rank, world_size=world_size,
                )
                if rank != 0:
                    return out
                out.scalars.update(sparsity_scalars(self._with_token_stats(stats.stats)))
                out.scalars.update(density_scalars(stats.stats))
                out.scalars.update(gap_scalars(stats.stats))
                out.scalars.update(layer_scalars(stats.grams))
                if stats.active:
                    # Hundreds of small graph ops: one CPU thread is faster than several that wait.
                    with measures.one_cpu_thread() if device.type == "cpu" else nullcontext():
                        self._partition(stats.active, out, model, batch, device, ends=ends)
                if ablate and self.ablation.enabled and out.modules and self.probes.tasks is not None:
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

    def _measure_probes(self, model: torch.nn.Module, probes: dict[str, torch.Tensor], **kw) -> ProbeStats:
        """`measure_probes` of every probe, the per-token statistics only on the probes
        `instrument.sparsity.token_stats` names (`_has_token_stats`), the others' density alone
        (the light tier's accumulator): the probes in their order, each with the same forwards,
        rule and windows as one call over all of them."""
        full = [name for name in probes if self._has_token_stats(name)]
        parts = [
            measure_probes(model, {n: probes[n] for n in names}, density_only=density_only, **kw)
            for names, density_only in ((full, False), ([n for n in probes if n not in full], True)) if names
        ]

        def in_order(field_name: str) -> dict:
            found = {name: value for part in parts for name, value in getattr(part, field_name).items()}
            return {name: found[name] for name in probes if name in found}

        return ProbeStats(in_order("stats"), in_order("active"), in_order("grams"))

    def _has_token_stats(self, probe: str) -> bool:
        return self.sparsity.token_stats == "all" or probe == "id"

    def _with_token_stats(self, stats: dict[str, list[dict]]) -> dict[str, list[dict]]:
        return {name: layers for name, layers in stats.items() if self._has_token_stats(name)}

    def _probe_hierarchy(self, model: torch.nn.Module, batch: int, device: torch.device, out: Measurement) -> None:
        tokens, labels = self.hierarchy_probe
        results = measure_hierarchy(
            model, tokens, labels, batch, device, max_items=self.hierarchy.items, seed=self._seed("hierarchy", 0)
        )
        out.scalars.update(hierarchy_scalars(results))
        if self.pictures and results:
            out.figures["layers/probe/gain"] = hierarchy_figure(results, out.step)

    def _context_vs_prior(self, model: torch.nn.Module, batch: int, device: torch.device, out: Measurement) -> None:
        result = context_vs_prior(
            model, self.context_probe, min(batch, 64), device, alpha=self.context.alpha, seed=self._seed("context", 0)
        )
        scalars = context_scalars(result)
        out.scalars.update(scalars)
        if self.pictures:
            out.figures["eval/context/follow"] = context_figure(scalars, step=out.step)

    def _rule(self, model: torch.nn.Module, batch: int, device: torch.device):
        activation = getattr(getattr(model, "config", None), "activation", "gelu")
        eps = default_eps(activation) if self.sparsity.eps is None else self.sparsity.eps
        return active_rule(
            self.sparsity.active, model, eps=eps, cett=self.sparsity.cett, calibration=self.probes.probes["id"],
            batch_size=batch, device=device,
        )

    def _partition(
        self, active: dict[str, list[torch.Tensor]], out: Measurement, model: torch.nn.Module | None = None,
        batch: int = 1, device: torch.device | None = None, ends: bool = True,
    ) -> None:
        when = self.modularity.permutation_null
        permutation = when == "every" or (when == "ends" and ends)
        # Without id_b (a tiny validation split) the held-out choice falls back to id itself.
        heldout = active.get("id_b", active["id"])
        rows = slice(None, self.modularity.tokens)
        for i, (act, act_b) in enumerate(zip(active["id"], heldout)):
            mods = find_modules(
                act[rows], act_b[rows], self.previous_labels.get(i), n_modules=self.modularity.n_modules,
                max_modules=self.modularity.max_modules,
                null_draws=self.modularity.null_draws if permutation else 0,
                seed=self._seed("modularity", i),
            )
            self.previous_labels[i] = mods.labels
            out.modules.append(mods)
        if self.modularity.shuffled_draws and model is not None:
            # Rank 0 only, as the partition: a copy of the model with its block weights shuffled,
            # the same windows and rule; the model itself is not written, no global RNG is drawn.
            probes = self.probes.probes
            null = shuffled_weights_null(
                model, probes["id"], probes.get("id_b"), draws=self.modularity.shuffled_draws,
                seed=self._seed("modularity_shuffled", 0),
                layer_seeds=[self._seed("modularity", i) for i in range(len(out.modules))],
                tokens=self.modularity.tokens, n_modules=self.modularity.n_modules,
                max_modules=self.modularity.max_modules,
                rule=lambda shuffled: self._rule(shuffled, batch, device), batch_size=batch, device=device,
            )
            for mods, q, q_heldout in zip(out.modules, null.q, null.q_heldout):
                with_shuffled_null(mods, q, q_heldout)
            out.scalars[tags.perf("modularity_shuffled_seconds")] = null.seconds
        for i, mods in enumerate(out.modules):
            self.q_history.setdefault(i, []).append(
                (out.step, mods.q, mods.q_heldout, list(mods.q_null), list(mods.q_shuffled))
            )
        out.scalars.update(modularity_scalars(out.modules))

    def _seed(self, purpose: str, layer: int) -> int:
        """A null's seed: fixed by the probe seed, the purpose and the layer, never by the global RNG,
        so a resumed run draws the same nulls."""
        return world_seed(self.probes_config.seed, layer, purpose) % (2**63)

    def _ablate(self, model: torch.nn.Module, device: torch.device, out: Measurement, batch: int) -> None:
        probe = self.probes.tasks
        base = abl.task_losses(model, probe, batch, device)
        chance = abl.chance_losses(probe)
        learned = abl.learned_tasks(base, chance)
        out.scalars.update(abl.task_scalars(probe.tasks, base, chance, learned))
        if int(learned.sum()) < 2:  # specificity needs two learned tasks: spare the forwards
            return
        means = abl.unit_means(model, probe, batch, device) if self.ablation.mode == "mean" else None
        for i, mods in enumerate(out.modules):
            result = abl.layer_ablation(
                model, probe, batch, device, i, mods.labels, means, base, learned,
                mode=self.ablation.mode, null_draws=self.modularity.null_draws, seed=self._seed("ablation", i),
            )
            out.scalars.update(abl.ablation_scalars(i, result, probe.tasks))
            if self.pictures and result.damage.numel():
                out.figures[f"modularity/layer{i}/ablation"] = pictures.ablation_figure(
                    result.damage.numpy(), list(probe.tasks),
                    title=f"layer {i}: loss increase, each module {self.ablation.mode}-ablated, step {out.step}",
                )

    def _pictures(self, stats: dict[str, list[dict]], out: Measurement) -> None:
        density, halfwidth = density_intervals(stats)
        out.figures["sparsity/density"] = pictures.density_figure(density, halfwidth, list(stats), out.step)
        full = self._with_token_stats(stats)
        # `id` alone: its statistics by layer are series under instrument.series all (sparsity/id/layer<i>/<stat>)
        if len(full) > 1 or self.series == "summary":
            by_layer = {key: [[s[key] for s in layers] for layers in full.values()] for key in STATS[1:]}
            out.figures["sparsity/stats_by_layer"] = pictures.layer_stats_figure(by_layer, list(full), out.step)
        for probe, layers in stats.items():
            for i, s in enumerate(layers):
                out.histograms[tags.sparsity_stat(probe, "firing_rate", i)] = s["firing_rate"].float().cpu().numpy()
        for i, mods in enumerate(out.modules):
            out.figures[f"modularity/layer{i}/coactivation"] = pictures.coactivation_figure(
                mods.similarity.float().cpu().numpy(), mods.labels.numpy(),
                title=f"layer {i}: phi similarity by module (k={mods.k}), step {out.step}",
            )
        if out.modules:
            out.figures["modularity/q_vs_null"] = pictures.modularity_figure(self.q_history)

    # ---- logging --------------------------------------------------------------------------------

    def _log(self, trainer: L.Trainer, m: Measurement) -> None:
        self._log_scalars(trainer, m.scalars, m.step, "full")
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

    def _log_scalars(self, trainer: L.Trainer, scalars: dict[str, float], step: int, kind: str) -> None:
        """Log `scalars` at `step` (global rank zero): under `instrument.series` summary the tags
        `in_summary` keeps; the others as one line of the sidecar (`kind`: full, light or train),
        and to every logger that keeps last values (lamina.tensorboard.TensorBoardLogger.remember)
        for the end-of-fit gates, which then read the same values under either setting."""
        if self.series == "all":
            logged, detail = scalars, {}
        else:
            logged = {tag: value for tag, value in scalars.items() if in_summary(tag)}
            detail = {tag: value for tag, value in scalars.items() if tag not in logged}
        for logger in trainer.loggers:
            if logged:
                logger.log_metrics(logged, step=step)
            if detail and hasattr(logger, "remember"):
                logger.remember(detail, step=step)
        if detail:
            write_sidecar(trainer.loggers, step, kind, detail)

    @staticmethod
    def _tensorboards(trainer: L.Trainer) -> list[TensorBoardLogger]:
        return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]

    def _info(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_info(message)


def in_summary(tag: str) -> bool:
    """Whether `instrument.series: summary` logs the measured scalar `tag` as a series (the rule
    in `Instrumentation`'s docstring): a per-layer tag only as a measure beside its null
    (PER_LAYER_SERIES); no detail by label or level (BY_LABEL_OR_LEVEL) or by exposure bin
    (`context_bin`); every other tag (means over layers, their statistics, summaries, perf/)."""
    if PER_LAYER.search(tag):
        return PER_LAYER_SERIES.fullmatch(tag) is not None
    if tag.startswith(BY_LABEL_OR_LEVEL):
        return False
    if tag.startswith(CONTEXT):
        return context_bin(tag) in (None, ALL_PROMPTS)
    return True


def context_bin(tag: str) -> str | None:
    """The exposure bin of an `eval/context/...` tag (its last part, before `/lo`, `/hi` or `/se`;
    lamina.instrument.context.context_scalars), None for a tag of the whole measurement
    (`eval/context/steer_layer`)."""
    parts = tag[len(CONTEXT):].split("/")
    if parts[-1] in STATISTIC_SUFFIXES:
        parts = parts[:-1]
    return parts[-1] if len(parts) > 1 else None


def sidecar_path(loggers) -> Path | None:
    """SIDECAR in the run's log folder: the first logger's `log_dir`, else its `save_dir`; None
    without a logger (nothing is logged then)."""
    for logger in loggers:
        folder = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        if folder:
            return Path(folder) / SIDECAR
    return None


def write_sidecar(loggers, step: int, kind: str, scalars: dict[str, float]) -> None:
    """One line of the sidecar, `{"step": s, "kind": "full" | "light" | "train", "scalars": {tag:
    value}}`, each value a float at full precision, appended (a resumed run goes on in the same
    file)."""
    path = sidecar_path(loggers)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"step": int(step), "kind": kind, "scalars": {t: float(v) for t, v in scalars.items()}})
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


def read_sidecar(path: str | Path) -> list[dict]:
    """The lines of a run's SIDECAR (`write_sidecar`), in the order written."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def light_windows(sparsity: SparsityConfig, trainer, probe_windows: int) -> int:
    """The light tier's windows a probe: `instrument.sparsity.light_windows`, or where it is null,
    one for every LIGHT_ROWS_PER_WINDOW sequences trained between two light measurements (the
    data module's batch size x gradient accumulation x devices a step), at least MIN_LIGHT_WINDOWS
    and at most the probe's `probe_windows`: the same on every rank and on resume."""
    if sparsity.light_windows is not None:
        return sparsity.light_windows
    hp = getattr(getattr(trainer, "datamodule", None), "hparams", None)
    rows = int(getattr(hp, "batch_size", 0) or 0) * int(getattr(trainer, "accumulate_grad_batches", 1) or 1) * int(
        getattr(trainer, "world_size", 1) or 1
    )
    trained = rows * (sparsity.light_every_n_steps or 0)
    return min(probe_windows, max(MIN_LIGHT_WINDOWS, round(trained / LIGHT_ROWS_PER_WINDOW)))


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
