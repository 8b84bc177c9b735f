"""The optimizers a LanguageModel trains with (`model.optimizer`): AdamW, or Muon on the blocks'
weight matrices beside AdamW on everything else."""

from __future__ import annotations

import torch

OPTIMIZERS = ("adamw", "muon")


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on some parameters (the blocks' weight matrices) and torch.optim.AdamW on
    the others (embeddings, output layer, norms, biases), as one torch Optimizer.

    Why one object: Lightning's automatic optimization takes a single optimizer (several need
    manual optimization, which would mean redoing what lamina relies on it for: accumulation,
    gradient clipping through configure_gradient_clipping, the non-finite guard in
    on_before_optimizer_step, precision plugins, checkpointed optimizer and scheduler state). So
    this is an ordinary Optimizer whose `param_groups` are the AdamW groups followed by the Muon
    groups (the very dicts the two inner optimizers own) and whose `state` is shared by both (the
    parameters are disjoint): one LambdaLR schedules every group's lr, clipping and the guard see
    every parameter, `step` runs both, and `state_dict`/`load_state_dict` are torch's own (the
    saved groups carry each optimizer's options; loading re-links the inner optimizers to the
    loaded groups and state). It declares no fused step, so the guard decides on the host.
    """

    def __init__(self, adamw_groups: list[dict], muon_groups: list[dict], adamw: dict, muon: dict):
        self.adamw = torch.optim.AdamW(adamw_groups, **adamw)
        self.muon = torch.optim.Muon(muon_groups, **muon)
        super().__init__([*self.adamw.param_groups, *self.muon.param_groups], {})
        self._link()

    def _link(self) -> None:
        n = len(self.adamw.param_groups)
        self.adamw.param_groups, self.muon.param_groups = self.param_groups[:n], self.param_groups[n:]
        self.adamw.state = self.muon.state = self.state

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)  # replaces self.param_groups and self.state with new objects
        self._link()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.adamw.step()
        self.muon.step()
        return loss
