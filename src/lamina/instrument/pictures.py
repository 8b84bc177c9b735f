"""Pictures as numpy arrays (uint8 [H, W, 3]) for TensorBoard: no matplotlib.

A small viridis colormap, nearest-neighbour upscaling and block-mean downscaling, and labels drawn
with Pillow's built-in font where Pillow is importable (TensorBoard depends on it); without it
the pictures come out unlabelled rather than not at all.
"""

from __future__ import annotations

import numpy as np

# matplotlib's viridis at 0, 1/8, ..., 1 (interpolated linearly in between).
VIRIDIS = np.array(
    [
        (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
        (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37),
    ],
    dtype=np.float64,
)
NAN_COLOUR = (128, 128, 128)
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
MAX_PIXELS = 256  # matrices larger than this are block-averaged down to fit (PNG encoding is the cost)


def colorize(values: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Viridis colours of a 2-D array scaled from vmin (dark) to vmax (yellow); NaN is grey."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    lo = float(np.min(v[finite])) if vmin is None and finite.any() else (vmin or 0.0)
    hi = float(np.max(v[finite])) if vmax is None and finite.any() else (vmax if vmax is not None else 1.0)
    scale = hi - lo if hi > lo else 1.0
    t = np.clip(np.where(finite, (v - lo) / scale, 0.0), 0.0, 1.0) * (len(VIRIDIS) - 1)
    i = np.minimum(t.astype(np.int64), len(VIRIDIS) - 2)
    frac = (t - i)[..., None]
    rgb = VIRIDIS[i] * (1 - frac) + VIRIDIS[i + 1] * frac
    rgb[~finite] = NAN_COLOUR
    return np.rint(rgb).astype(np.uint8)


def upscale(image: np.ndarray, factor_h: int, factor_w: int | None = None) -> np.ndarray:
    """Nearest-neighbour: each pixel becomes a factor_h x factor_w block."""
    return np.repeat(np.repeat(image, factor_h, axis=0), factor_w or factor_h, axis=1)


def block_mean(matrix: np.ndarray, max_size: int = MAX_PIXELS) -> np.ndarray:
    """A square matrix averaged over b x b blocks so that it is at most max_size on a side."""
    m = np.asarray(matrix, dtype=np.float64)
    b = -(-m.shape[0] // max_size)
    if b <= 1:
        return m
    n = -(-m.shape[0] // b) * b
    padded = np.full((n, n), np.nan)
    padded[: m.shape[0], : m.shape[1]] = m
    with np.errstate(invalid="ignore"):
        blocks = padded.reshape(n // b, b, n // b, b)
        return np.nanmean(blocks, axis=(1, 3))


def _font():
    try:
        from PIL import ImageFont
    except ImportError:
        return None
    return ImageFont.load_default()


def _text_size(draw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def labelled_heatmap(
    values: np.ndarray,
    row_labels: list[str],
    col_labels: list[str],
    title: str = "",
    cell: tuple[int, int] = (22, 48),
    fmt: str = "{:.3f}",
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """A heatmap of `values` [rows, cols], cells `cell` = (height, width) pixels, with row and column
    labels, each value written in its cell, and the colour scale in the title."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    lo = float(finite.min()) if vmin is None and finite.size else (vmin or 0.0)
    hi = float(finite.max()) if vmax is None and finite.size else (vmax if vmax is not None else 1.0)
    grid = upscale(colorize(v, lo, hi), cell[0], cell[1])
    font = _font()
    if font is None:
        return grid
    from PIL import Image, ImageDraw

    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max([_text_size(probe, s, font)[0] for s in row_labels] + [0]) + 8
    line_h = max(_text_size(probe, "Ag", font)[1], 8) + 6
    header = line_h * (2 if title else 1)
    heading = f"{title}  [{fmt.format(lo)} .. {fmt.format(hi)}]" if title else ""
    width = max(label_w + grid.shape[1], _text_size(probe, heading, font)[0] + 8) + 4
    canvas = Image.new("RGB", (width, header + grid.shape[0] + 2), BACKGROUND)
    canvas.paste(Image.fromarray(grid), (label_w, header))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), heading, fill=INK, font=font)
    for c, label in enumerate(col_labels):
        w, _ = _text_size(draw, label, font)
        draw.text((label_w + c * cell[1] + (cell[1] - w) // 2, header - line_h + 2), label, fill=INK, font=font)
    for r, label in enumerate(row_labels):
        draw.text((2, header + r * cell[0] + (cell[0] - line_h) // 2 + 3), label, fill=INK, font=font)
        for c in range(v.shape[1]):
            if not np.isfinite(v[r, c]):
                continue
            text = fmt.format(v[r, c])
            w, h = _text_size(draw, text, font)
            dark = (v[r, c] - lo) / (hi - lo if hi > lo else 1.0) < 0.6
            x = label_w + c * cell[1] + (cell[1] - w) // 2
            y = header + r * cell[0] + (cell[0] - h) // 2 - 1
            draw.text((x, y), text, fill=(255, 255, 255) if dark else INK, font=font)
    return np.asarray(canvas)


def module_matrix(similarity: np.ndarray, labels: np.ndarray, max_size: int = MAX_PIXELS) -> np.ndarray:
    """The similarity of units ordered by module (excluded units, label -1, last) and, within a
    module, by their total similarity to it (strongest first), module boundaries drawn in white:
    a modular layer shows bright blocks on the diagonal."""
    labels = np.asarray(labels)
    sim = np.asarray(similarity, dtype=np.float64)
    same = labels[:, None] == labels[None, :]
    strength = np.where(same, sim, 0.0).sum(axis=1)
    order = np.lexsort((-strength, np.where(labels < 0, np.iinfo(np.int64).max, labels)))
    m = sim[np.ix_(order, order)]
    np.fill_diagonal(m, np.nan)  # self-similarity carries no information
    sorted_labels = labels[order]
    boundaries = np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1
    small = block_mean(m, max_size)
    scale = len(labels) / small.shape[0]
    finite = small[np.isfinite(small)]
    hi = float(np.quantile(finite, 0.99)) if finite.size else 1.0  # a few strong pairs must not wash it out
    image = colorize(np.nan_to_num(small, nan=0.0), 0.0, hi if hi > 0 else 1.0)
    factor = max(1, max_size // max(small.shape[0], 1))
    image = upscale(image, factor)
    for b in boundaries:
        p = min(int(round(b / scale * factor)), image.shape[0] - 1)
        image[p, :, :] = 255
        image[:, p, :] = 255
    return image
