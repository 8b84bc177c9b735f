"""The settings of `Instrumentation` (the `instrument:` section of a config), one dataclass per concern.

The top level keeps the switches of the whole battery (`instrument.enabled`, `.every_n_steps`,
`.pictures`, `.series`, `.impl`; documented on `Instrumentation`); each part has a section of its own:

- `instrument.probes`: the probe sets (`tokens`, `batch_size`, `seed`);
- `instrument.sparsity`: the active rule, the light tier and the training density;
- `instrument.modularity`: the co-activation partition and its nulls;
- `instrument.ablation`: ablating each module on the string-task probes;
- `instrument.layers`: the effective rank of the residual stream;
- `instrument.lastlayer`: the last-layer measures on arithmetic problems;
- `instrument.hierarchy`: linear probes per layer for labels of rising tiers;
- `instrument.context`: context against memory on counterfactual prompts.

On the command line a key is `--instrument.<section>.<key>` (`--instrument.modularity.every_n_steps 300`);
in YAML a nested mapping. The field types are checked when a config is parsed (lamina.config_types);
each dataclass checks its values again in `__post_init__`, so a call from Python
(`Instrumentation(modularity=ModularityConfig(every_n_steps=6))`, or a plain mapping for a section)
fails the same way: one `ConfigError` line naming `instrument.<section>.<key>`, what was expected
and what was given. The dataclasses are frozen: a default instance is shared safely.

The flat keys of an older lamina (`modularity_every_n_steps`, `probe_tokens`, `modularity: false`,
...) are read in this layout by lamina.pretrained.migrate (the table is lamina.user_errors.INSTRUMENT_MOVED);
on the command line they are refused with one line naming the new key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

from lamina.config_types import NonNegativeInt, NonNegativeNumber, OpenUnitInterval, PositiveInt, at_least, plain
from lamina.errors import ConfigError
from lamina.instrument.ablation import MODES as ABLATION_MODES
from lamina.instrument.sparsity import ACTIVE_RULES

MIN_NULL_DRAWS = 8
LIGHT_ROWS_PER_WINDOW = 50  # instrument.sparsity.light_windows null: a light window a probe per 50 sequences trained
MIN_LIGHT_WINDOWS = 8
TOKEN_STATS = ("id", "all")  # instrument.sparsity.token_stats: the probes with per-token statistics
PERMUTATION_NULL = ("ends", "every", "off")  # instrument.modularity.permutation_null: when it is drawn
DEFAULT_SHUFFLED_DRAWS = 8  # with 4, |q_shuffled_z| > 3 comes up in ~7% of null layers (docs/measures.md)
SERIES = ("summary", "all")  # instrument.series: which measured scalars are TensorBoard series


@dataclass(frozen=True)
class _Section:
    """What every section shares: its name under `instrument.`, the one-line errors, builtins only."""

    SECTION: ClassVar[str] = ""

    def _plain(self) -> None:
        # Parsed restricted numbers are jsonargparse's own int/float subclasses: kept as builtins.
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, plain(getattr(self, f.name)))

    def _bad(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"instrument.{self.SECTION}.{key}: expected {expected}, got {getattr(self, key)!r}")

    def _flag(self, key: str) -> None:
        if not isinstance(getattr(self, key), bool):
            raise self._bad(key, "true or false")

    def _int(self, key: str, least: int | None = None, null: bool = False) -> None:
        value = getattr(self, key)
        if value is None and null:
            return
        if not _is_int(value) or (least is not None and value < least):
            words = "an integer" if least is None else f"an integer >= {least}"
            raise self._bad(key, words + (" or null" if null else ""))

    def _number(self, key: str, expected: str, ok, null: bool = False) -> None:
        value = getattr(self, key)
        if value is None and null:
            return
        if not _is_number(value) or not ok(value):
            raise self._bad(key, expected + (" or null" if null else ""))

    def _choice(self, key: str, choices: tuple[str, ...]) -> None:
        if getattr(self, key) not in choices:
            raise self._bad(key, f"one of {', '.join(choices)}")


@dataclass(frozen=True)
class ProbesConfig(_Section):
    """The probe sets every measurement streams through the model (`instrument.probes.*`)."""

    SECTION: ClassVar[str] = "probes"

    tokens: PositiveInt = 16384
    """Tokens in each probe set (rounded down to whole windows of block_size); every probe has as
    many windows as `id`. The intervals of the gaps narrow with the square root of the windows."""
    family_tokens: PositiveInt | None = None
    """Tokens in each of the world corpus's `family/<f>`, `level/<k>` and `ood/level/<k>` probes
    (rounded down to whole windows, at most `id`'s); null: `tokens`, as every other probe. Fewer
    cut a measurement's forwards (these are ten of `tiny`'s fifteen probes); their gaps' standard
    errors, from the windows they hold, widen by sqrt(tokens / family_tokens), and the probe set's
    summary says how many windows each has."""
    batch_size: PositiveInt | None = None
    """Probe windows (rows) per forward pass; null: as many as hold about 8192 tokens
    (PROBE_BATCH_TOKENS; 2048 on a CPU, CPU_PROBE_BATCH_TOKENS), at least one."""
    seed: int = 0
    """With data.seed, fixes every probe and every null draw; same seeds, same probes."""

    def __post_init__(self) -> None:
        self._plain()
        self._int("tokens", 1)
        self._int("family_tokens", 1, null=True)
        self._int("batch_size", 1, null=True)
        self._int("seed")


@dataclass(frozen=True)
class SparsityConfig(_Section):
    """What counts as active, and the measurements of density between full ones (`instrument.sparsity.*`)."""

    SECTION: ClassVar[str] = "sparsity"

    active: Literal[ACTIVE_RULES] = "sign"
    """When a unit counts as active. sign: its pre-activation (for gated MLPs, the gate's) is > 0,
    which the scale of the input weights cannot move; cett: its contribution |a_j| * ||W_down[:, j]||
    exceeds the per-layer threshold at which dropping all smaller contributions changes the MLP
    output by `cett` (mean relative L2, calibrated on `id` at each measurement; arXiv 2411.02335);
    eps: |a| > eps on the post-activation (moves with weight scale; kept for comparison)."""
    cett: OpenUnitInterval = 0.2
    """The output error the cett threshold is calibrated to, in (0, 1)."""
    eps: NonNegativeNumber | None = None
    """The threshold of the eps rule. null: by model.activation, 0 for relu/relu2 and the depth of
    the negative dip otherwise (gelu/geglu 0.17, silu/swiglu 0.28)."""
    light_every_n_steps: PositiveInt | None = 50
    """The light tier every this many steps, where the full battery does not run: the density of
    `id`, `id_b`, `shuffled` and `random` (per layer and mean) and their gaps with `/se` and `/z`, on
    the first `light_windows` windows of each, under the same active rule, with no per-token
    statistics, partition or pictures. It logs the same tags as the full battery, so a curve has a
    point every this many steps; its intervals are wider (its `/se` says by how much). null: off."""
    light_windows: at_least(2) | None = None
    """Windows of each light probe (the first ones of the full probe; `shuffled` stays paired with
    `id` window for window). The gaps' standard errors grow as 1/sqrt(windows): 32 of tiny's 80
    give about 1.6x the full battery's. null: sized to the training between two light
    measurements, one window a probe for every LIGHT_ROWS_PER_WINDOW (50) sequences trained
    (data.batch_size x gradient accumulation x devices a step, times light_every_n_steps), at least
    MIN_LIGHT_WINDOWS (8), at most the probe's: the four probes' forwards are then 8% of the
    sequences trained between them, about 3% of the training time (a forward is about a third of
    a training step's work). 32 at tiny's and world-v2's batch of 32; 12 at a batch of 12. The
    number is logged at fit start."""
    token_stats: Literal[TOKEN_STATS] = "id"
    """Which probes get the per-token statistics (`l1`, `l2`, `hoyer`, `dead_frac`,
    `top10_l1_share`; `sparsity/<probe>/<stat>` and the `sparsity/stats_by_layer` figure): id (the
    reference probe, the one they are read on) or all. Every probe gets its density, firing rates
    and gaps either way. On a CPU the top-10% share's top-k is most of a measurement's reductions:
    `all` adds about 0.25 s of one core a probe of 80 windows at `tiny`'s shape."""
    train_density: bool = True
    """`sparsity/train/layer<i>` and `.../mean`, the density of the training batches, counted from
    the training forward itself at every step the trainer logs (hooks on the MLP input projections
    for that step: no extra pass, the loss bit for bit the same; `lamina.instrument.train_density`).
    Off under `model.compile`, where a hook would recompile the model."""

    def __post_init__(self) -> None:
        self._plain()
        self._choice("active", ACTIVE_RULES)
        self._number("cett", "a number in (0, 1)", lambda v: 0 < v < 1)
        self._number("eps", "a non-negative number", lambda v: 0 <= v < math.inf, null=True)
        self._int("light_every_n_steps", 1, null=True)
        if self.light_windows is not None:  # null: sized to the training between two (callback.light_windows)
            self._int("light_windows", 2)
        self._choice("token_stats", TOKEN_STATS)
        self._flag("train_density")


@dataclass(frozen=True)
class ModularityConfig(_Section):
    """The co-activation partition of each layer's units, Q against its shuffled-weights null and
    its permutation null, held-out Q, stability against its floor (`instrument.modularity.*`)."""

    SECTION: ClassVar[str] = "modularity"

    enabled: bool = True
    """Partition at all (the ablation needs it)."""
    every_n_steps: PositiveInt | None = None
    """Partition every this many steps (and at step 0 and the end); null: instrument.every_n_steps."""
    tokens: PositiveInt | None = 2048
    """The co-activation graphs (and their nulls) are built from the first this many tokens of `id`
    and of `id_b`; null: all of them. Its cost (counts, null draws, the shuffled copies' forwards)
    grows with it; the partitions' eigendecompositions and k-means do not. Q is read against its
    nulls at the same tokens (fewer tokens: noisier graphs, a higher Q for noise and for the nulls
    alike). 2048, as tiny.yaml and world-v2-tiny.yaml (the study) set it (4096 before 2026-12-07)."""
    null_draws: at_least(MIN_NULL_DRAWS) = MIN_NULL_DRAWS
    """Draws of each null, at least 8: the permutation null here (per-unit permuted activity) and
    the ablation's (random unit sets of the modules' sizes), which reads this key too."""
    permutation_null: Literal[PERMUTATION_NULL] = "ends"
    """When to draw the permutation null (`q_null_*`, `q_z`: the partition of activity whose tokens
    are permuted per unit): ends (at the step-0 and the final measurements), every (at every
    measurement that partitions) or off. Descriptive: every network clears it, an untrained one
    too; the shuffled-weights null below, drawn at every partition, is the one that decides. Its
    `null_draws` partitions a layer are about a third of a partitioning measurement's cost on a CPU.
    Where it is not drawn its tags are not logged. The study's modularity claim reads it at the
    final measurement (`q_null_hi`, in descriptive rows)."""
    shuffled_draws: NonNegativeInt = DEFAULT_SHUFFLED_DRAWS
    """Draws of the shuffled-weights null (Filan et al., arXiv 2103.03386): the model with every
    weight matrix of its blocks shuffled within the matrix, the same probe windows, Q found the
    same way (`modularity/layer<i>/q_shuffled_*`). 0 turns it off; otherwise at least 2 (a null
    needs a spread). Each draw costs a partition per layer and a forward of the modularity tokens
    (about 0.55 s on `tiny`'s shape on a CPU)."""
    n_modules: PositiveInt | None = None
    """Modules per layer; null: chosen in 2..max_modules by Q on the `id` graph (the held-out Q is
    scored on `id_b`, which the choice never sees)."""
    max_modules: at_least(2) = 8
    """The most modules the choice may pick."""

    def __post_init__(self) -> None:
        self._plain()
        self._flag("enabled")
        self._int("every_n_steps", 1, null=True)
        self._int("tokens", 1, null=True)
        self._int("null_draws", MIN_NULL_DRAWS)
        self._choice("permutation_null", PERMUTATION_NULL)
        self._int("shuffled_draws", 0)
        if self.shuffled_draws == 1:
            raise self._bad("shuffled_draws", "0 (off) or at least 2 draws (a null needs a spread)")
        self._int("n_modules", 1, null=True)
        self._int("max_modules", 2)


@dataclass(frozen=True)
class AblationConfig(_Section):
    """Mean- (or zero-) ablate each module in turn on the string-task probes (world corpus, strings
    family trained): the per-task loss increase and a specificity per layer against random unit
    sets (`instrument.ablation.*`). It needs modularity; its null's draws are
    `instrument.modularity.null_draws`."""

    SECTION: ClassVar[str] = "ablation"

    enabled: bool = True
    """Ablate at all."""
    every_n_steps: PositiveInt | None = 500
    """Ablate (the costly part) every this many steps, and at step 0 and the end (null: only at
    step 0 and the end); it partitions whenever it runs."""
    examples: PositiveInt = 16
    """String examples per task in the task probe."""
    mode: Literal[ABLATION_MODES] = "mean"
    """mean (units set to their mean on the task probe) or zero."""

    def __post_init__(self) -> None:
        self._plain()
        self._flag("enabled")
        self._int("every_n_steps", 1, null=True)
        self._int("examples", 1)
        self._choice("mode", ABLATION_MODES)


@dataclass(frozen=True)
class LayersConfig(_Section):
    """The effective rank of the centred residual stream after each block, on id and id_b
    (`instrument.layers.*`)."""

    SECTION: ClassVar[str] = "layers"

    enabled: bool = True
    """Measure it."""

    def __post_init__(self) -> None:
        self._flag("enabled")


@dataclass(frozen=True)
class LastLayerConfig(_Section):
    """Jin et al.'s last-layer measures (arXiv 2603.03415) on the final hidden state before the
    answer of held-out arithmetic problems, by level (world corpus; `instrument.lastlayer.*`)."""

    SECTION: ClassVar[str] = "lastlayer"

    enabled: bool = True
    """Measure them."""
    problems: at_least(2) = 64
    """Arithmetic problems per level."""

    def __post_init__(self) -> None:
        self._plain()
        self._flag("enabled")
        self._int("problems", 2)


@dataclass(frozen=True)
class HierarchyConfig(_Section):
    """Linear probes per layer on the residual stream for labels of rising tiers (token, digit;
    entity, attribute, town; operator, carry, task; answer) of labelled world examples, fitted in
    closed form on one split and scored on another, each against a control task (the same probe on
    labels re-mapped at random per token type, Hewitt & Liang): `layers/layer<i>/probe/<label>/selectivity`
    and the layer where it peaks (`instrument.hierarchy.*`)."""

    SECTION: ClassVar[str] = "hierarchy"

    enabled: bool = True
    """Fit the probes."""
    every_n_steps: PositiveInt | None = None
    """Every this many steps (and at step 0 and the end; null: only then)."""
    items: PositiveInt = 8192
    """Labelled token positions the probes fit and score on (at most)."""
    examples: PositiveInt = 256
    """Labelled world examples they are drawn from."""

    def __post_init__(self) -> None:
        self._plain()
        self._flag("enabled")
        self._int("every_n_steps", 1, null=True)
        self._int("items", 1)
        self._int("examples", 1)


@dataclass(frozen=True)
class ContextConfig(_Section):
    """Context against memory (world `people` family trained): on counterfactual prompts, the share
    of answers that follow the context vs the memorised fact by exposure bin, with a steering vector
    (held-out split), a random direction of its norm (its null) and an instruction in the text
    (`eval/context/...`; `instrument.context.*`)."""

    SECTION: ClassVar[str] = "context"

    enabled: bool = True
    """Evaluate it."""
    every_n_steps: PositiveInt | None = None
    """Every this many steps (null: at step 0 and the end)."""
    prompts: at_least(4) = 128
    """Counterfactual prompts (half fit the steering vector, half score it)."""
    alpha: float = 1.0
    """The steering vector's scale."""

    def __post_init__(self) -> None:
        self._plain()
        self._flag("enabled")
        self._int("every_n_steps", 1, null=True)
        self._int("prompts", 4)
        self._number("alpha", "a number", math.isfinite)
        object.__setattr__(self, "alpha", float(self.alpha))


SECTIONS: dict[str, type[_Section]] = {
    cls.SECTION: cls
    for cls in (ProbesConfig, SparsityConfig, ModularityConfig, AblationConfig, LayersConfig, LastLayerConfig,
                HierarchyConfig, ContextConfig)
}


def section(cls: type[_Section], value) -> _Section:
    """`value` (an instance of `cls`, a mapping of its keys or None for its defaults) as `cls`; a
    mapping with a key `cls` lacks is one line naming it."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        keys = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in value if k not in keys]
        if unknown:
            raise ConfigError(
                f"instrument.{cls.SECTION}.{unknown[0]}: no such key (expected some of {', '.join(keys)})"
            )
        return cls(**value)
    raise ConfigError(
        f"instrument.{cls.SECTION}: expected a {cls.__name__} or a mapping of its keys, got {value!r}"
    )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


__all__ = [
    "AblationConfig", "ContextConfig", "HierarchyConfig", "LastLayerConfig", "LayersConfig", "ModularityConfig",
    "ProbesConfig", "SECTIONS", "SparsityConfig", "section",
]
