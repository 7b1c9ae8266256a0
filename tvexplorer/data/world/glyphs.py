"""A 5x7 bitmap font for the digits 0-9 and the capital letters A-Z, and glyphs drawn from it at any
size, position, slant and stroke width.

Each glyph is 7 rows of 5 characters; "#" is ink, "." is background. No system fonts are used.
"""
from __future__ import annotations

import numpy as np

from .drawing import FLOAT, PIXEL_X, PIXEL_Y, per_image

WIDTH = 5
HEIGHT = 7

FONT: dict[str, tuple[str, ...]] = {
    "0": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
}

# The font as padded float bitmaps, one per character, for bilinear sampling.
_CHARS = "".join(FONT)
GLYPH_INDEX = {c: i for i, c in enumerate(_CHARS)}
_PADDING = 2
_BITMAPS = np.pad(
    np.array([[[ch == "#" for ch in row] for row in FONT[c]] for c in _CHARS], FLOAT),
    ((0, 0), (_PADDING, _PADDING), (_PADDING, _PADDING)),
)


def glyph_coverage(idx, cx, cy, height, shear=0.0, thr=0.5) -> np.ndarray:
    """Coverage [n, 24, 24] of glyphs `idx` ([n] indices into _GLYPH_CHARS) centred at (cx, cy).

    height: glyph height in pixels; shear: x offset per pixel of y (italic); thr in (0, 1): lower
    values draw thicker strokes (bilinear-interpolated bitmap, thresholded with ~1 px anti-aliasing).
    """
    idx = np.asarray(idx, np.int64)
    n = len(idx)
    scale = per_image(np.asarray(height, FLOAT) / HEIGHT)
    dy = PIXEL_Y - per_image(cy)
    gy = dy / scale + FLOAT(HEIGHT / 2 - 0.5 + _PADDING)
    gx = (PIXEL_X - per_image(cx) - per_image(shear) * dy) / scale + FLOAT(WIDTH / 2 - 0.5 + _PADDING)
    h, w = _BITMAPS.shape[1:]
    gy = np.clip(gy, 0, h - 1.001)
    gx = np.clip(gx, 0, w - 1.001)
    y0 = gy.astype(np.int64)
    x0 = gx.astype(np.int64)
    wy, wx = gy - y0, gx - x0
    gi = idx.reshape(n, 1, 1)
    g = _BITMAPS
    val = ((g[gi, y0, x0] * (1 - wx) + g[gi, y0, x0 + 1] * wx) * (1 - wy)
           + (g[gi, y0 + 1, x0] * (1 - wx) + g[gi, y0 + 1, x0 + 1] * wx) * wy)
    return np.clip((val - per_image(thr)) * scale + 0.5, 0, 1)


def glyph_indices(chars: str, which) -> np.ndarray:
    lut = np.array([GLYPH_INDEX[c] for c in chars], np.int64)
    return lut[np.asarray(which, np.int64)]
