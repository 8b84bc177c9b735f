"""The instrumentation's pictures: matplotlib Figures built without pyplot, that render, say what
their inputs say (legend, panels, tick labels), survive NaN and empty inputs, and log through
TensorBoard's add_figure."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from lamina.instrument import pictures

PROBES = ["id", "id_b", "shuffled", "random", "random_uniform", "ood/arith", "ood/letters"] + [
    f"family/f{i}" for i in range(8)
]  # 15 probes: past tab10, legend must still list every one
TASKS = ["copy", "reverse", "add", "sort", "count", "lookup", "ood/arith/long-name-task"]


def density_inputs(n_probes: int = len(PROBES), n_layers: int = 4):
    rng = np.random.default_rng(0)
    density = rng.uniform(0.1, 0.6, (n_probes, n_layers))
    density = np.concatenate([density, density.mean(axis=1, keepdims=True)], axis=1)
    halfwidth = rng.uniform(0.0, 0.03, density.shape)
    halfwidth[0, 1] = np.nan  # a value whose interval could not be computed
    halfwidth[-1, :] = np.nan  # nor any of a probe's
    return density, halfwidth


def history(n_layers: int = 3, steps=(0, 50, 100, 150)):
    rng = np.random.default_rng(1)
    return {
        layer: [(s, 0.3 + 0.001 * s, 0.28, list(rng.normal(0.1, 0.01, 8))) for s in steps]
        for layer in range(n_layers)
    }


def similarity(d: int = 96, k: int = 4):
    rng = np.random.default_rng(2)
    labels = rng.integers(-1, k, d)
    sim = np.clip(rng.normal(0.0, 0.05, (d, d)), 0, 1)
    sim = np.where(labels[:, None] == labels[None, :], sim + 0.3, sim) * (labels[:, None] >= 0)
    sim = (sim + sim.T) / 2
    np.fill_diagonal(sim, 0.0)
    return sim, labels


def all_figures() -> list[Figure]:
    density, halfwidth = density_inputs()
    sim, labels = similarity()
    damage = np.random.default_rng(3).normal(0.1, 0.4, (4, len(TASKS)))
    return [
        pictures.density_figure(density, halfwidth, PROBES, 100),
        pictures.modularity_figure(history()),
        pictures.coactivation_figure(sim, labels, "layer 0"),
        pictures.ablation_figure(damage, TASKS, "layer 0", null_mean=np.zeros(len(TASKS))),
    ]


def texts(labels) -> list[str]:
    return [t.get_text() for t in labels]


def assert_renders(fig: Figure) -> np.ndarray:
    image = pictures.figure_to_array(fig)
    w, h = fig.get_size_inches() * fig.dpi
    assert image.dtype == np.uint8 and image.shape == (round(h), round(w), 3)
    non_white = (image < 250).any(axis=2).mean()
    assert 0.02 < non_white < 0.98, f"blank picture: {non_white:.3f} of pixels drawn"
    packed = image[::2, ::2].astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    assert len(np.unique(packed)) > 10  # colours, not one flat fill
    return image


# ---- each figure says what its input says --------------------------------------------------------


def test_density_legend_has_every_probe_and_columns_are_layers_then_mean():
    density, halfwidth = density_inputs()
    fig = pictures.density_figure(density, halfwidth, PROBES, 250)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert texts(ax.get_legend().get_texts()) == PROBES
    assert texts(ax.get_xticklabels()) == ["L0", "L1", "L2", "L3", "mean"]
    assert ax.get_ylabel() == "fraction active" and "250" in ax.get_title()
    assert_renders(fig)


def test_density_without_halfwidths_or_probes_does_not_raise():
    density, _ = density_inputs(3, 2)
    assert_renders(pictures.density_figure(density, None, PROBES[:3], 0))
    nan = np.full((2, 3), np.nan)
    assert_renders(pictures.density_figure(nan, nan, PROBES[:2], 0))
    fig = pictures.density_figure(np.zeros((0, 0)), np.zeros((0, 0)), [], 0)
    assert_renders(fig)


def test_modularity_has_one_panel_per_layer():
    fig = pictures.modularity_figure(history(3))
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["layer 0", "layer 1", "layer 2"]
    legend = texts(fig.legends[0].get_texts())
    assert legend[:2] == ["Q (id)", "Q held-out (id_b)"] and "null mean" in legend and "null min-max" in legend
    assert_renders(fig)
    grid = pictures.modularity_figure(history(6), max_cols=4)  # 2 rows x 4, two panels hidden
    assert sum(ax.get_visible() for ax in grid.axes) == 6 and len(grid.axes) == 8
    assert_renders(grid)


def test_modularity_single_step_missing_nulls_and_empty_layers_render():
    one_step = pictures.modularity_figure(history(2, steps=(40,)))
    q_line = [line for line in one_step.axes[0].get_lines() if line.get_label() == "Q (id)"][0]
    assert q_line.get_marker() == "o" and len(q_line.get_xdata()) == 1  # a point, visibly
    assert_renders(one_step)
    ragged = {
        0: [(0, 0.2, 0.18, []), (10, 0.25, None, None), (20, float("nan"), 0.2, [0.1, float("nan")])],
        1: [],  # a layer never measured
        2: [(5, 0.3, 0.3, [])],  # one step, no null draws
    }
    fig = pictures.modularity_figure(ragged)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["layer 0", "layer 1", "layer 2"]
    assert_renders(fig)
    assert_renders(pictures.modularity_figure({}))


def test_coactivation_orders_units_by_module_excluded_last():
    sim, labels = similarity()
    fig = pictures.coactivation_figure(sim, labels, "layer 1")
    assert len(fig.axes) == 2  # the matrix and its colorbar
    ax = fig.axes[0]
    assert ax.get_title() == "layer 1"
    assert texts(ax.get_yticklabels()) == ["m0", "m1", "m2", "m3", "excl."]
    order = pictures.module_order(labels, sim)
    ordered = labels[order]
    assert sorted(order) == list(range(len(labels)))
    assert (ordered[ordered >= 0] == np.sort(labels[labels >= 0])).all() and (ordered[-(labels < 0).sum():] < 0).all()
    assert_renders(fig)


def test_coactivation_large_empty_and_mismatched_inputs():
    rng = np.random.default_rng(4)
    d = 700  # over 256 units: block-averaged
    labels = rng.integers(0, 20, d)  # many modules: tick names left off
    fig = pictures.coactivation_figure(rng.uniform(0, 1, (d, d)), labels)
    assert "block means" in fig.axes[0].get_xlabel()
    assert_renders(fig)
    assert_renders(pictures.coactivation_figure(np.zeros((0, 0)), np.zeros(0, dtype=int)))
    assert_renders(pictures.coactivation_figure(np.full((5, 5), np.nan), -np.ones(5, dtype=int)))
    assert_renders(pictures.coactivation_figure(np.zeros((4, 4)), np.zeros(3, dtype=int)))


def test_ablation_ticks_are_tasks_and_modules_and_colour_is_centred_at_zero():
    damage = np.array([[0.5, -0.2, 0.0, 1.5, 0.1, 0.2, -0.1], [0.0, 0.3, -0.4, 0.1, 0.2, np.nan, 0.0]])
    fig = pictures.ablation_figure(damage, TASKS, "layer 2", null_mean=np.full((2, len(TASKS)), 0.05))
    ax = fig.axes[0]
    shown = texts(ax.get_xticklabels())
    assert shown[:-1] == TASKS[:-1]  # task names as given...
    assert shown[-1] == "ood/arith/long-name-t\u2026"  # ...past 22 characters cut short
    assert texts(ax.get_yticklabels()) == ["m0", "m1", "random"]
    assert all(t.get_rotation() == 45 for t in ax.get_xticklabels())
    image = ax.get_images()[0]
    vmin, vmax = image.norm.vmin, image.norm.vmax
    assert vmin == pytest.approx(-vmax) and vmax == pytest.approx(1.5)
    annotations = texts(ax.texts)
    assert "1.50" in annotations and "-0.40" in annotations and len(annotations) == damage.size - 1 + len(TASKS)
    assert_renders(fig)


def test_ablation_empty_and_all_nan_do_not_raise():
    assert_renders(pictures.ablation_figure(np.zeros((0, 3)), TASKS[:3]))
    assert_renders(pictures.ablation_figure(np.zeros((0, 0)), []))
    assert_renders(pictures.ablation_figure(np.full((2, 2), np.nan), TASKS[:2], null_mean=[]))
    big = pictures.ablation_figure(np.random.default_rng(5).normal(size=(16, 12)), [f"t{i}" for i in range(12)])
    assert not big.axes[0].texts  # too many cells to write out
    assert_renders(big)


# ---- no global state; TensorBoard ---------------------------------------------------------------


def test_pictures_never_import_pyplot():
    # The module alone (lamina.instrument's own imports pull pyplot in through torchmetrics, which
    # is harmless: what matters is that no figure goes through pyplot's registry or backend).
    code = (
        "import importlib.util, sys, numpy as np;"
        f"spec = importlib.util.spec_from_file_location('pictures', {pictures.__file__!r});"
        "p = importlib.util.module_from_spec(spec); spec.loader.exec_module(p);"
        "f = p.density_figure(np.ones((1, 2)), np.zeros((1, 2)), ['id'], 0); p.figure_to_array(f);"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_global_figure_registry_untouched_and_add_figure_writes_events(tmp_path):
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    before = plt.get_fignums()
    figures = all_figures()
    for fig in figures:
        pictures.figure_to_array(fig)
    assert plt.get_fignums() == before == []
    tags = ["sparsity/density", "modularity/q", "modularity/layer0/coactivation", "modularity/layer0/ablation"]
    writer = SummaryWriter(str(tmp_path))
    for tag, fig in zip(tags, figures):
        writer.add_figure(tag, fig, global_step=7, close=True)  # plt.close on a pyplot-less figure: no-op
    writer.close()
    assert plt.get_fignums() == []
    assert list(tmp_path.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    assert sorted(acc.Tags()["images"]) == sorted(tags)
    for tag, fig in zip(tags, figures):
        event = acc.Images(tag)[0]
        w, h = fig.get_size_inches() * fig.dpi
        assert event.step == 7 and (event.width, event.height) == (round(w), round(h))
