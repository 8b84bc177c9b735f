"""Pictures of the instrumentation as matplotlib Figures, for TensorBoard's `add_figure`.

Every function builds a `matplotlib.figure.Figure` directly (the object-oriented API): no pyplot,
so no GUI backend, no global figure registry and no rcParams changes while training runs. Log one
with `SummaryWriter.add_figure(tag, fig, step, close=True)` (it renders through `FigureCanvasAgg`;
its `plt.close` finds no pyplot manager for these figures and does nothing), or turn it into a
uint8 [H, W, 3] array with `figure_to_array` for loggers that take images.

- `density_figure`: fraction active per probe across layers, with 95% intervals.
- `modularity_figure`: Newman Q, held-out Q and its null over steps (the shuffled-weights null where
  it was drawn, else the permutation null), one panel a layer.
- `coactivation_figure`: a layer's unit similarity ordered by module, boundaries marked.
- `ablation_figure`: loss increase per [module, task] when the module is ablated.

Sizes are ~6 x 3.5 in at 100 dpi (600 x 350 px). The layout is fixed (margins in inches, no
constrained layout), panels share tickers and boundaries are single collections, which keeps
each figure to 3-4x the cost of an empty one-axes plot (build and render: roughly 0.1-0.2 s of
one core; text is the cost, so the ablation heatmap stops writing its cells past MAX_ANNOTATED).
Inputs may hold NaN and may be empty: the figure then says so instead of raising.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import CenteredNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100
SIZE = (6.0, 3.5)  # inches
MAX_PIXELS = 256  # a similarity matrix larger than this is block-averaged down to fit
MAX_ANNOTATED = 100  # ablation cells written out up to this many (each text is ~1 ms to render)
SMALL = 7
MEDIUM = 8


def figure_to_array(fig: Figure) -> np.ndarray:
    """The figure rendered by Agg as a uint8 [H, W, 3] array (as `add_figure` renders it)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.array(canvas.buffer_rgba(), dtype=np.uint8)[..., :3]


def _figure(size: tuple[float, float] = SIZE, left: float = 0.6, right: float = 0.15,
            bottom: float = 0.5, top: float = 0.35, **space) -> Figure:
    """A figure whose axes area leaves fixed margins (inches): a fixed layout renders in about
    half the time of matplotlib's constrained layout, which measures every text twice."""
    w, h = size
    fig = Figure(figsize=size, dpi=DPI)
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, **space)
    return fig


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def _title(ax, text: str, fontsize: float = MEDIUM) -> None:
    """An axes title at a fixed height: with y given, matplotlib skips measuring every tick label
    of the axes to lift the title over them (a third of a small figure's render time)."""
    ax.set_title(text, fontsize=fontsize, y=1.0, pad=4)


def _no_data(ax, text: str = "no data", clear_ticks: bool = True) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=MEDIUM, color="0.4", transform=ax.transAxes)
    if clear_ticks:  # not on shared axes: their tickers are one
        ax.set_xticks([])
        ax.set_yticks([])


def _colorbar(fig: Figure, mappable, ax, label: str, gap: float = 0.1, width: float = 0.12):
    """A colorbar in fixed axes `gap` inches right of `ax` (cheaper than letting matplotlib carve
    it out of `ax` through a new gridspec, and the layout is fixed anyway)."""
    w, h = fig.get_size_inches()
    pos = ax.get_position(original=True)
    cax = fig.add_axes((pos.x1 + gap / w, pos.y0, width / w, pos.height))
    bar = fig.colorbar(mappable, cax=cax)
    bar.ax.tick_params(labelsize=SMALL)
    bar.set_label(label, fontsize=SMALL)
    return bar


def _colours(n: int) -> list:
    """Distinct colours for n series: tab10 up to 10, tab20 up to 20, then tab20 cycling."""
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


MARKERS = ("o", "s", "^", "D", "v", "P", "X")


# ---- sparsity ----------------------------------------------------------------------------------


