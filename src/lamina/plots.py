"""Line plots as PNG with Pillow alone (no matplotlib): axes, round-number ticks, labels, a legend
outside the plot area, one colour per group, a shaded band for a group's spread.

Drawn at twice the size and downsampled, which anti-aliases lines and text. Used by
`lamina compare`; `line_plot` is the one entry point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Tableau 10: distinct, colour-blind-friendlier than most, and familiar from matplotlib.
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
]
INK, GRID, MUTED = (40, 40, 40), (232, 232, 232), (120, 120, 120)
DASHES = [None, (7, 4), (2, 3), (9, 3, 2, 3)]  # line styles in the order `styles` names them
SCALE = 2  # supersampling factor
BAND_ALPHA = 56
TOKEN_SUFFIXES = {3: "k", 6: "M", 9: "B", 12: "T", 15: "Q"}


def color(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


@dataclass
class Series:
    """One curve: `group` names it in the legend (one colour per group); `lo`/`hi` shade a band;
    `style` (one of line_plot's `styles`) picks the dash pattern."""

    group: str
    color: tuple[int, int, int]
    x: np.ndarray
    y: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None
    style: str | None = None


# ---- ticks -------------------------------------------------------------------------------------


def nice_step(span: float, target: int = 6) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) giving about `target` ticks."""
    raw = span / max(target, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * power * (1 + 1e-9):
            return mult * power
    return 10 * power


def nice_ticks(lo: float, hi: float, target: int = 6) -> tuple[float, float, list[float]]:
    """Axis limits widened to round numbers, and the ticks between them."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1e-300):
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo, target)
    start, stop = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    ticks = [round(k * step, 12) for k in range(start, stop + 1)]
    return ticks[0], ticks[-1], ticks


def decimals_for(step: float) -> int:
    for d in range(0, 12):
        if abs(round(step, d) - step) <= 1e-9 * abs(step):
            return d
    return 12


