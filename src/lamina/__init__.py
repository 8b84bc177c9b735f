"""lamina: a small-scale pretraining lab with in-loop instrumentation."""

__version__ = "0.1.0"