def density_figure(density, halfwidth, probes: Sequence[str], step: int) -> Figure:
    """Fraction active per probe (rows of `density`, [probes, layers + 1]) across the layers and a
    final "mean" column, each point with its 95% interval (`halfwidth`, the same shape; NaN or
    negative: no bar). Probes are dodged sideways so their bars do not overlap; legend on the right."""
    probes = [str(p) for p in probes]
    d = np.asarray(density, dtype=np.float64)
    d = d.reshape(len(probes), -1) if probes and d.size else np.zeros((len(probes), 0))
    hw = np.asarray(halfwidth if halfwidth is not None else [], dtype=np.float64)
    hw = hw.reshape(d.shape) if hw.size == d.size else np.full(d.shape, np.nan)
    hw = np.where(np.isfinite(hw) & (hw >= 0), hw, np.nan)
    fig = _figure(right=1.6)
    ax = fig.add_subplot()
    _title(ax, f"fraction active by layer, step {step} (bars: 95% interval)")
    n_probes, n_cols = d.shape
    if n_probes == 0 or n_cols == 0 or not np.isfinite(d).any():
        _no_data(ax)
        return fig
    x = np.arange(n_cols, dtype=np.float64)
    width = min(0.7, 0.08 * n_probes)
    offsets = (np.arange(n_probes) - (n_probes - 1) / 2) * (width / max(n_probes - 1, 1))
    for p, (name, colour) in enumerate(zip(probes, _colours(n_probes))):
        xs = x + offsets[p]
        ax.vlines(xs, d[p] - hw[p], d[p] + hw[p], color=colour, linewidth=0.9)  # NaN: no bar
        ax.plot(xs, d[p], color=colour, marker=MARKERS[(p // 10) % len(MARKERS)], markersize=3.5,
                linewidth=1.0, linestyle="-" if p < 10 else "--", label=_short(name))
    if n_cols > 1:
        ax.axvline(n_cols - 1.5, color="0.7", linewidth=0.8, linestyle=":")
    ax.set_xticks(x, [f"L{i}" for i in range(n_cols - 1)] + ["mean"], fontsize=SMALL)
    ax.tick_params(axis="y", labelsize=SMALL)
    ax.set_xlabel("layer", fontsize=MEDIUM)
    ax.set_ylabel("fraction active", fontsize=MEDIUM)
    ax.grid(axis="y", color="0.9", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=SMALL, frameon=False, handlelength=2.0,
              borderaxespad=0.0, labelspacing=0.35)
    return fig


def layer_stats_figure(values: dict[str, np.ndarray], probes: Sequence[str], step: int) -> Figure:
    """One panel per statistic (`values[stat]`: [probes, layers]), a line per probe across the layers:
    the per-layer statistics that are not logged as scalars for every probe."""
    probes = [str(p) for p in probes]
    names = list(values)
    fig = _figure(right=1.6)
    cols = min(3, max(len(names), 1))
    rows = max(1, -(-len(names) // cols))
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.suptitle(f"MLP activation statistics by layer, step {step}", fontsize=MEDIUM)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        v = np.asarray(values[name], dtype=np.float64).reshape(len(probes), -1)
        for p, (probe, colour) in enumerate(zip(probes, _colours(len(probes)))):
            ax.plot(np.arange(v.shape[1]), v[p], color=colour, marker=MARKERS[(p // 10) % len(MARKERS)],
                    markersize=3, linewidth=1.0, linestyle="-" if p < 10 else "--", label=_short(probe))
        ax.set_title(name, fontsize=SMALL)
        ax.set_xticks(np.arange(v.shape[1]), [f"L{i}" for i in range(v.shape[1])], fontsize=SMALL)
        ax.tick_params(axis="y", labelsize=SMALL)
        ax.grid(axis="y", color="0.9", linewidth=0.6)
    if names:
        axes.flat[min(cols, len(names)) - 1].legend(
            loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=SMALL, frameon=False, borderaxespad=0.0
        )
    return fig


# ---- modularity --------------------------------------------------------------------------------


def _null_summary(draws) -> tuple[float, float, float]:
    v = np.asarray(draws if draws is not None else [], dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if not v.size:
        return np.nan, np.nan, np.nan
    return float(v.min()), float(v.max()), float(v.mean())


def modularity_figure(history: Mapping[int, Sequence[tuple]], max_cols: int = 4) -> Figure:
    """Newman Q over steps, one panel per layer (a row, or a grid of `max_cols` columns), read
    against its null: `history[layer]` = [(step, q, q_heldout, permutation-null draws[, shuffled-
    weights draws]), ...]. Q is a solid line with markers, held-out Q dashed, the null's min-max a
    grey band with its mean dotted. The null is the shuffled-weights one (the one that decides)
    where any entry has its draws, else the permutation null; the title says which."""
    layers = sorted(history)
    shuffled = any(len(e) > 4 and e[4] for entries in history.values() for e in entries)
    null_of = (lambda e: e[4] if len(e) > 4 else None) if shuffled else (lambda e: e[3] if len(e) > 3 else None)
    n = max(len(layers), 1)
    cols = min(n, max_cols)
    rows = -(-n // cols)
    fig = _figure((SIZE[0], SIZE[1] if rows == 1 else 0.5 + 2.2 * rows), bottom=0.72, top=0.5,
                  wspace=0.08, hspace=0.35)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    fig.suptitle(f"modularity Q against its {'shuffled-weights' if shuffled else 'permutation'} null",
                 fontsize=MEDIUM)
    if not layers:
        _no_data(axes[0])
        return fig
    for ax in axes[len(layers):]:
        ax.set_visible(False)
    for ax in axes[max(len(layers) - cols, 0):len(layers)]:  # nothing below them: show their steps
        ax.tick_params(labelbottom=True)
    all_steps = []
    for ax, layer in zip(axes, layers):
        entries = sorted(history[layer], key=lambda e: e[0])
        _title(ax, f"layer {layer}")
        ax.tick_params(labelsize=SMALL)
        ax.grid(color="0.92", linewidth=0.6)
        ax.set_axisbelow(True)
        if not entries:
            _no_data(ax, clear_ticks=False)
            continue
        steps = np.array([e[0] for e in entries], dtype=np.float64)
        all_steps.extend(steps)
        q = np.array([np.nan if e[1] is None else e[1] for e in entries], dtype=np.float64)
        held = np.array([np.nan if e[2] is None else e[2] for e in entries], dtype=np.float64)
        lo, hi, mean = np.array([_null_summary(null_of(e)) for e in entries]).T
        if len(steps) > 1:
            ax.fill_between(steps, lo, hi, color="0.6", alpha=0.3, linewidth=0, label="null min-max")
        else:
            ax.vlines(steps, lo, hi, color="0.6", alpha=0.5, linewidth=6, label="null min-max")
        ax.plot(steps, mean, color="0.45", linestyle=":", marker=".", markersize=4, linewidth=1.0, label="null mean")
        ax.plot(steps, held, color="tab:orange", linestyle="--", marker="s", markersize=3, linewidth=1.0,
                label="Q held-out (id_b)")
        ax.plot(steps, q, color="tab:blue", marker="o", markersize=3.5, linewidth=1.2, label="Q (id)")
    axes[0].yaxis.set_major_locator(MaxNLocator(nbins=5))  # the panels share one ticker each way
    if all_steps and min(all_steps) == max(all_steps):  # one step: a point at the centre
        axes[0].set_xlim(all_steps[0] - 1, all_steps[0] + 1)
        axes[0].set_xticks([all_steps[0]])
    else:
        axes[0].xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    fig.supxlabel("step", fontsize=MEDIUM, y=0.42 / fig.get_figheight(), va="center")
    fig.supylabel("Newman Q", fontsize=MEDIUM, x=0.02)
    handles, labels = next(
        (h for h in (ax.get_legend_handles_labels() for ax in axes) if h[0]), ([], [])
    )
    if handles:
        fig.legend(handles[::-1], labels[::-1], loc="lower center", ncols=4, fontsize=SMALL, frameon=False,
                   borderaxespad=0.2)
    return fig


def module_order(labels, similarity=None) -> np.ndarray:
    """Unit indices sorted by module label, excluded units (label -1) last; within a module by
    total similarity to the module, strongest first, when `similarity` is given (else stable)."""
    labels = np.asarray(labels).ravel()
    key = np.where(labels < 0, np.iinfo(np.int64).max, labels)
    if similarity is None:
        return np.argsort(key, kind="stable")
    same = labels[:, None] == labels[None, :]
    strength = np.nansum(np.where(same, np.asarray(similarity, dtype=np.float64), 0.0), axis=1)
    return np.lexsort((-strength, key))


def block_mean(matrix: np.ndarray, max_size: int = MAX_PIXELS) -> tuple[np.ndarray, int]:
    """A square matrix averaged (NaN ignored) over b x b blocks so that it is at most max_size on a
    side, and b."""
    m = np.asarray(matrix, dtype=np.float64)
    b = -(-m.shape[0] // max_size) if m.shape[0] else 1
    if b <= 1:
        return m, 1
    n = -(-m.shape[0] // b) * b
    padded = np.full((n, n), np.nan)
    padded[: m.shape[0], : m.shape[1]] = m
    blocks = padded.reshape(n // b, b, n // b, b)
    counts = np.isfinite(blocks).sum(axis=(1, 3))
    sums = np.nansum(blocks, axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan), b


def coactivation_figure(similarity, labels, title: str = "") -> Figure:
    """The [d, d] unit similarity with units ordered by module (excluded units, label -1, last),
    the diagonal blanked, module boundaries in white and each module named on the axes: a modular
    layer shows bright blocks on the diagonal. Matrices over 256 units are block-averaged."""
    sim = np.asarray(similarity, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    fig = _figure((4.3, 3.8), left=0.55, right=0.9, bottom=0.65, top=0.3)  # a square matrix area
    ax = fig.add_subplot()
    _title(ax, title or "co-activation similarity by module")
    d = sim.shape[0] if sim.ndim == 2 else 0
    if d == 0 or sim.shape != (d, d) or labels.size != d:
        _no_data(ax, "no units" if d == 0 else f"similarity {sim.shape} vs {labels.size} labels")
        return fig
    order = module_order(labels, sim)
    m = sim[np.ix_(order, order)]
    np.fill_diagonal(m, np.nan)  # self-similarity carries no information
    small, b = block_mean(m)
    finite = small[np.isfinite(small)]
    lo = min(0.0, float(np.quantile(finite, 0.01))) if finite.size else 0.0
    hi = float(np.quantile(finite, 0.99)) if finite.size else 1.0  # a few strong pairs must not wash it out
    hi = hi if hi > lo else lo + 1.0
    extent = (-0.5, d - 0.5, d - 0.5, -0.5)
    image = ax.imshow(small, cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest", extent=extent)
    sorted_labels = labels[order]
    edges = np.concatenate([[0], np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1, [d]])
    inner = edges[1:-1] - 0.5
    if inner.size:  # one collection each way: an axhline a boundary costs 3 ms a module
        ax.hlines(inner, -0.5, d - 0.5, color="white", linewidth=0.8)
        ax.vlines(inner, -0.5, d - 0.5, color="white", linewidth=0.8)
    names = [("excl." if sorted_labels[s] < 0 else f"m{sorted_labels[s]}") for s in edges[:-1]]
    centres = (edges[:-1] + edges[1:]) / 2 - 0.5
    if len(names) <= 16:
        ax.set_xticks(centres, names, fontsize=SMALL, rotation=90)
        ax.set_yticks(centres, names, fontsize=SMALL)
    else:
        ax.tick_params(labelsize=SMALL)
    ax.tick_params(length=0)
    ax.set_xlabel(f"{d} units by module" + (f" ({b}x{b} block means)" if b > 1 else ""), fontsize=SMALL)
    _colorbar(fig, image, ax, "similarity")
    return fig


# ---- ablation ----------------------------------------------------------------------------------


def ablation_figure(damage, tasks: Sequence[str], title: str = "", null_mean=None) -> Figure:
    """Loss increase per task (x, `tasks`) when each module (rows m0, m1, ...) is ablated: a
    diverging heatmap centred at 0 (damage is unclipped, so red is harm, blue is help), each
    cell written out when there are few enough. `null_mean`, the mean damage of equal-size random
    unit sets ([tasks], or [modules, tasks] averaged over modules), is a last row "random"."""
    dmg = np.asarray(damage, dtype=np.float64)
    tasks = [str(t) for t in tasks]
    dmg = dmg.reshape(-1, len(tasks)) if len(tasks) else np.zeros((0, 0))
    rows = [f"m{i}" for i in range(dmg.shape[0])]
    if null_mean is not None and len(tasks):
        null = np.asarray(null_mean, dtype=np.float64)
        null = null.reshape(-1, len(tasks)).mean(axis=0) if null.size else np.full(len(tasks), np.nan)
        dmg = np.vstack([dmg, null[None, :]])
        rows.append("random")
    width = min(9.0, max(SIZE[0], 1.6 + 0.45 * len(tasks)))
    longest = max([len(_short(t)) for t in tasks] + [1])
    bottom = 0.45 + 0.045 * longest  # 7-point labels turned 45 degrees
    height = min(6.0, max(SIZE[1], bottom + 0.6 + 0.25 * len(rows)))
    fig = _figure((width, height), left=0.9, right=1.1, bottom=bottom)
    ax = fig.add_subplot()
    _title(ax, title or "loss increase when a module is ablated")
    if dmg.size == 0:
        _no_data(ax)
        return fig
    finite = dmg[np.isfinite(dmg)]
    half = float(np.abs(finite).max()) if finite.size else 1.0
    half = half if half > 0 else 1.0
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.8")
    image = ax.imshow(
        np.ma.masked_invalid(dmg), cmap=cmap, norm=CenteredNorm(0.0, half), aspect="auto", interpolation="nearest"
    )
    ax.set_xticks(
        np.arange(len(tasks)), [_short(t) for t in tasks], rotation=45, ha="right", rotation_mode="anchor",
        fontsize=SMALL,
    )
    ax.set_yticks(np.arange(len(rows)), rows, fontsize=SMALL)
    ax.tick_params(length=0)
    ax.set_xlabel("task", fontsize=MEDIUM)
    ax.set_ylabel("ablated module", fontsize=MEDIUM)
    if rows[-1] == "random" and len(rows) > 1:
        ax.axhline(len(rows) - 1.5, color="black", linewidth=1.0)
    if dmg.size <= MAX_ANNOTATED:
        for (r, c), v in np.ndenumerate(dmg):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=SMALL - 1,
                        color="white" if abs(v) > 0.6 * half else "black")
    _colorbar(fig, image, ax, "loss increase (nats)")
    return fig
