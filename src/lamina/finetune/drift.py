"""Drift from a reference checkpoint: how far a model in a phase (finetuning, RLP, continued
pretraining from `model.init_from`) has moved from where it started, layer by layer.

Every measurement runs the model and the reference (both eval mode, no grad, their forwards under
the trainer's autocast and every statistic in fp32 or wider: `lamina.instrument.precision`) on the
same fixed probe windows (the `id` windows the instrumentation also uses: held-out windows of the
val split) and logs, per layer i, each beside the number it must be read against:

- `cka`: linear CKA (Kornblith et al. 2019, centred) of the residual stream after block i, model
  against reference, over the probe tokens. Read against `cka_floor` (|CKA on the even windows -
  CKA on the odd ones|: what sampling moves it by, at half the sample) and `cka_init` (the CKA of
  the reference with an independently initialised model of the same shape: what an unrelated
  network scores from positions and token identity alone; about 0.06 to 0.17 on `tiny`).
- `cka_mlp`: the same for the MLP post-activation; `cka_mlp_floor`, `cka_mlp_init`.
- `weights`: ||W - W_ref||_F / ||W_ref||_F over block i's parameters (`drift/embeddings/weights`:
  token and position embeddings, the tied output layer, the final norm). Read against
  `weights_init` (the same distance for the independently initialised model: the scale of
  "nothing kept", about 0.7 on `tiny`); the scale of ordinary training is what a same-length
  continued-pretraining run from the same reference logs under the same tags (run it as an arm).
- `probe_acc`: a linear probe fitted on the reference's residuals to name the answer of world fact
  questions, read on this model's residuals, on held-out questions. Read against `probe_acc_ref`
  (the probe on the reference itself: where probe_acc starts), `probe_acc_init` (on the
  independently initialised model), `probe_acc_control` (a control-task probe, below) and
  `drift/probe_chance`.

The fact probe. Items are the world's one-hop questions (`Q: Where does Mira live? A: Osk.`),
each after a few different contexts (none, or a random world fact sentence); the feature is the
residual at the position that predicts the answer's first token, and the class is that token
(`drift.probe_target: token`; `answer`: the whole answer, about 3x more classes). The probe is a
closed-form ridge classifier. It is fitted on some questions and scored on *other* questions with
the same class (`Who is the baker?` in training, `Who owns the lamp?` held out, both `Mira`), so it
can only score by reading the answer from the representation, not by recognising the question.
`probe_acc_control` is the held-out accuracy of the same procedure with each question's class
replaced by a random one (Hewitt & Liang's control task: what recognising questions alone buys);
`drift/probe_chance` is the share of the commonest held-out class (with byte tokens, `a` of
`a baker`, about 0.3). On the 600-step demo model every layer's probe sits at chance (0.30 to
0.32 held out, chance 0.30): it answers 16% of one-hop questions (chance 10%), so there is little
to read; a reference that knows its facts is needed before probe_acc can show forgetting.

The probe is a fixed linear map in the reference's basis: a model that computed the same
function in a rotated residual basis would keep CKA at 1 and lose probe_acc. CKA says whether the
representation survives up to rotation, probe_acc whether the reference's own readout of it does.

The reference, its probe and every `_init` / `_ref` / `_control` number are fixed at fit start
(the independently initialised model draws from its own seeded generator, never the global RNG);
measuring never changes training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info

from lamina import tags
from lamina.data import world
from lamina.cadence import Cadence
from lamina.errors import ConfigError
from lamina.pretrained import SHAPE_KEYS, load_gpt
from lamina.finetune.retention import fact_items
from lamina.finetune.similarity import CKAAccumulator, fit_ridge_probe, weight_changes
from lamina.instrument.precision import AutocastFactory, measuring, model_forward
from lamina.model import GPT, GPTConfig
from lamina.probes import held_out_windows, n_windows_for, probe_rng, world_seed

PROBE_BATCH_TOKENS = 8192  # tokens per forward when probe_batch_size is null


# ---- the fact probe's items --------------------------------------------------------------------


@dataclass
class FactProbe:
    """Rows of token ids (`<|endoftext|>`-padded) with the position whose residual is read, the
    answer's class, a control label (a random class per question), and the train / held-out split."""

    tokens: torch.Tensor  # [n, L] int64
    positions: torch.Tensor  # [n] int64
    labels: torch.Tensor  # [n] int64, index into classes
    control: torch.Tensor  # [n] int64
    train: torch.Tensor  # [n] bool: rows of training questions (the rest are held out)
    classes: tuple[str, ...]
    heldout_questions: int

    def to(self, device) -> FactProbe:
        return FactProbe(self.tokens.to(device), self.positions.to(device), self.labels.to(device),
                         self.control.to(device), self.train.to(device), self.classes, self.heldout_questions)


