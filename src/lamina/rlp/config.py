"""The RLP phase's settings (`model.rlp.*`) and those of the thinking evaluations (`thought_eval.*`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lamina.data import world
from lamina.data.thoughts import longest_thought_tokens
from lamina.errors import ConfigError

THOUGHT_SOURCES = ("policy", "filler", "frozen")
POSITION_RULES = ("uniform", "thought_slots")
REWARDS = ("info_gain", "shuffled")


@dataclass
class RLPConfig:
    """The RLP phase (`model.rlp.*`). Defaults follow the paper where it gives a value."""

    group_size: int = 16  # G thoughts per position (paper: 16)
    temperature: float = 0.7  # sampling temperature of thoughts (paper: 0.7)
    # cap on the sampled tokens of a thought, its `</think>` included; null: the longest worked
    # thought of the world corpus at the trained families and levels (lamina.data.thoughts)
    max_thought_tokens: int | None = None
    positions_per_doc: int = 1  # positions t per document (batch row)
    positions: str = "uniform"  # uniform (the paper) | thought_slots (DEVIATION: where stripped thoughts stood)
    reward_tokens: int | str = 1  # K next tokens scored (paper: 1) | line (DEVIATION: the rest of the line)
    reward_line_max_tokens: int = 16  # reward_tokens: line scores at most this many tokens
    reward: str = "info_gain"  # info_gain (the paper) | shuffled (control: rewards permuted across groups)
    context_tokens: int | None = None  # tokens before x_t; null: as many as fit (see context_length)
    clip_eps: float = 0.2  # PPO clip range: ratios outside [1 - eps, 1 + eps] are clipped
    ema_decay: float = 0.999  # tau of the EMA baseline model (paper: 0.999)
    ntp_weight: float = 0.0  # DEVIATION when > 0: adds ntp_weight * next-token loss on the batch
    thoughts: str = "policy"  # policy (RLP) | filler | frozen (controls)
    filler_token: str = "."  # the token a `filler` thought repeats (must be one token)
    seed: int = 0  # seed of positions and thought sampling (mixed with the step: resumes are exact)

    def __post_init__(self) -> None:
        def bad(key: str, expected: str) -> ConfigError:
            return ConfigError(f"model.rlp.{key}: expected {expected}, got {getattr(self, key)!r}")

        if not _is_int(self.group_size) or self.group_size < 2:
            raise bad("group_size", "an integer >= 2 (the leave-one-out baseline needs two thoughts)")
        if not self.temperature > 0:
            raise bad("temperature", "a number > 0")
        if self.max_thought_tokens is not None and (
            not _is_int(self.max_thought_tokens) or self.max_thought_tokens < 1
        ):
            raise bad("max_thought_tokens", "null or an integer >= 1")
        if not _is_int(self.positions_per_doc) or self.positions_per_doc < 1:
            raise bad("positions_per_doc", "an integer >= 1")
        if self.positions not in POSITION_RULES:
            raise bad("positions", f"one of {', '.join(POSITION_RULES)}")
        if self.reward_tokens != "line" and (not _is_int(self.reward_tokens) or self.reward_tokens < 1):
            raise bad("reward_tokens", "an integer >= 1 or line")
        if not _is_int(self.reward_line_max_tokens) or self.reward_line_max_tokens < 1:
            raise bad("reward_line_max_tokens", "an integer >= 1")
        if self.reward not in REWARDS:
            raise bad("reward", f"one of {', '.join(REWARDS)}")
        if self.context_tokens is not None and (not _is_int(self.context_tokens) or self.context_tokens < 1):
            raise bad("context_tokens", "null or an integer >= 1")
        if not 0 < self.clip_eps < 1:
            raise bad("clip_eps", "a number in (0, 1)")
        if not 0 <= self.ema_decay <= 1:
            raise bad("ema_decay", "a number in [0, 1]")
        if not self.ntp_weight >= 0:
            raise bad("ntp_weight", "a number >= 0")
        if self.thoughts not in THOUGHT_SOURCES:
            raise bad("thoughts", f"one of {', '.join(THOUGHT_SOURCES)}")
        if not _is_int(self.seed):
            raise bad("seed", "an integer")

    @property
    def thought_cap(self) -> int:
        """max_thought_tokens, or (null) the longest worked thought of the whole world corpus;
        RLPModel resolves null against the families and levels the run trains on."""
        return self.max_thought_tokens or longest_thought_tokens()

    @property
    def scored_tokens(self) -> int:
        """The most tokens a reward scores after the thought (K, or the cap on a line)."""
        return self.reward_line_max_tokens if self.reward_tokens == "line" else self.reward_tokens

    def context_length(self, block_size: int) -> int:
        """Tokens of context before x_t: the context, `<think>`, a thought of at most
        max_thought_tokens + 1 tokens (a forced `</think>`) and the K - 1 scored tokens after x_t
        must fit in block_size."""
        cap, scored = self.thought_cap, self.scored_tokens
        fits = block_size - cap - 1 - scored
        length = fits if self.context_tokens is None else self.context_tokens
        if fits < 1 or length > fits:
            cap_text = f"model.rlp.max_thought_tokens={cap}"
            if self.max_thought_tokens is None:
                cap_text += " (null: the longest worked thought at the trained levels)"
            context_text = f"a context of {length}" if self.context_tokens is not None else "a context of at least 1"
            raise ConfigError(
                f"model.rlp.context_tokens: {context_text} token(s), <think>, a thought of up to {cap_text} tokens "
                f"plus a closing </think> and {scored} scored token(s) do not fit in model.block_size={block_size}"
            )
        return length


@dataclass
class ThoughtEvalConfig:
    """Evaluations of thinking (`thought_eval.*`), for RLP runs and their controls alike."""

    every_n_steps: int = 100  # also at step 0 and after the last step; 0: never
    levels: list[int] = field(default_factory=lambda: list(world.ARITH_LEVELS))
    examples_per_level: int = 256  # distinct held-out arithmetic problems per level (level 1 has 100)
    seed: int = 1_000_003  # world seed of the held-out problems (must differ from data.seed)
    max_thought_tokens: int | None = None  # greedy thought budget; null: the longest worked thought at `levels`
    max_answer_tokens: int = 12  # greedy answer budget
    pass_samples: int = 64  # n thoughts sampled per problem (temperature 1) for pass@k; 0: off
    pass_problems: int = 64  # problems per level for pass@k (the first of the held-out ones)
    pass_at: tuple[int, ...] = (1, 4, 16, 64)  # the k of eval/pass_at_<k>/level<l>
    nll_positions: int = 64  # val positions of the next-token loss with a sampled thought; 0: off
    nll_thought_tokens: int | None = None  # null: model.rlp's thought cap (32 without rlp)
    nll_temperature: float | None = None  # null: model.rlp.temperature (0.7 without rlp)
    batch_size: int = 256  # rows decoded together

    def __post_init__(self) -> None:
        for key in ("every_n_steps", "examples_per_level", "nll_positions", "pass_samples", "pass_problems"):
            if not _is_int(getattr(self, key)) or getattr(self, key) < 0:
                raise ConfigError(f"thought_eval.{key}: expected an integer >= 0, got {getattr(self, key)!r}")
        for key in ("max_answer_tokens", "batch_size"):
            if not _is_int(getattr(self, key)) or getattr(self, key) < 1:
                raise ConfigError(f"thought_eval.{key}: expected an integer >= 1, got {getattr(self, key)!r}")
        cap = self.max_thought_tokens
        if cap is not None and (not _is_int(cap) or cap < 1):
            raise ConfigError(f"thought_eval.max_thought_tokens: expected null or an integer >= 1, got {cap!r}")
        for level in self.levels:
            if level not in world.ARITH_LEVELS:
                raise ConfigError(
                    f"thought_eval.levels: unknown level {level!r} (expected some of "
                    f"{', '.join(map(str, world.ARITH_LEVELS))})"
                )
        if self.pass_samples and not all(_is_int(k) and 1 <= k <= self.pass_samples for k in self.pass_at):
            raise ConfigError(
                f"thought_eval.pass_at: expected integers in [1, pass_samples={self.pass_samples}], "
                f"got {self.pass_at!r}"
            )

    @property
    def thought_budget(self) -> int:
        """Greedy thought tokens with thinking: max_thought_tokens, or the longest worked thought at `levels`."""
        return self.max_thought_tokens or longest_thought_tokens(("arith",), self.levels)


# Checkpoints keep these in their hyperparameters under the names `lamina.rlp.RLPConfig` and
# `lamina.rlp.ThoughtEvalConfig` (where they lived before lamina.rlp became a package): let
# torch.load(weights_only=True) read old and new checkpoints back.
for _cls in (RLPConfig, ThoughtEvalConfig):
    _cls.__module__ = "lamina.rlp"
torch.serialization.add_safe_globals([RLPConfig, ThoughtEvalConfig])


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def thought_eval_settings(rlp: RLPConfig | None, config: ThoughtEvalConfig) -> tuple[int, float]:
    """(thought tokens, temperature) of the thought-NLL evaluation: its own, else the RLP run's."""
    tokens = config.nll_thought_tokens or (rlp.thought_cap if rlp else 32)
    temperature = config.nll_temperature or (rlp.temperature if rlp else 0.7)
    if not tokens >= 1 or not temperature > 0:
        raise ConfigError("thought_eval: nll_thought_tokens must be >= 1 and nll_temperature > 0")
    return tokens, temperature
