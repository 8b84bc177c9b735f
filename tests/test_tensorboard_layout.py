"""The custom-scalars layout names only tags that a run logs: a Margin chart's value and band, and
at least one tag for each Multiline pattern."""

from __future__ import annotations

import re

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lamina.cli import main
from lamina.instrument.sparsity import HEADLINE_GAPS
from lamina.tensorboard import GAP_TITLES, PINNED, layout, timeseries_url


def test_every_chart_of_the_layout_reads_tags_a_fit_logs(tmp_path):
    main([
        "fit", "--model.n_layer", "2", "--model.n_head", "2", "--model.n_embd", "32", "--model.block_size", "32",
        "--data.batch_size", "8", "--data.max_bytes", "200000", "--data.val_tokens", "2048",
        "--data.families", "[prose, strings]", "--data.cache_dir", str(tmp_path / "cache"),
        "--trainer.accelerator", "cpu", "--trainer.max_steps", "4", "--trainer.log_every_n_steps", "1",
        "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--trainer.logger.init_args.name", "t",
        "--instrument.every_n_steps", "2", "--instrument.probes.tokens", "256", "--instrument.ablation.examples", "2",
        "--instrument.modularity.shuffled_draws", "2",
    ])
    acc = EventAccumulator(str(tmp_path / "runs" / "t" / "version_0"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert set(GAP_TITLES) == set(HEADLINE_GAPS)
    for group, charts in layout(2).items():
        for title, (kind, series) in charts.items():
            if kind == "Margin":
                missing = [t for t in series if t not in tags]
                assert not missing, (group, title, missing)
            else:
                for pattern in series:
                    assert any(re.search(pattern, t) for t in tags), (group, title, pattern)
    value, lo, hi = (acc.Scalars(f"sparsity/gap/id_b{s}")[-1].value for s in ("", "/lo", "/hi"))
    assert lo < value < hi
    # The gaps chart of every probe shows values, not their statistics.
    every_probe = layout(2)["lamina: density"]["density gaps (id minus probe), mean over layers: every probe"][1][0]
    shown = {t for t in tags if re.search(every_probe, t)}
    assert "sparsity/gap/random" in shown and not {t for t in shown if t.endswith(("/se", "/z", "/lo", "/hi"))}
    # The TIME SERIES tab's URL pins tags the fit logs, loss first, with smoothing 0.
    assert PINNED[0] == "train/loss" and not [t for t in PINNED if t not in tags]


def test_the_timeseries_url_pins_the_cards_to_read_first_with_smoothing_0():
    from urllib.parse import parse_qs, urlsplit
    import json

    url = urlsplit(timeseries_url(port=6007))
    assert (url.netloc, url.fragment) == ("localhost:6007", "timeseries")
    query = parse_qs(url.query)
    assert query["smoothing"] == ["0"]
    pinned = json.loads(query["pinnedCards"][0])  # the format TensorBoard's deep link reads back
    assert [card["tag"] for card in pinned] == list(PINNED)
    assert all(card == {"plugin": "scalars", "tag": card["tag"]} for card in pinned)
