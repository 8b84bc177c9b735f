"""In-loop instrumentation: one Lightning callback, `Instrumentation`, composed of small parts.
Every measure is logged beside the number it must be read against (its null, a second sample,
a random baseline).

- `sparsity`: the active rules; stream the probes through the model and the MLP activations
  through the measures; density gaps with standard errors and z from window-level variance
- `modularity`: co-activation partition of each layer's units (k by held-out Q), Newman Q against
  a permutation null, stability against its floor
- `ablation`: mean- (or zero-) ablate each module on the string-task probes; unclipped per-task
  damage, specificity against random unit sets, unlearned tasks left out
- `layers`: effective rank of the centred residual stream, on id and id_b (the floor)
- `lastlayer`: Jin et al.'s last-layer measures on arithmetic problems by level, with level gaps
- `pictures`: matplotlib figures for TensorBoard
- `precision`: each forward in the run's precision (the trainer's autocast), every statistic in
  fp32 or wider whatever that precision

The model never imports this package; it reads the model through `GPT.forward(idx, record=...)`.
"""

from lamina.instrument.callback import Instrumentation, Measurement

__all__ = ["Instrumentation", "Measurement"]
