"""Scenes (SUN397): a landscape or place seen from the ground, one drawing function per class."""
from __future__ import annotations

import numpy as np

from .drawing import (FLOAT, IMAGE_SIZE, PIXEL_X, PIXEL_Y, TAU, WHITE, box_distance, circle_distance, coverage,
                      jittered, luminance, paint, per_image, photometric_jitter, pick_from_palette, polygon_distance,
                      random_colors, render_by_class, smooth_noise, uniform, vertical_gradient, with_noise)


SCENE_NAMES = ("beach", "forest", "desert", "snowfield", "ocean", "city skyline", "night sky", "meadow",
               "mountains")

# shared palettes: classes overlap in colour so that structure, not the colour average, decides
_SKY_TOP = np.array([[0.35, 0.6, 0.92], [0.6, 0.63, 0.68], [0.38, 0.3, 0.55], [0.68, 0.76, 0.85]], FLOAT)
_SKY_BOTTOM = np.array([[0.72, 0.85, 0.98], [0.8, 0.8, 0.82], [0.98, 0.62, 0.38], [0.93, 0.9, 0.84]], FLOAT)
_SAND = [[0.93, 0.82, 0.58], [0.85, 0.65, 0.4], [0.93, 0.9, 0.82], [0.7, 0.6, 0.45], [0.8, 0.45, 0.3]]
_WATER = [[0.1, 0.4, 0.72], [0.1, 0.5, 0.55], [0.3, 0.42, 0.52], [0.05, 0.22, 0.45]]
_GRASS = [[0.45, 0.75, 0.25], [0.6, 0.7, 0.3], [0.78, 0.72, 0.38], [0.25, 0.5, 0.2]]
_FOLIAGE = [[0.1, 0.32, 0.12], [0.22, 0.45, 0.15], [0.72, 0.42, 0.1], [0.55, 0.2, 0.1], [0.15, 0.3, 0.3]]
_ROCK = [[0.45, 0.42, 0.5], [0.5, 0.45, 0.4], [0.35, 0.38, 0.45], [0.58, 0.56, 0.55], [0.6, 0.4, 0.3]]
_BUILDING = [[0.3, 0.3, 0.33], [0.45, 0.42, 0.4], [0.25, 0.28, 0.38], [0.6, 0.58, 0.55], [0.5, 0.35, 0.3]]


def _below_line(line) -> np.ndarray:
    """Coverage of the region below a (possibly per-column) horizon line."""
    return coverage(line - PIXEL_Y)


def _wave_line(rng, m, y, amp, per) -> np.ndarray:
    phase = uniform(rng, 0, 2 * np.pi, m)
    return per_image(y) + per_image(amp) * np.sin(TAU * PIXEL_X / per_image(per) + per_image(phase))


def _sky_gradient(rng, m, kinds=(0, 1, 2, 3)):
    """Sky gradient of a random kind per image (0 day, 1 overcast, 2 dusk, 3 hazy); returns (img, kind)."""
    k = np.asarray(kinds)[rng.integers(0, len(kinds), m)]
    top = np.clip(_SKY_TOP[k] + rng.uniform(-0.08, 0.08, (m, 3)).astype(FLOAT), 0, 1)
    bot = np.clip(_SKY_BOTTOM[k] + rng.uniform(-0.06, 0.06, (m, 3)).astype(FLOAT), 0, 1)
    return vertical_gradient(top, bot), k


def _sun(rng, img, m, p, kind, center_y=(3, 7)):
    on = (rng.random(m) < p) & (kind != 1)
    col = np.where((kind == 2)[:, None], jittered(rng, [1.0, 0.55, 0.3], m, 0.05),
                   jittered(rng, [1.0, 0.95, 0.65], m, 0.04))
    a = coverage(circle_distance(uniform(rng, 3, 21, m), uniform(rng, *center_y, m), uniform(rng, 1.5, 2.5, m)))
    paint(img, a * per_image(on), col)


def _beach(rng, m, sh):
    img, kind = _sky_gradient(rng, m)
    _sun(rng, img, m, 0.5, kind)
    yh = uniform(rng, 5, 10, m)
    water = pick_from_palette(rng, _WATER, m, 0.06)
    paint(img, _below_line(per_image(yh)), water)
    shore = _wave_line(rng, m, yh + uniform(rng, 4, 8, m), uniform(rng, 0.6, 1.6, m), uniform(rng, 9, 18, m))
    paint(img, coverage(np.abs(PIXEL_Y - shore + 0.7) - 0.7) * 0.85, jittered(rng, [0.95, 0.95, 0.95], m, 0.05))  # surf
    paint(img, _below_line(shore), pick_from_palette(rng, _SAND, m, 0.05))
    for _ in range(2):  # parasols / towels
        on = rng.random(m) < 0.4
        a = coverage(box_distance(uniform(rng, 2, 22, m), uniform(rng, 19, 22, m), uniform(rng, 0.8, 1.6, m), 0.6))
        paint(img, a * per_image(on), random_colors(rng, m, (0.7, 1), (0.7, 1)))
    return img


