"""Objects: how many there are (CLEVR-Count) and where one is (a 3x3 grid of positions)."""
from __future__ import annotations

import numpy as np

from .drawing import (FLOAT, circle_distance, contrasting_colors, coverage, filled, jittered, paint, per_image,
                      polygon_distance, random_colors, smooth_noise, uniform, vertical_gradient, with_noise)


COUNT_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight")
POSITION_NAMES = ("top left", "top center", "top right", "middle left", "center", "middle right",
                  "bottom left", "bottom center", "bottom right")


def _object_coverage(kind, cx, cy, r) -> np.ndarray:
    """kind per image: 0 circle, 1 square, 2 triangle, 3 diamond."""
    kind = np.asarray(kind)
    d = np.where(per_image(kind == 0), circle_distance(cx, cy, r), polygon_distance(cx, cy, r * 0.85, 4))
    tri = kind == 2
    if tri.any():
        d = np.where(per_image(tri), polygon_distance(cx, cy + r * 0.2, r * 0.6, 3, 90), d)
    dia = kind == 3
    if dia.any():
        d = np.where(per_image(dia), polygon_distance(cx, cy, r * 0.8, 4, 45), d)
    return coverage(d)


def _plain_background(rng, n, shifted):
    if shifted:
        return filled(n, jittered(rng, [0.95, 0.95, 0.95], n, 0.03))
    c1 = random_colors(rng, n, (0.0, 0.6), (0.05, 0.95))
    c2 = np.clip(c1 + rng.uniform(-0.15, 0.15, (n, 3)).astype(FLOAT), 0, 1)
    img = vertical_gradient(c1, c2)
    img += (smooth_noise(rng, n, 3, 1) - 0.5) * FLOAT(0.15)
    return img


def render_counting(rng, labels, shifted):
    n = len(labels)
    k = labels + 1
    img = _plain_background(rng, n, shifted)
    bg = img.mean(axis=(1, 2))
    cells = np.argsort(rng.random((n, 16)), axis=1)  # 4x4 grid of 6 px cells, first k are used
    kind0 = rng.integers(0, 2, n)
    col0 = contrasting_colors(rng, bg, 0.4, sat=(0.5, 1.0))
    for j in range(8):
        on = j < k
        cx = (cells[:, j] % 4) * 6 + 3 + uniform(rng, -0.7, 0.7, n)
        cy = (cells[:, j] // 4) * 6 + 3 + uniform(rng, -0.7, 0.7, n)
        if shifted:
            a = coverage(circle_distance(cx, cy, np.full(n, 2.3, FLOAT)))
            col = np.broadcast_to(FLOAT([0.1, 0.1, 0.7]), (n, 3))
        else:
            r = uniform(rng, 1.7, 2.3, n)
            same = rng.random(n) < 0.5  # half the images: all objects alike, else mixed shapes/colours
            a = _object_coverage(np.where(same, kind0, rng.integers(0, 2, n)), cx, cy, r)
            col = np.where(same[:, None], col0, contrasting_colors(rng, bg, 0.4, sat=(0.5, 1.0)))
        paint(img, a * per_image(on), col)
    return with_noise(rng, img, 0.01 if shifted else uniform(rng, 0.01, 0.04, n))


def render_positions(rng, labels, shifted):
    n = len(labels)
    img = _plain_background(rng, n, shifted)
    bg = img.mean(axis=(1, 2))
    jit = 0.5 if shifted else 1.6
    cx = (labels % 3) * 8 + 4 + uniform(rng, -jit, jit, n)
    cy = (labels // 3) * 8 + 4 + uniform(rng, -jit, jit, n)
    if shifted:
        a = coverage(circle_distance(cx, cy, np.full(n, 2.5, FLOAT)))
        col = np.broadcast_to(FLOAT([0.8, 0.1, 0.1]), (n, 3))
    else:
        r = uniform(rng, 2.0, 3.3, n)
        a = _object_coverage(rng.integers(0, 4, n), cx, cy, r)
        col = contrasting_colors(rng, bg, 0.4, sat=(0.4, 1.0))
    paint(img, a, col)
    return with_noise(rng, img, 0.01 if shifted else uniform(rng, 0.01, 0.04, n))
