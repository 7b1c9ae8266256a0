"""Textures (DTD): periodic or random patterns that fill the image."""
from __future__ import annotations

import numpy as np

from .drawing import (FLOAT, IMAGE_SIZE, PIXEL_X, PIXEL_Y, TAU, contrasting_pair, coverage, filled, paint, per_image,
                      rotated_coordinates, smooth_noise, uniform, with_noise)


TEXTURE_NAMES = ("striped", "chequered", "dotted", "zigzagged", "wavy", "grid", "blotchy", "spiralled", "speckled")


def _texture_pattern(rng, c, m, shifted):
    """Coverage pattern [m, 24, 24] in [0, 1] of texture class c."""
    k = 1.3 if shifted else 1.0  # shifted: coarser patterns
    th = uniform(rng, 0, np.pi, m)
    u, v = rotated_coordinates(th, 12 + uniform(rng, -6, 6, m), 12 + uniform(rng, -6, 6, m))
    phase = per_image(uniform(rng, 0, 2 * np.pi, m))
    sq = lambda x, sharp=3.0: np.clip(x * sharp + 0.5, 0, 1)
    if c == 0:  # striped: straight parallel bands
        lam = per_image(uniform(rng, 4, 8, m) * k)
        return sq(np.sin(TAU * u / lam + phase))
    if c == 1:  # chequered
        lam = per_image(uniform(rng, 6, 10, m) * k)
        s1, s2 = sq(np.sin(TAU * u / lam + phase)), sq(np.sin(TAU * v / lam + phase * 0.7))
        return s1 * (1 - s2) + s2 * (1 - s1)
    if c == 2:  # dotted: lattice of round dots
        lam = uniform(rng, 5, 8, m) * k
        r = lam * uniform(rng, 0.18, 0.27, m)
        du = ((u / per_image(lam) + phase) % 1 - 0.5) * per_image(lam)
        dv = ((v / per_image(lam) + phase * 0.37) % 1 - 0.5) * per_image(lam)
        return coverage(np.sqrt(du * du + dv * dv) - per_image(r))
    if c == 3:  # zigzagged: bands whose centre line is a sharp triangle wave
        lam = per_image(uniform(rng, 5, 8, m) * k)
        per = per_image(uniform(rng, 5, 7, m) * k)
        amp = per_image(uniform(rng, 1.6, 2.6, m) * k)
        tri = np.abs(((v / per + phase) % 1) * 2 - 1) * 2 - 1
        return sq(np.sin(TAU * (u + amp * tri) / lam))
    if c == 4:  # wavy: bands whose centre line is a long sine wave
        lam = per_image(uniform(rng, 5, 8, m) * k)
        per = per_image(uniform(rng, 12, 18, m) * k)
        amp = per_image(uniform(rng, 1.6, 2.8, m) * k)
        return sq(np.sin(TAU * (u + amp * np.sin(TAU * v / per + phase)) / lam))
    if c == 5:  # grid: thin lines in two perpendicular directions
        lam = per_image(uniform(rng, 5, 8, m) * k)
        w = per_image(uniform(rng, 0.45, 0.8, m))
        du = np.abs(((u / lam + phase) % 1 - 0.5) * lam)
        dv = np.abs(((v / lam + phase * 0.61) % 1 - 0.5) * lam)
        return coverage(np.minimum(du, dv) - w)
    if c == 6:  # blotchy: thresholded smooth noise
        cells = 5 if not shifted else 3
        g = smooth_noise(rng, m, cells)[..., 0]
        return sq(g - per_image(uniform(rng, 0.42, 0.58, m)), 6.0)
    if c == 7:  # spiralled: an Archimedean spiral around a point near the centre
        lam = per_image(uniform(rng, 4.5, 7, m) * k)
        cx, cy = 12 + uniform(rng, -3, 3, m), 12 + uniform(rng, -3, 3, m)
        dx, dy = PIXEL_X - per_image(cx), PIXEL_Y - per_image(cy)
        r = np.sqrt(dx * dx + dy * dy)
        ang = np.arctan2(dy, dx)
        sign = per_image(np.where(rng.random(m) < 0.5, -1, 1))
        return sq(np.sin(sign * ang - TAU * r / lam + phase))
    # speckled: random isolated specks
    dens = per_image(uniform(rng, 0.12, 0.3, m))
    return (rng.random((m, IMAGE_SIZE, IMAGE_SIZE), dtype=FLOAT) < dens).astype(FLOAT)


def render_textures(rng, labels, shifted):
    n = len(labels)
    if shifted:  # greyscale palette
        g1, g2 = contrasting_pair(rng, n, 0.4, sat=(0.0, 0.0))
    else:
        g1, g2 = contrasting_pair(rng, n, 0.3, sat=(0.2, 1.0))
    pat = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), FLOAT)
    for c in range(len(TEXTURE_NAMES)):
        m = labels == c
        if m.any():
            pat[m] = _texture_pattern(rng, c, int(m.sum()), shifted)
    img = filled(n, g2)
    if not shifted:  # mild lighting variation
        img *= (0.8 + 0.4 * smooth_noise(rng, n, 2))
    paint(img, pat, g1)
    return with_noise(rng, img, 0.01 if shifted else uniform(rng, 0.01, 0.04, n))