def _forest(rng, m, sh):
    sky, _ = _sky_gradient(rng, m)
    canopy = np.clip((PIXEL_Y - 6) / 8, 0, 1)  # the trees' share of each row, 0 in the sky
    img = sky * (1 - canopy)[None, :, :, None]
    img += (pick_from_palette(rng, _FOLIAGE, m, 0.05) * 0.5)[:, None, None, :] * canopy[None, :, :, None]
    leaves = pick_from_palette(rng, _FOLIAGE, m, 0.05)
    ys = np.sort(rng.uniform(6, 26, (m, 14)).astype(FLOAT), axis=1)
    for j in range(14):  # conifers, back to front
        x = uniform(rng, -1, 25, m)
        a = uniform(rng, 1.8, 3.2, m)
        base = ys[:, j]
        paint(img, coverage(box_distance(x, base + 0.8, 0.5, 1.2)), jittered(rng, [0.3, 0.2, 0.1], m, 0.05))
        crown = coverage(polygon_distance(x, base - a, a, 3, 90))
        col = np.clip(leaves + rng.uniform(-0.08, 0.08, (m, 3)).astype(FLOAT), 0, 1) * (0.65 + 0.35 * j / 13)
        paint(img, crown, col)
    return img


def _desert(rng, m, sh):
    img, kind = _sky_gradient(rng, m, (0, 2, 3))
    _sun(rng, img, m, 0.6, kind)
    sand = pick_from_palette(rng, _SAND, m, 0.05)
    y1 = uniform(rng, 7, 12, m)
    far = _wave_line(rng, m, y1, uniform(rng, 1.5, 3, m), uniform(rng, 14, 24, m))
    paint(img, _below_line(far), np.clip(sand * 1.08, 0, 1))
    near = _wave_line(rng, m, y1 + uniform(rng, 4, 8, m), uniform(rng, 1.5, 3, m), uniform(rng, 12, 22, m))
    paint(img, _below_line(near), sand * 0.88)
    img *= 1 - 0.15 * np.clip((PIXEL_Y - near) / 8, 0, 1)[..., None]  # shaded dune faces
    on = rng.random(m) < 0.4  # cactus
    cx, cy = uniform(rng, 3, 21, m), uniform(rng, 16, 20, m)
    a = np.maximum(coverage(box_distance(cx, cy, 0.6, 2.5)), coverage(box_distance(cx + 1.2, cy - 0.5, 0.5, 1.1)))
    paint(img, a * per_image(on), jittered(rng, [0.2, 0.5, 0.2], m, 0.05))
    return img


def _snowfield(rng, m, sh):
    img, kind = _sky_gradient(rng, m, (0, 1, 1, 2, 3))
    line = _wave_line(rng, m, uniform(rng, 8, 14, m), uniform(rng, 0.3, 1.5, m), uniform(rng, 16, 30, m))
    tint = _SKY_BOTTOM[kind] * 0.3 + 0.7
    ground = vertical_gradient(np.clip(tint * 1.05, 0, 1), np.clip(tint * FLOAT([0.88, 0.92, 1.0]), 0, 1))
    ground -= (smooth_noise(rng, m, 3) * FLOAT(0.12)) * np.array([1.0, 0.7, 0.2], FLOAT)  # bluish shadows
    a = _below_line(line)[..., None]
    img = img * (1 - a) + ground * a
    for _ in range(4):  # distant dark pines on the horizon line
        on = rng.random(m) < 0.45
        x = uniform(rng, 1, 23, m)
        yb = line[np.arange(m), 0, np.clip(x.astype(np.int64), 0, 23)]
        ap = uniform(rng, 0.8, 1.2, m)
        tri = np.maximum(coverage(polygon_distance(x, yb - 1.0 - 2 * ap, ap, 3, 90)),
                         coverage(box_distance(x, yb - 0.5, 0.4, 0.9)))
        paint(img, tri * per_image(on), jittered(rng, [0.15, 0.22, 0.2], m, 0.05))
    flakes = (rng.random((m, IMAGE_SIZE, IMAGE_SIZE),
                         dtype=FLOAT) < per_image(uniform(rng, 0.0, 0.06, m))).astype(FLOAT) * 0.8
    paint(img, flakes, WHITE)
    return img