def tick_labels(ticks: list[float], kind: str = "auto") -> list[str]:
    """Labels for `ticks`: kind "tokens" gives 250k, 1.5M, 2B; "auto" plain numbers, or a shared
    power of ten written on every tick (0.5e9, 1.0e9) when they are very large or very small."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else (abs(ticks[0]) or 1.0)
    big = max(abs(t) for t in ticks)
    if kind == "tokens" and big >= 1e3:
        exp = min(3 * int(math.floor(math.log10(big) / 3)), 15)
        scale, suffix = 10.0**exp, TOKEN_SUFFIXES[exp]
        d = decimals_for(step / scale)
        return [("0" if t == 0 else f"{t / scale:.{d}f}{suffix}") for t in ticks]
    if big >= 1e5 or (0 < big < 1e-3):
        exp = int(math.floor(math.log10(big)))
        scale = 10.0**exp
        d = decimals_for(step / scale)
        return [("0" if t == 0 else f"{t / scale:.{d}f}e{exp}") for t in ticks]
    d = decimals_for(step)
    return [f"{t + 0.0:.{d}f}" for t in ticks]  # (+ 0.0 turns -0.0 into 0.0)


# ---- drawing -----------------------------------------------------------------------------------


def font(size: float) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size * SCALE)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def text_size(draw: ImageDraw.ImageDraw, text: str, fnt) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=fnt)
    return right - left, bottom - top


def polyline(draw: ImageDraw.ImageDraw, pts: list[tuple[float, float]], fill, width: int, dash=None) -> None:
    if len(pts) < 2:
        return
    if dash is None:
        draw.line(pts, fill=fill, width=width, joint="curve")
        return
    pattern = [d * SCALE * 1.6 for d in dash]
    k, left, on = 0, pattern[0], True
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        seg = math.hypot(x1 - x0, y1 - y0)
        pos = 0.0
        while pos < seg - 1e-9:
            run = min(left, seg - pos)
            if on:
                a, b = pos / seg, (pos + run) / seg
                draw.line([(x0 + a * (x1 - x0), y0 + a * (y1 - y0)), (x0 + b * (x1 - x0), y0 + b * (y1 - y0))],
                          fill=fill, width=width)
            pos += run
            left -= run
            if left <= 1e-9:
                k = (k + 1) % len(pattern)
                left, on = pattern[k], not on


def line_plot(
    path: str | Path,
    series: list[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xkind: str = "auto",
    styles: list[str] | tuple[str, ...] = (),
    vline: float | None = None,
    vline_label: str = "matched budget",
    size: tuple[int, int] = (960, 600),
) -> None:
    """Write a PNG of `series` (each a line; with `lo`/`hi` a shaded band) to `path`."""
    S = SCALE
    W, H = size[0] * S, size[1] * S
    image = Image.new("RGBA", (W, H), (255, 255, 255, 255))
    draw = ImageDraw.Draw(image)
    f_title, f_label, f_tick, f_legend = font(17), font(14), font(12), font(13)

    # Data limits (bands included) rounded out to tick values.
    xs = [v for s in series for v in np.asarray(s.x, float)]
    ys = [v for s in series for arr in (s.y, s.lo, s.hi) if arr is not None for v in np.asarray(arr, float)]
    xs = [v for v in xs if math.isfinite(v)] + ([vline] if vline is not None else [])
    ys = [v for v in ys if math.isfinite(v)]
    x0, x1, xticks = nice_ticks(min(xs, default=0.0), max(xs, default=1.0), 6)
    y0, y1, yticks = nice_ticks(min(ys, default=0.0), max(ys, default=1.0), 6)
    xlabels, ylabels = tick_labels(xticks, xkind), tick_labels(yticks)

    # Legend entries: groups (one colour each), line styles, band, budget line.
    groups: dict[str, tuple[int, int, int]] = {}
    for s in series:
        groups.setdefault(s.group, s.color)
    has_band = any(s.lo is not None for s in series)
    used_styles = [st for st in styles if any(s.style == st for s in series)]
    entries: list[tuple[str, str, tuple, object]] = [("line", shorten(g), c, None) for g, c in groups.items()]
    if len(used_styles) > 1 or (used_styles and used_styles[0] != styles[0]):
        entries.append(("gap", "", MUTED, None))
        entries += [("line", shorten(st), MUTED, DASHES[styles.index(st) % len(DASHES)]) for st in used_styles]
    if has_band or vline is not None:
        entries.append(("gap", "", MUTED, None))
    if has_band:
        entries.append(("band", "±1 std over seeds", MUTED, None))
    if vline is not None:
        entries.append(("line", vline_label, MUTED, (2, 3)))
    swatch = 30 * S
    legend_w = max((text_size(draw, e[1], f_legend)[0] for e in entries), default=0) + swatch + 14 * S
    row_h = int(text_size(draw, "Hg", f_legend)[1] * 1.9)

    # Plot area.
    tick_h = text_size(draw, "0123456789", f_tick)[1]
    ytick_w = max(text_size(draw, lab, f_tick)[0] for lab in ylabels)
    label_h = text_size(draw, "Hg", f_label)[1]
    title_h = text_size(draw, "Hg", f_title)[1]
    left = 18 * S + label_h + 12 * S + ytick_w + 8 * S
    right = W - (legend_w + 34 * S)
    top = 20 * S + title_h + 16 * S
    bottom = H - (16 * S + label_h + 14 * S + tick_h + 10 * S)

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    for t in xticks:
        draw.line([(px(t), top), (px(t), bottom)], fill=GRID, width=S)
    for t in yticks:
        draw.line([(left, py(t)), (right, py(t))], fill=GRID, width=S)

    # Bands first (translucent, under every line), then the budget line, then lines and markers.
    for s in series:
        if s.lo is None or s.hi is None or len(s.x) < 2:
            continue
        ox, oy = int(left), int(top)  # an overlay the size of the plot area, not the image
        overlay = Image.new("RGBA", (int(right) - ox + 1, int(bottom) - oy + 1), (0, 0, 0, 0))
        upper = [(px(x) - ox, py(y) - oy) for x, y in zip(s.x, s.hi)]
        lower = [(px(x) - ox, py(y) - oy) for x, y in zip(s.x, s.lo)]
        ImageDraw.Draw(overlay).polygon(upper + lower[::-1], fill=(*s.color, BAND_ALPHA))
        image.alpha_composite(overlay, (ox, oy))
    draw = ImageDraw.Draw(image)
    if vline is not None:
        polyline(draw, [(px(vline), top), (px(vline), bottom)], MUTED, int(1.5 * S), (2, 3))
    for s in series:
        dash = DASHES[styles.index(s.style) % len(DASHES)] if s.style in styles else None
        pts = [(px(x), py(y)) for x, y in zip(s.x, s.y) if math.isfinite(x) and math.isfinite(y)]
        polyline(draw, pts, s.color, int(2.5 * S), dash)
        if len(pts) <= 60:
            r = 3.2 * S
            for x, y in pts:
                hollow = dash is not None
                draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255) if hollow else s.color,
                             outline=s.color, width=int(1.5 * S))

    # Frame, ticks, tick labels, axis labels, title.
    draw.rectangle([left, top, right, bottom], outline=INK, width=S)
    for t, lab in zip(xticks, xlabels):
        draw.line([(px(t), bottom), (px(t), bottom + 5 * S)], fill=INK, width=S)
        draw.text((px(t), bottom + 8 * S), lab, fill=INK, font=f_tick, anchor="mt")
    for t, lab in zip(yticks, ylabels):
        draw.line([(left - 5 * S, py(t)), (left, py(t))], fill=INK, width=S)
        draw.text((left - 8 * S, py(t)), lab, fill=INK, font=f_tick, anchor="rm")
    draw.text(((left + right) / 2, H - 16 * S), xlabel, fill=INK, font=f_label, anchor="md")
    lw, lh = text_size(draw, ylabel, f_label)
    label_img = Image.new("RGBA", (lw + 8 * S, lh + 8 * S), (255, 255, 255, 0))
    ImageDraw.Draw(label_img).text((4 * S, 4 * S), ylabel, fill=INK, font=f_label, anchor="lt")
    label_img = label_img.rotate(90, expand=True)
    image.alpha_composite(label_img, (int(14 * S), int((top + bottom) / 2 - label_img.height / 2)))
    draw = ImageDraw.Draw(image)
    draw.text(((left + right) / 2, 18 * S), title, fill=INK, font=f_title, anchor="mt")

    # Legend, right of the plot area.
    lx, ly = right + 20 * S, top + 4 * S
    for kind, label, col, dash in entries:
        if kind == "gap":
            ly += row_h // 2
            continue
        mid = ly + row_h / 2
        if kind == "band":
            overlay = Image.new("RGBA", (swatch, 12 * S), (*col, 90))
            image.alpha_composite(overlay, (int(lx), int(mid - 6 * S)))
            draw = ImageDraw.Draw(image)
        else:
            polyline(draw, [(lx, mid), (lx + swatch, mid)], col, int(2.5 * S), dash)
        draw.text((lx + swatch + 8 * S, mid), label, fill=INK, font=f_legend, anchor="lm")
        ly += row_h

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").resize(size, Image.LANCZOS).save(path)


def shorten(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
