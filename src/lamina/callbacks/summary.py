"""The model summary at the start of a fit: Lightning's table, plain, without its FLOPs when it counted none."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary.model_summary import get_formatted_model_size, get_human_readable_count


class PlainModelSummary(ModelSummary):
    """The layers (name, type, parameters, mode) and the parameter counts and size, as plain text.

    Lightning counts FLOPs only with a forward pass on the module's `example_input_array`, which
    lamina's modules have none of: its table would say `Total FLOPs: 0`. They are left out when they
    are 0 (lamina counts them itself: perf/flops, from the model's shape). So are the counts of
    modules in train and eval mode. (`lamina fit` puts this summary in place of Lightning's default
    one: lamina.callbacks.TerminalDefaults.)
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        rank_zero_info(summary_table(summary_data, total_parameters, trainable_parameters, model_size, total_flops))


def summary_table(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_flops: int) -> str:
    columns = [(name, values) for name, values in summary_data if name != "FLOPs" or total_flops]
    widths = [max([len(name), *(len(str(v)) for v in values)]) for name, values in columns]
    rule = "-" * (sum(widths) + 3 * (len(columns) - 1))
    rows = [" | ".join(f"{name:<{w}}" for (name, _), w in zip(columns, widths)).rstrip(), rule]
    n_rows = len(columns[0][1]) if columns else 0
    rows += [" | ".join(f"{str(values[i]):<{w}}" for (_, values), w in zip(columns, widths)).rstrip()
             for i in range(n_rows)]
    rows.append(rule)
    totals = [(get_human_readable_count(trainable_parameters), "Trainable params")]
    if total_parameters != trainable_parameters:
        totals.append((get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"))
    totals += [(get_human_readable_count(total_parameters), "Total params"),
               (get_formatted_model_size(model_size), "Total estimated model params size (MB)")]
    if total_flops:
        totals.append((get_human_readable_count(total_flops), "Total FLOPs"))
    rows += [f"{value:<10}{label}" for value, label in totals]
    return "\n".join(rows)