def _ocean(rng, m, sh):
    img, kind = _sky_gradient(rng, m)
    _sun(rng, img, m, 0.3, kind, center_y=(2, 5))
    yh = uniform(rng, 5, 11, m)
    water = pick_from_palette(rng, _WATER, m, 0.06)
    sea = vertical_gradient(water, water * 0.6)
    a = _below_line(per_image(yh))[..., None]
    img = img * (1 - a) + sea * a
    for _ in range(9):  # white wave crests, longer nearer the viewer
        y = yh + uniform(rng, 0.08, 1, m) * (24 - yh)
        hw = 0.4 + (y - yh) / 8 + uniform(rng, 0, 1, m)
        crest = coverage(box_distance(uniform(rng, 0, 24, m), y, hw, 0.35))
        paint(img, crest * per_image(uniform(rng, 0.5, 0.9, m)), jittered(rng, [0.85, 0.92, 1.0], m, 0.05))
    on = rng.random(m) < 0.35  # sailing boat on the horizon
    bx = uniform(rng, 3, 21, m)
    boat = np.maximum(coverage(box_distance(bx, yh - 0.2, 1.4, 0.5)),
                      coverage(polygon_distance(bx + 0.2, yh - 2.2, 0.6, 3, 90)))
    paint(img, boat * per_image(on), jittered(rng, [0.95, 0.95, 0.95], m, 0.05))
    return img


def _city_skyline(rng, m, sh):
    img, kind = _sky_gradient(rng, m)
    night = rng.random(m) < 0.25
    dark = vertical_gradient(jittered(rng, [0.03, 0.04, 0.12], m, 0.02), jittered(rng, [0.12, 0.12, 0.3], m, 0.05))
    img = np.where(night[:, None, None, None], dark, img)
    # building profile: up to 9 buildings across the width
    top_y = np.full((m, IMAGE_SIZE), 30, FLOAT)
    bcol = np.zeros((m, IMAGE_SIZE, 3), FLOAT)
    base = pick_from_palette(rng, _BUILDING, m, 0.05)
    x = np.full(m, -1.0, FLOAT) - uniform(rng, 0, 2, m)
    for _ in range(9):
        w = uniform(rng, 2.5, 6, m)
        h = uniform(rng, 5, 18, m)
        cols = (np.arange(IMAGE_SIZE)[None] >= x[:, None]) & (np.arange(IMAGE_SIZE)[None] < (x + w)[:, None])
        top_y = np.where(cols, 24 - h[:, None], top_y)
        shade = np.clip(base * uniform(rng, 0.6, 1.3, m)[:, None], 0, 1)
        bcol = np.where(cols[..., None], shade[:, None, :], bcol)
        x = x + w
    bcol = np.where(night[:, None, None], bcol * 0.25, bcol)
    inb = (PIXEL_Y[None] >= top_y[:, None, :]).astype(FLOAT)[..., None]
    img = img * (1 - inb) + bcol[:, None, :, :] * inb
    window_grid = (PIXEL_X.astype(np.int64) % 2 == 0) & (PIXEL_Y.astype(np.int64) % 2 == 1)
    win = window_grid[None] & (PIXEL_Y[None] > top_y[:, None, :] + 1)
    lit = win & (rng.random((m, IMAGE_SIZE, IMAGE_SIZE)) < per_image(uniform(rng, 0.25, 0.7, m)))
    paint(img, lit.astype(FLOAT) * 0.85, jittered(rng, [1.0, 0.9, 0.5], m, 0.05))
    return img


def _night_sky(rng, m, sh):
    top = pick_from_palette(rng, [[0.02, 0.03, 0.1], [0.0, 0.0, 0.02], [0.08, 0.03, 0.12]], m, 0.02)
    bot = pick_from_palette(rng, [[0.08, 0.1, 0.28], [0.05, 0.06, 0.12], [0.2, 0.12, 0.3], [0.25, 0.15, 0.15]], m, 0.04)
    img = vertical_gradient(top, bot)
    stars = (rng.random((m, IMAGE_SIZE, IMAGE_SIZE),
                        dtype=FLOAT) < per_image(uniform(rng, 0.03, 0.08, m))).astype(FLOAT)
    stars *= rng.uniform(0.5, 1.0, (m, IMAGE_SIZE, IMAGE_SIZE)).astype(FLOAT)
    paint(img, stars, jittered(rng, [0.95, 0.95, 0.85], m, 0.05))
    on = rng.random(m) < 0.7  # moon, often a crescent
    mx, my, mr = uniform(rng, 4, 20, m), uniform(rng, 3, 10, m), uniform(rng, 2, 3.5, m)
    moon = coverage(circle_distance(mx, my, mr))
    cres = rng.random(m) < 0.5
    bite = coverage(circle_distance(mx + mr * 0.6, my - mr * 0.3, mr)) * per_image(cres)
    paint(img, moon * (1 - bite) * per_image(on), jittered(rng, [0.95, 0.92, 0.7], m, 0.04))
    hills = rng.random(m) < 0.6
    line = _wave_line(rng, m, uniform(rng, 19, 22, m), uniform(rng, 0.5, 2, m), uniform(rng, 10, 24, m))
    paint(img, _below_line(line) * per_image(hills), jittered(rng, [0.02, 0.03, 0.04], m, 0.02))
    return img