PROBE_TARGETS = ("token", "answer")


def fact_probe(
    tokenizer, eot_id: int, seed: int, block_size: int, contexts: int = 2, target: str = "token"
) -> FactProbe:
    """The probe's items from the world's one-hop questions (see the module doc); a pure function
    of `seed`. `target`: the class is the answer's first token (`token`: `O` of `Osk` with byte
    tokens, `ĠOsk` with BPE) or the whole answer (`answer`: far more classes, fewer questions each)."""
    if target not in PROBE_TARGETS:
        raise ConfigError(f"drift.probe_target: expected one of {', '.join(PROBE_TARGETS)}, got {target!r}")
    questions = fact_items("one_hop", seed)
    prompts, keys = [], []
    for q in questions:
        full = q.prompt + q.gold.rstrip("\n")  # `Q: ... A: Osk.`
        enc = tokenizer.encode(full, add_special_tokens=False)
        answer_start = len(q.prompt) + 1  # the answer's first character (after the space)
        first = next(t for t, (_, end) in enumerate(enc.offsets) if end > answer_start)
        prompts.append(list(enc.ids[:first]))  # up to the token that predicts the answer's first token
        keys.append(tokenizer.id_to_token(enc.ids[first]) if target == "token" else q.answer)
    classes = tuple(sorted(set(keys)))
    label_of = {key: c for c, key in enumerate(classes)}
    rng = np.random.Generator(np.random.PCG64(seed))
    heldout = _heldout_questions(keys, rng)
    control = rng.permutation([label_of[k] for k in keys])  # a random class per question, shares kept
    sentences = (e.text.strip() for e in world.generate(seed + 1, ["prose"], tasks=["fact"]))
    rows, positions, labels, controls, train = [], [], [], [], []
    for i, (question_ids, key) in enumerate(zip(prompts, keys)):
        for c in range(contexts):
            prefix = [eot_id]
            if c:  # a context: one world fact sentence, as a previous document
                prefix += tokenizer.encode(next(sentences), add_special_tokens=False).ids + [eot_id]
            ids = (prefix + question_ids)[-block_size:]
            rows.append(ids)
            positions.append(len(ids) - 1)
            labels.append(label_of[key])
            controls.append(int(control[i]))
            train.append(i not in heldout)
    order = sorted(range(len(rows)), key=lambda r: len(rows[r]))  # batches of similar length: little padding
    tokens = torch.full((len(rows), max(len(r) for r in rows)), eot_id, dtype=torch.int64)
    for r, source in enumerate(order):
        tokens[r, : len(rows[source])] = torch.tensor(rows[source])

    def pick(values: list) -> torch.Tensor:
        return torch.tensor([values[source] for source in order])

    return FactProbe(tokens, pick(positions), pick(labels), pick(controls), pick(train), classes, len(heldout))


