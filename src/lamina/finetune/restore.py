"""Restoring blocks: the causal test of where fine-tuning's damage lies. Drift (1 - CKA, relative
weight change; lamina.finetune.drift) says how far each layer moved, not whether the move is what
lost a fact: Adam's per-parameter step size evens out the relative weight change across layers, and
a representation read after a layer carries every earlier layer's change with it, so 1 - CKA grows
with depth whatever the cause (bench/results/study-cpu-2026-12-01: it grew with depth under
continued pretraining as much as under fine-tuning, and the weight change was flat across layers).
Putting the reference's weights back into some blocks of the fine-tuned model and counting the
facts that come back asks the question directly (the restoring logic of causal tracing, Meng et al.
2022, "Locating and Editing Factual Associations in GPT", §2, applied to weights rather than
hidden states): if fine-tuning broke knowledge stored in the lower blocks, restoring the lower half
brings back more facts than restoring the upper half.

`restored(tuned, reference, blocks)`: a copy of `tuned` with `reference`'s weights in
transformer.h[i] for i in `blocks` (each block whole: its norms, attention and MLP); the token and
position embeddings (tied to the output layer), the final norm and the other blocks stay `tuned`'s,
so the lower and the upper restoration differ only in which blocks they put back.
`halves(n_layer)`: the lower and the upper half of the blocks, equal in size (an odd middle block in
neither).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from lamina.errors import ConfigError
from lamina.model import GPT

SHAPE = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")


def halves(n_layer: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(lower, upper): blocks 0 .. n/2 - 1 and the last n/2 (n odd: the middle one in neither)."""
    if isinstance(n_layer, bool) or not isinstance(n_layer, int) or n_layer < 2:
        raise ConfigError(f"model.n_layer: expected at least 2 blocks to restore a lower and an upper half, "
                          f"got {n_layer!r}")
    half = n_layer // 2
    return tuple(range(half)), tuple(range(n_layer - half, n_layer))


def restored(tuned: GPT, reference: GPT, blocks: Iterable[int]) -> GPT:
    """A copy of `tuned` whose blocks `blocks` hold `reference`'s weights (the rest stays `tuned`'s)."""
    differ = [k for k in SHAPE if getattr(tuned.config, k) != getattr(reference.config, k)]
    if differ:
        raise ConfigError(f"restore: expected a reference of the tuned model's shape, got another {', '.join(differ)}")
    blocks = sorted(set(blocks))
    if any(not 0 <= i < tuned.config.n_layer for i in blocks):
        raise ConfigError(f"restore: expected blocks in 0 .. {tuned.config.n_layer - 1}, got {blocks}")
    out = copy.deepcopy(tuned)
    for i in blocks:
        out.transformer.h[i].load_state_dict(reference.transformer.h[i].state_dict())
    return out


__all__ = ["halves", "restored"]