def _meadow(rng, m, sh):
    img, kind = _sky_gradient(rng, m)
    _sun(rng, img, m, 0.3, kind)
    line = _wave_line(rng, m, uniform(rng, 8, 13, m), uniform(rng, 0.5, 2, m), uniform(rng, 16, 30, m))
    grass = pick_from_palette(rng, _GRASS, m, 0.05)
    ground = vertical_gradient(grass, grass * 0.75)
    a = _below_line(line)[..., None]
    img = img * (1 - a) + ground * a
    below = PIXEL_Y[None] > line + 1
    flowers = below & (rng.random((m, IMAGE_SIZE, IMAGE_SIZE)) < per_image(uniform(rng, 0.04, 0.12, m)))
    fcol = np.array([[0.95, 0.2, 0.2], [1.0, 0.9, 0.2], [1.0, 1.0, 1.0], [0.7, 0.4, 0.9]], FLOAT)
    fc = fcol[rng.integers(0, 4, (m, IMAGE_SIZE, IMAGE_SIZE))]
    f = flowers[..., None].astype(FLOAT)
    img = img * (1 - f) + fc * f
    on = rng.random(m) < 0.35  # a lone round tree
    tx, ty = uniform(rng, 3, 21, m), line[:, 0, 0] - 0.5
    paint(img, coverage(box_distance(tx, ty, 0.5, 1.5)) * per_image(on), jittered(rng, [0.35, 0.22, 0.1], m, 0.04))
    paint(img, coverage(circle_distance(tx, ty - 3, 2.2)) * per_image(on), pick_from_palette(rng, _FOLIAGE, m, 0.05))
    return img


def _mountains(rng, m, sh):
    img, kind = _sky_gradient(rng, m)
    ridge = np.full((m, 1, IMAGE_SIZE), 40, FLOAT)
    peaks = []
    for _ in range(3):
        px, py = uniform(rng, -2, 26, m), uniform(rng, 3, 11, m)
        slope = uniform(rng, 0.8, 1.6, m)
        ridge = np.minimum(ridge, (per_image(py) + per_image(slope) * np.abs(PIXEL_X[:1] - per_image(px)))[:, :1, :])
        peaks.append(py)
    ridge = np.minimum(ridge, 18)
    paint(img, _below_line(ridge), pick_from_palette(rng, _ROCK, m, 0.05))
    snowline = np.min(np.stack(peaks, 1), 1) + uniform(rng, 2.5, 4.5, m)
    snow = _below_line(ridge) * coverage(PIXEL_Y - per_image(snowline)) * per_image(rng.random(m) < 0.8)
    paint(img, snow, jittered(rng, [0.96, 0.97, 1.0], m, 0.03))
    line = _wave_line(rng, m, uniform(rng, 18, 21, m), uniform(rng, 0.3, 1.2, m), uniform(rng, 12, 24, m))
    paint(img, _below_line(line), pick_from_palette(rng, _GRASS + _FOLIAGE[:2], m, 0.05) * 0.8)
    return img


_CLASS_RENDERERS = (_beach, _forest, _desert, _snowfield, _ocean, _city_skyline,
                    _night_sky, _meadow, _mountains)


def _posterize(img: np.ndarray, levels: int = 4) -> np.ndarray:
    return np.round(np.clip(img, 0, 1) * (levels - 1)) / FLOAT(levels - 1)


def render_scenes(rng, labels, shifted):
    n = len(labels)
    img = render_by_class(rng, labels, _CLASS_RENDERERS, shifted)
    if shifted:  # flat cartoon look: saturated, posterised, noiseless
        grey = luminance(img)[..., None]
        return _posterize(grey + (img - grey) * 1.5, 4)
    img = photometric_jitter(rng, img)
    return with_noise(rng, img, uniform(rng, 0.01, 0.04, n))
