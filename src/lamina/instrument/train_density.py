"""`sparsity/train/*`: the density of the training batches, read from the training forward itself.

For an optimizer step whose metrics the trainer writes (every `trainer.log_every_n_steps`, and
the last), forward hooks on each block's `mlp.c_fc` count the active units of the pre-activation
the training forward has just computed, under the same active rule as the probes (`sign`: the
pre-activation, or a gated MLP's gate, > 0; `eps` and `cett` through the post-activation and the
thresholds of the last measurement), logged at train/loss's step (the weights the forward ran
with). No extra forward runs and nothing is written: the loss is the
same, bit for bit, with the hooks on or off. Forwards in eval mode (another callback's evaluation
within the step) are not counted. The hooks live for that one step; the counts stay on
the device until the step ends (one reduction over ranks, one copy to the host).

`sparsity/train` sits beside `sparsity/id`, not in its place: the training batches are other text
at every step (their density moves with what the batch holds) and are read in training mode
(dropout on, the trainer's precision), so they are a live reading of the density, not a measure
with an interval. The sign rule's count is the same in bf16 as in fp32 for the same
pre-activation (rounding keeps the sign).
"""

from __future__ import annotations

from functools import partial

import torch

from lamina import measures, tags
from lamina.instrument.sparsity import ActiveRule


class TrainDensity:
    """Hooks that count active MLP units in the training forward of one optimizer step."""

    def __init__(self) -> None:
        self.handles: list = []
        self.active: list[torch.Tensor] = []  # per layer, a device scalar (float64 where the device has it)
        self.entries: list[int] = []  # per layer, tokens x units seen

    @property
    def attached(self) -> bool:
        return bool(self.handles)

    def attach(self, model: torch.nn.Module, rule: ActiveRule) -> None:
        blocks = model.transformer.h
        self.active = [torch.zeros((), dtype=torch.float64) for _ in blocks]
        self.entries = [0 for _ in blocks]
        for layer, block in enumerate(blocks):
            hook = partial(self._count, layer, block.mlp, rule)
            self.handles.append(block.mlp.c_fc.register_forward_hook(hook))

    def _count(self, layer: int, mlp: torch.nn.Module, rule: ActiveRule, module, inputs, output) -> None:
        if not module.training:  # another callback's evaluation forward (generation, probes) in this step
            return
        with torch.no_grad():
            h = output.detach()
            if rule.name == "sign":
                mask = mlp.gate_pre_activation(h) > 0
            else:
                a = mlp.activate(h)
                mask = measures.active_mask(a.reshape(-1, a.shape[-1]), rule.threshold(layer))
            count = mask.sum(dtype=torch.int64).to(measures.wide_dtype(mask.device))
            self.active[layer] = self.active[layer].to(count.device, count.dtype) + count
            self.entries[layer] += mask.numel()

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def scalars(self, reduce=None) -> dict[str, float]:
        """`sparsity/train/layer<i>` and `sparsity/train/mean`; `reduce(tensor)` sums over ranks
        (the strategy's), or None in one process. Empty if no training forward ran."""
        if not any(self.entries):
            return {}
        counts = torch.stack([a.to(self.active[0].device) for a in self.active])
        entries = torch.tensor(self.entries, dtype=counts.dtype, device=counts.device)
        both = torch.cat([counts, entries])
        if reduce is not None:
            both = reduce(both)
        counts, entries = both.cpu().tolist()[: len(self.entries)], both.cpu().tolist()[len(self.entries):]
        density = [c / e for c, e in zip(counts, entries)]
        out = {tags.density(tags.TRAIN_PROBE, i): d for i, d in enumerate(density)}
        out[tags.density(tags.TRAIN_PROBE)] = sum(density) / len(density)
        return out
