"""TensorBoard a researcher can read at a glance: lamina's TensorBoardLogger (Lightning's, without
its `hp_metric` and `epoch` series) and a custom-scalars layout in every run (the CUSTOM SCALARS tab):
the charts to read first, each number beside what it must be read against, and the URL of a TIME
SERIES tab that opens on them (`timeseries_url`; `python -m lamina.tensorboard` prints it)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import lightning as L
from lightning.pytorch import loggers
from lightning.pytorch.utilities import rank_zero_only

from lamina import tags

FAMILIAR_VS_UNFAMILIAR = tags.density(r"(id|id_b|random|random_uniform|shuffled|ood/.+|novel|exposure/.+)") + "$"
# The mean gaps, without their statistics (se, z, the band) and per-layer series.
MEAN_GAPS = "^" + tags.gap(r"(?!.*/(se|z|lo|hi|layer\d+)(/|$)).+") + "$"
GAP_TITLES = {  # the HEADLINE_GAPS of lamina.instrument.sparsity, each with how to read it
    "id_b": "gap id - id_b: the same text, a second sample (95% band: should hold 0)",
    "shuffled": "gap id - shuffled: the same tokens, order destroyed (95% band)",
    "random": "gap id - random: random tokens (95% band)",
}


def layout(n_layer: int) -> dict:
    """Charts (tags are regular expressions in Multiline charts; Margin charts take value, lower, upper).

    TensorBoard colours lines by run, not by tag: the charts read first are each one quantity with
    its band (Margin), or two lines whose levels cannot be confused (train loss under val loss)."""
    gaps = {
        title: ["Margin", [tags.gap(probe), tags.lo(tags.gap(probe)), tags.hi(tags.gap(probe))]]
        for probe, title in GAP_TITLES.items()
    }
    q_bands = {
        f"Q layer {i} against its shuffled-weights null (band: null mean +- 2 sd)": [
            "Margin", [tags.q(i), tags.q_shuffled(i, "lo"), tags.q_shuffled(i, "hi")]
        ]
        for i in range(n_layer)
    }
    return {
        "lamina: read first": {
            "loss: train and val": ["Multiline", [f"^{tags.TRAIN_LOSS}$", f"^{tags.VAL_LOSS}$"]],
            "bits per byte": ["Multiline", [f"^{tags.VAL_BPB}$"]],
            **gaps,
        },
        "lamina: density": {
            "density: familiar (id, id_b) vs unfamiliar probes, mean over layers": [
                "Multiline", [FAMILIAR_VS_UNFAMILIAR]
            ],
            "density of the training batches (from the training forward) and of id": [
                "Multiline", [f"^{tags.density(tags.TRAIN_PROBE)}$", f"^{tags.density('id')}$"]
            ],
            "density gaps (id minus probe), mean over layers: every probe": ["Multiline", [MEAN_GAPS]],
        },
        "lamina: modularity": q_bands,
    }


# The TIME SERIES tab sorts its cards by tag name (it would open on `gate/*` and `lastlayer/*`), and
# its default smoothing (0.6) draws end points that are not the values. Its URL can pin cards above
# the rest and set the smoothing (`pinnedCards`, `smoothing`: TensorBoard's dashboard deep links):
# these are the cards it opens on, in this order.
PINNED = (tags.TRAIN_LOSS, tags.VAL_LOSS, tags.VAL_BPB, *(tags.gap(probe) for probe in GAP_TITLES),
          tags.density("id"), tags.density(tags.TRAIN_PROBE))


def timeseries_url(host: str = "localhost", port: int = 6006) -> str:
    """The TIME SERIES tab with `PINNED` at the top and smoothing 0: where to open TensorBoard."""
    pinned = json.dumps([{"plugin": "scalars", "tag": tag} for tag in PINNED], separators=(",", ":"))
    return f"http://{host}:{port}/?smoothing=0&pinnedCards={quote(pinned, safe='')}#timeseries"


class TensorBoardLogger(loggers.TensorBoardLogger):
    """Lightning's TensorBoardLogger with no `hp_metric` placeholder (default_hp_metric false) and no
    `epoch` series (lamina streams one endless epoch): the scalars tab starts with lamina's tags.
    `last_values` keeps the last value logged under each tag and `start_values` those logged at step
    0 (the capability gates read them at the end of fit: lamina.callbacks.CapabilityGates)."""

    def __init__(
        self,
        save_dir: str,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = False,
        prefix: str = "",
        sub_dir: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(save_dir, name, version, log_graph, default_hp_metric, prefix, sub_dir, **kwargs)
        self.last_values: dict[str, float] = {}
        self.start_values: dict[str, float] = {}

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        metrics = {k: v for k, v in metrics.items() if k != "epoch"}
        super().log_metrics(metrics, step)
        self.remember(metrics, step)

    @rank_zero_only
    def remember(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Keep `metrics` in `last_values` and `start_values` without writing a series: the
        measurements `instrument.series: summary` sends to the run's measurements.jsonl instead
        (lamina.instrument.callback), which the gates read all the same."""
        for tag, value in metrics.items():
            if isinstance(value, (int, float)) or (hasattr(value, "numel") and value.numel() == 1):
                self.last_values[tag] = float(value)
                if step == 0:
                    self.start_values[tag] = float(value)


class TensorBoardLayout(L.Callback):
    """Writes `layout(n_layer)` into each TensorBoard logger's run at the start of fit (global rank
    zero; resumed runs write it again, which TensorBoard reads as the same layout)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, loggers.TensorBoardLogger):
                logger.experiment.add_custom_scalars(layout(pl_module.hparams.get("n_layer", 0)))


if __name__ == "__main__":
    print(timeseries_url())
