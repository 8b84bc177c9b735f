"""In-loop instrumentation: one Lightning callback, `Instrumentation`, composed of small parts.

- `sparsity`: stream the probes through the model and the MLP activations through the measures
- `modularity`: co-activation partition of each layer's units, Newman Q, stability
- `ablation`: zero each module in turn on the string-task probes; per-task damage, specificity
- `layers`: effective rank of the residual stream
- `pictures`: images as numpy arrays (no matplotlib)

The model never imports this package; it reads the model through `GPT.forward(idx, record=...)`.
"""

from lamina.instrument.callback import Instrumentation, Measurement

__all__ = ["Instrumentation", "Measurement"]