def _heldout_questions(keys: list[str], rng: np.random.Generator) -> set[int]:
    """A third (at least one) of the questions of every class that has two or more, so each
    held-out class also has training questions; classes of one question are trained on only."""
    by_class: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        by_class.setdefault(key, []).append(i)
    heldout: set[int] = set()
    for key in sorted(by_class):
        members = by_class[key]
        if len(members) >= 2:
            heldout.update(int(i) for i in rng.permutation(members)[: max(1, len(members) // 3)])
    return heldout


# ---- reading a model ----------------------------------------------------------------------------


def recorded(model: GPT, idx: torch.Tensor) -> dict:
    """The residual streams (`resid`) and MLP post-activations (`mlp`) of every block, from a
    forward in the measurement's forward precision (`precision.model_forward`)."""
    record: dict = {}
    model_forward(model, idx, record=record)
    return record


def residuals_at(model: GPT, probe: FactProbe, batch_rows: int) -> list[torch.Tensor]:
    """Each layer's residual at each row's probe position: [n_rows, n_embd] per layer, float32."""
    out: list[list[torch.Tensor]] = []
    for start in range(0, len(probe.tokens), batch_rows):
        pos = probe.positions[start : start + batch_rows]
        idx = probe.tokens[start : start + batch_rows, : int(pos.max()) + 1]  # (the rest is padding)
        resid = recorded(model, idx)["resid"]
        rows = torch.arange(len(idx), device=idx.device)
        for layer, r in enumerate(resid):
            if len(out) <= layer:
                out.append([])
            out[layer].append(r[rows, pos].float())
    return [torch.cat(parts) for parts in out]


def independent_twin(config: GPTConfig, seed: int) -> GPT:
    """A GPT of the same shape, initialised from its own seed (the global RNG is left as it was).
    The torch seed is derived from `seed` and a purpose, so that it is not the seed_everything
    value a reference was itself initialised with (0, 1337, ...)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(world_seed(seed, 0, "drift/independent-init"))
        twin = GPT(config)
    return twin.eval()


# ---- the meter ----------------------------------------------------------------------------------


class DriftMeter:
    """Measures models against one reference on fixed probe windows (and the fact probe, if given).
    Everything about the reference alone is computed once, here.

    `autocast`: a factory of the context each forward runs in (the trainer's
    `precision_plugin.forward_context`); None: the autocast in force when measuring. Only the
    forwards run under it; CKA, weight changes and the probes run with autocast off
    (`lamina.instrument.precision.measuring`)."""

    def __init__(
        self,
        reference: GPT,
        windows: torch.Tensor,
        facts: FactProbe | None = None,
        *,
        batch_rows: int | None = None,
        ridge: float = 0.1,
        init_seed: int = 0,
        autocast: AutocastFactory | None = None,
    ):
        self.reference = reference.eval()
        device = next(reference.parameters()).device
        self.windows = windows.to(device)
        self.facts = facts.to(device) if facts is not None else None
        self.batch_rows = batch_rows or max(1, PROBE_BATCH_TOKENS // windows.shape[1])
        self.ridge = ridge
        self.constants: dict[str, float] = {}  # the numbers fixed by the reference alone
        self.probes = []  # per layer: the fact probe fitted on the reference
        dtype = next(reference.parameters()).dtype
        twin = independent_twin(reference.config, init_seed).to(device=device, dtype=dtype)
        with torch.no_grad(), measuring(autocast):
            self.constants.update(self._similarity(twin, suffix="_init", floors=False))
            for group, change in weight_changes(twin, reference).items():
                self.constants[f"drift/{group}/weights_init"] = change
            if self.facts is not None:
                self._fit_fact_probes(twin)

    def measure(self, model: GPT, autocast: AutocastFactory | None = None) -> dict[str, float]:
        """Every drift tag of `model` (same shape as the reference) now."""
        check_same_shape(self.reference.config, model.config, "model")
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad(), measuring(autocast):
                out = dict(self.constants)
                out.update(self._similarity(model))
                for group, change in weight_changes(model, self.reference).items():
                    out[f"drift/{group}/weights"] = change
                if self.facts is not None:
                    out.update(self._probe_accuracy(model, "probe_acc"))
        finally:
            for module, training in modes:
                module.training = training
        return out

    def _similarity(self, model: GPT, suffix: str = "", floors: bool = True) -> dict[str, float]:
        """cka and cka_mlp of every layer against the reference (tags ending in `suffix`), and with
        `floors` their `_floor` (the difference of the even and odd windows' values)."""
        halves: dict[str, list[list[CKAAccumulator]]] = {}
        for half in (0, 1):  # even windows, odd windows
            rows = self.windows[half::2]
            for start in range(0, len(rows), self.batch_rows):
                idx = rows[start : start + self.batch_rows]
                mine, theirs = recorded(model, idx), recorded(self.reference, idx)
                for kind, tag in (("resid", "cka"), ("mlp", "cka_mlp")):
                    accs = halves.setdefault(tag, [])
                    for layer, (x, y) in enumerate(zip(theirs[kind], mine[kind], strict=True)):
                        if len(accs) <= layer:
                            accs.append([CKAAccumulator(), CKAAccumulator()])
                        accs[layer][half].update(x, y)
        out: dict[str, float] = {}
        for tag, layers in halves.items():
            for layer, (even, odd) in enumerate(layers):
                single = odd.xx is None or odd.rows < 2  # a single window: no second half to compare
                out[tags.drift(layer, f"{tag}{suffix}")] = even.cka() if single else even.merged(odd).cka()
                if floors:
                    out[tags.drift(layer, f"{tag}_floor")] = float("nan") if single else abs(even.cka() - odd.cka())
        return out

    def _fit_fact_probes(self, twin: GPT) -> None:
        facts = self.facts
        train, test = facts.train, ~facts.train
        n_classes = len(facts.classes)
        for layer, x in enumerate(residuals_at(self.reference, facts, self.batch_rows)):
            probe = fit_ridge_probe(x[train], facts.labels[train], n_classes, self.ridge)
            control = fit_ridge_probe(x[train], facts.control[train], n_classes, self.ridge)
            self.probes.append(probe)
            self.constants[tags.drift(layer, "probe_acc_ref")] = probe.accuracy(x[test], facts.labels[test])
            self.constants[tags.drift(layer, "probe_acc_control")] = control.accuracy(x[test], facts.control[test])
        self.constants.update(self._probe_accuracy(twin, "probe_acc_init"))
        counts = torch.bincount(facts.labels[test], minlength=n_classes)
        self.constants[tags.DRIFT_PROBE_CHANCE] = float(counts.max()) / max(int(test.sum()), 1)
        self.constants["drift/probe_heldout_rows"] = float(test.sum())
        self.constants["drift/probe_heldout_questions"] = float(facts.heldout_questions)

    def _probe_accuracy(self, model: GPT, name: str) -> dict[str, float]:
        test = ~self.facts.train
        labels = self.facts.labels[test]
        residuals = residuals_at(model, self.facts, self.batch_rows)
        return {
            tags.drift(layer, name): probe.accuracy(x[test], labels)
            for layer, (probe, x) in enumerate(zip(self.probes, residuals, strict=True))
        }


def check_same_shape(reference: GPTConfig, model: GPTConfig, key: str) -> None:
    """Refuse a reference whose shape differs from the model's (layers and weights pair one to one)."""
    differ = [f"{k} {getattr(reference, k)} there, {getattr(model, k)} here"
              for k in SHAPE_KEYS if getattr(reference, k) != getattr(model, k)]
    if differ:
        raise ConfigError(f"{key}: expected a checkpoint of this model's shape, got one with {'; '.join(differ)}")


def drift_windows(datamodule, tokens: int, seed: int) -> torch.Tensor:
    """The instrumentation's `id` windows: held-out windows of the val split (same seeds, same windows)."""
    hp = datamodule.hparams
    block_size = int(hp.block_size)
    windows, _ = held_out_windows(
        datamodule.val_data, block_size, n_windows_for(tokens, block_size), probe_rng(int(hp.seed), seed, "id")
    )
    return windows


def trained_on_world_prose(data_hparams: dict) -> bool:
    families = data_hparams.get("families")
    return data_hparams.get("source") == "world" and (families is None or "prose" in families)


# ---- the callback -------------------------------------------------------------------------------


class Drift(L.Callback):
    """Drift from a reference checkpoint (`drift/...`), at step 0, every `every_n_steps` optimizer
    steps and at the end, measured and logged on global rank zero. Off without a reference."""

    def __init__(
        self,
        enabled: bool = True,
        reference: str | None = None,
        every_n_steps: int = 100,
        probe_tokens: int = 4096,
        probe_batch_size: int | None = None,
        probe_seed: int = 0,
        fact_contexts: int = 2,
        probe_target: str = "token",
        ridge: float = 0.1,
        init_seed: int = 0,
    ):
        """
        Args:
            enabled: measure drift at all (it also needs a reference).
            reference: a lamina checkpoint to measure against; null: model.init_from (the
                checkpoint the phase starts from); neither: drift is off.
            every_n_steps: measure every this many optimizer steps (and at step 0 and at the end).
            probe_tokens: tokens of val-split windows CKA is computed on (whole windows).
            probe_batch_size: windows per forward; null: about 8192 tokens.
            probe_seed: with data.seed, fixes the windows (the instrumentation's `id` for the same
                seed) and the fact probe's split.
            fact_contexts: contexts each fact question is read after (the fact probe's rows).
            probe_target: the fact probe's class: `token` (the answer's first token) or `answer`.
            ridge: the fact probe's ridge, relative to the mean feature variance.
            init_seed: seed of the independently initialised model the `_init` numbers come from.
        """
        for key, value, low in (("every_n_steps", every_n_steps, 1), ("probe_tokens", probe_tokens, 1),
                                ("fact_contexts", fact_contexts, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"drift.{key}: expected an integer >= {low}, got {value!r}")
        if probe_batch_size is not None and (not isinstance(probe_batch_size, int) or probe_batch_size < 1):
            raise ConfigError(f"drift.probe_batch_size: expected null or an integer >= 1, got {probe_batch_size!r}")
        if not ridge > 0:
            raise ConfigError(f"drift.ridge: expected a number > 0, got {ridge!r}")
        if probe_target not in PROBE_TARGETS:
            raise ConfigError(f"drift.probe_target: expected one of {', '.join(PROBE_TARGETS)}, got {probe_target!r}")
        self.enabled, self.reference, self.every_n_steps = enabled, reference, every_n_steps
        self.probe_tokens, self.probe_batch_size, self.probe_seed = probe_tokens, probe_batch_size, probe_seed
        self.fact_contexts, self.probe_target = fact_contexts, probe_target
        self.ridge, self.init_seed = ridge, init_seed
        self.meter: DriftMeter | None = None
        self.cadence = Cadence(every_n_steps)  # step 0, every every_n_steps, the end
        self.last_seconds: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        path = self.reference or getattr(pl_module, "hparams", {}).get("init_from")
        if not path:  # pretraining from scratch: nothing to drift from, and nothing to say
            return
        if isinstance(trainer.strategy, FSDPStrategy):
            raise ConfigError(
                "drift.enabled: drift needs the whole model on rank zero and does not run under FSDP yet; "
                "use DDP, or pass --drift.enabled false"
            )
        if trainer.is_global_zero:
            self._build(trainer, pl_module, path)
        if self.cadence.starts(trainer):
            self._measure(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.meter is not None and self.cadence.due(trainer):
            self._measure(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.meter is not None and self.cadence.ends(trainer):
            self._measure(trainer, pl_module)

    def state_dict(self) -> dict:
        return self.cadence.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.cadence.load_state_dict(state_dict)

    def _build(self, trainer: L.Trainer, pl_module: L.LightningModule, path: str) -> None:
        started = time.perf_counter()
        key = "drift.reference" if self.reference else "model.init_from"
        loaded = load_gpt(path, key, tokenizer=False)
        model = getattr(pl_module, "model", pl_module)
        check_same_shape(loaded.model.config, model.config, key)
        datamodule = trainer.datamodule
        if datamodule is None or getattr(datamodule, "val_data", None) is None:
            rank_zero_info("lamina: drift off: it reads its probe windows from a set-up TextDataModule")
            return
        param = next(model.parameters())
        reference = loaded.model.to(device=param.device, dtype=param.dtype)
        windows = drift_windows(datamodule, self.probe_tokens, self.probe_seed)
        facts, note = None, "fact probe skipped: the reference was not trained on world prose"
        if trained_on_world_prose(loaded.data_hparams or dict(datamodule.hparams)):
            seed = world_seed(int(datamodule.hparams.seed), self.probe_seed, "drift/facts")
            facts = fact_probe(datamodule.tokenizer, datamodule.eot_id, seed, int(datamodule.hparams.block_size),
                               self.fact_contexts, self.probe_target)
            note = (f"fact probe: {len(facts.tokens)} rows, {len(facts.classes)} classes, "
                    f"{facts.heldout_questions} held-out questions")
        self.meter = DriftMeter(
            reference, windows, facts, batch_rows=self.probe_batch_size, ridge=self.ridge, init_seed=self.init_seed,
            autocast=trainer.precision_plugin.forward_context,
        )
        rank_zero_info(
            f"lamina: drift against {path}: {len(windows)} windows; {note}; "
            f"built in {time.perf_counter() - started:.1f}s"
        )

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.cadence.ran(trainer)
        if self.meter is None:  # (ranks other than zero hold none)
            return
        started = time.perf_counter()
        model = getattr(pl_module, "model", pl_module)
        scalars = self.meter.measure(model, autocast=trainer.precision_plugin.forward_context)
        self.last_seconds = time.perf_counter() - started
        scalars["perf/drift_seconds"] = self.last_seconds
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)


__all__ = [
    "Drift",
    "DriftMeter",
    "FactProbe",
    "check_same_shape",
    "drift_windows",
    "fact_probe",
    "independent_twin",
    "recorded",
    "residuals_at",
]
