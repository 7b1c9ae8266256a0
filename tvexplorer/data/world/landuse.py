"""Land use (EuroSAT, RESISC45): an overhead view of land, one drawing function per class."""
from __future__ import annotations

import numpy as np

from .drawing import (BLACK, FLOAT, IMAGE_SIZE, PIXEL_X, PIXEL_Y, TAU, WHITE, box_distance, circle_distance, coverage,
                      filled, jittered, luminance, paint, per_image, photometric_jitter, pick_from_palette,
                      random_colors, render_by_class, rotated_coordinates, smooth_noise, uniform, with_noise)


LANDUSE_NAMES = ("river", "highway", "farmland", "residential area", "forest", "lake", "industrial area",
                 "pasture", "parking lot")
_LAND = [[0.33, 0.45, 0.22], [0.25, 0.38, 0.18], [0.45, 0.5, 0.28], [0.5, 0.45, 0.3], [0.38, 0.42, 0.35]]
_CANOPY = [[0.15, 0.35, 0.13], [0.1, 0.25, 0.1], [0.25, 0.4, 0.15], [0.45, 0.35, 0.12], [0.15, 0.3, 0.25]]
_ASPHALT = [[0.42, 0.42, 0.44], [0.3, 0.3, 0.32], [0.55, 0.54, 0.52], [0.45, 0.4, 0.36]]
_ROOFS = [[0.85, 0.85, 0.85], [0.7, 0.72, 0.75], [0.55, 0.65, 0.75], [0.9, 0.9, 0.88]]
_LAKE = [[0.1, 0.22, 0.4], [0.08, 0.3, 0.35], [0.2, 0.28, 0.35], [0.05, 0.12, 0.25]]


def _land_background(rng, m, palette=_LAND, amt=0.05, var=0.12):
    img = filled(m, pick_from_palette(rng, palette, m, amt))
    img += (smooth_noise(rng, m, 4, 3) - 0.5) * FLOAT(var)
    return img


def _river(rng, m, sh):
    img = _land_background(rng, m)
    u, v = rotated_coordinates(uniform(rng, 0, np.pi, m), 12 + uniform(rng, -3, 3, m), 12 + uniform(rng, -3, 3, m))
    amplitude, period, phase = uniform(rng, 1.5, 4, m), uniform(rng, 14, 24, m), uniform(rng, 0, 6.3, m)
    vv = v - per_image(amplitude) * np.sin(TAU * u / per_image(period) + per_image(phase))
    w = per_image(uniform(rng, 1.3, 2.6, m))
    paint(img, coverage(np.abs(vv) - w - 0.8) * 0.6, jittered(rng, [0.45, 0.42, 0.3], m, 0.05))  # banks
    paint(img, coverage(np.abs(vv) - w), pick_from_palette(rng, _LAKE, m, 0.04))
    return img


def _highway(rng, m, sh):
    img = _land_background(rng, m)
    u, v = rotated_coordinates(uniform(rng, 0, np.pi, m), 12 + uniform(rng, -4, 4, m), 12 + uniform(rng, -4, 4, m))
    w = per_image(uniform(rng, 2.2, 3.4, m))
    paint(img, coverage(np.abs(v) - w - 0.7), jittered(rng, [0.6, 0.58, 0.52], m, 0.05))  # verge
    paint(img, coverage(np.abs(v) - w), pick_from_palette(rng, _ASPHALT, m, 0.04))
    dash = coverage(np.abs(v) - 0.35) * (((u + per_image(uniform(rng, 0, 4, m))) % 4) < 2)
    paint(img, dash * 0.9, jittered(rng, [0.95, 0.95, 0.85], m, 0.05))
    cars = (coverage(np.abs(np.abs(v) - w * 0.5) - 0.45)
            * (rng.random((m, IMAGE_SIZE, IMAGE_SIZE)) < 0.08))
    paint(img, cars, random_colors(rng, m, (0.5, 1), (0.6, 1)))
    return img


def _farmland(rng, m, sh):
    img = np.empty((m, IMAGE_SIZE, IMAGE_SIZE, 3), FLOAT)
    # split the image into up to four fields by two lines
    u1, _ = rotated_coordinates(uniform(rng, 0, np.pi, m), 12 + uniform(rng, -4, 4, m), 12 + uniform(rng, -4, 4, m))
    u2, _ = rotated_coordinates(uniform(rng, 0, np.pi, m), 12 + uniform(rng, -4, 4, m), 12 + uniform(rng, -4, 4, m))
    region = (u1 > 0).astype(np.int64) * 2 + (u2 > 0)
    crops = [[0.45, 0.6, 0.2], [0.75, 0.7, 0.35], [0.5, 0.38, 0.22], [0.3, 0.5, 0.18], [0.85, 0.8, 0.5]]
    for r in range(4):
        uu, _ = rotated_coordinates(uniform(rng, 0, np.pi, m))
        lam = per_image(uniform(rng, 2.2, 3.5, m))
        rows = np.clip(np.sin(TAU * uu / lam) * 3 + 0.5, 0, 1)[..., None]
        c1, c2 = pick_from_palette(rng, crops, m, 0.06), pick_from_palette(rng, crops, m, 0.06)
        c2 = c1 * 0.55 + c2 * 0.15  # darker furrows
        field = c1[:, None, None] * rows + c2[:, None, None] * (1 - rows)
        sel = (region == r)[..., None]
        img = np.where(sel, field, img)
    edge = np.minimum(np.abs(u1), np.abs(u2))
    paint(img, coverage(edge - 0.4) * 0.8, jittered(rng, [0.35, 0.3, 0.2], m, 0.05))
    return img


def _residential_area(rng, m, sh):
    img = _land_background(rng, m, _LAND, 0.05, 0.08)
    u, v = rotated_coordinates(uniform(rng, -0.3, 0.3, m), uniform(rng, 0, 24, m), uniform(rng, 0, 24, m))
    sp = per_image(uniform(rng, 8.5, 10.5, m))
    sw = FLOAT(1.5)
    fu, fv = u % sp, v % sp
    street = np.maximum(np.clip(sw + 0.5 - fu, 0, 1), np.clip(sw + 0.5 - fv, 0, 1))
    paint(img, street, jittered(rng, [0.58, 0.58, 0.58], m, 0.06))
    # houses: a 2x2 lattice of roofs per block, some lots empty (lawn)
    hs = (sp - sw) / 2
    hu, hv = (fu - sw) % hs, (fv - sw) % hs
    house = (fu > sw) & (fv > sw) & (hu > 0.6) & (hu < hs - 0.6) & (hv > 0.6) & (hv < hs - 0.6)
    iu = np.floor(u / sp).astype(np.int64) * 2 + ((fu - sw) >= hs)
    iv = np.floor(v / sp).astype(np.int64) * 2 + ((fv - sw) >= hs)
    cell = (iu % 16) * 16 + (iv % 16)
    roofs = np.array([[0.72, 0.3, 0.2], [0.55, 0.25, 0.18], [0.62, 0.62, 0.64], [0.82, 0.5, 0.3], [0.4, 0.4, 0.45]],
                     FLOAT)
    table = roofs[rng.integers(0, len(roofs), (m, 256))] * rng.uniform(0.85, 1.15, (m, 256, 1)).astype(FLOAT)
    idx = (np.arange(m)[:, None, None], cell)
    occupied = rng.random((m, 256)) < 0.85
    h = (house & occupied[idx])[..., None]
    return np.where(h, table[idx], img)


def _forest(rng, m, sh):
    canopy = pick_from_palette(rng, _CANOPY, m, 0.03)
    img = filled(m, canopy * 0.45)  # shadowed gaps between crowns
    img += (smooth_noise(rng, m, 4, 3) - 0.5) * FLOAT(0.08)
    for _ in range(40):  # tree crowns with a lit upper-left side
        x, y, r = uniform(rng, -1, 25, m), uniform(rng, -1, 25, m), uniform(rng, 1.3, 2.4, m)
        col = np.clip(canopy * uniform(rng, 0.75, 1.15, m)[:, None] + rng.uniform(-0.04, 0.04, (m, 3)).astype(FLOAT), 0,
                      1)
        paint(img, coverage(circle_distance(x, y, r)), col)
        paint(img, coverage(circle_distance(x - r * 0.3, y - r * 0.3, r * 0.45)) * 0.6,
              np.clip(col * 1.45 + 0.03, 0, 1))
    return img


def _lake(rng, m, sh):
    img = _land_background(rng, m)
    cx, cy, R = 12 + uniform(rng, -3, 3, m), 12 + uniform(rng, -3, 3, m), uniform(rng, 5, 8, m)
    dx, dy = PIXEL_X - per_image(cx), PIXEL_Y - per_image(cy)
    ang = np.arctan2(dy, dx)
    phase2, phase3 = uniform(rng, 0, 6.3, m), uniform(rng, 0, 6.3, m)
    rr = per_image(R) * (1 + 0.15 * np.sin(2 * ang + per_image(phase2)) + 0.1 * np.sin(3 * ang + per_image(phase3)))
    d = np.sqrt(dx * dx + dy * dy) - rr
    paint(img, coverage(d - 0.8) * 0.6, jittered(rng, [0.5, 0.48, 0.35], m, 0.05))
    paint(img, coverage(d), pick_from_palette(rng, _LAKE, m, 0.04))
    return img


def _industrial_area(rng, m, sh):
    img = _land_background(rng, m, _ASPHALT + [[0.5, 0.48, 0.42]], 0.05, 0.1)
    th = uniform(rng, 0, np.pi / 2, m)
    for _ in range(4):
        on = rng.random(m) < 0.8
        cx, cy = uniform(rng, 2, 22, m), uniform(rng, 2, 22, m)
        hw, hh = uniform(rng, 2.5, 5, m), uniform(rng, 2, 4, m)
        paint(img, coverage(box_distance(cx + 0.8, cy + 0.8, hw, hh, th)) * per_image(on * 0.6), BLACK)  # shadow
        paint(img, coverage(box_distance(cx, cy, hw, hh, th)) * per_image(on),
              pick_from_palette(rng, _ROOFS, m, 0.05))
    for _ in range(2):  # storage tanks
        on = rng.random(m) < 0.4
        paint(img,
              coverage(circle_distance(uniform(rng, 2, 22, m), uniform(rng, 2, 22, m),
                                       uniform(rng, 1.5, 2.5, m))) * per_image(on),
              jittered(rng, [0.92, 0.92, 0.9], m, 0.04))
    return img


def _pasture(rng, m, sh):
    img = _land_background(rng, m, [[0.5, 0.65, 0.3], [0.6, 0.6, 0.35], [0.42, 0.55, 0.27], [0.55, 0.5, 0.32]], 0.05,
                           0.08)
    on = rng.random(m) < 0.5  # a hedge line
    u, v = rotated_coordinates(uniform(rng, 0, np.pi, m), uniform(rng, 4, 20, m), uniform(rng, 4, 20, m))
    paint(img, coverage(np.abs(v) - 0.45) * per_image(on), jittered(rng, [0.2, 0.33, 0.15], m, 0.04))
    for _ in range(3):  # isolated trees
        t = rng.random(m) < 0.4
        paint(img,
              coverage(circle_distance(uniform(rng, 1, 23, m), uniform(rng, 1, 23, m),
                                       uniform(rng, 0.9, 1.4, m))) * per_image(t),
               jittered(rng, [0.15, 0.3, 0.12], m, 0.04))
    return img


def _parking_lot(rng, m, sh):
    img = _land_background(rng, m, _ASPHALT, 0.04, 0.06)
    u, v = rotated_coordinates(uniform(rng, -0.35, 0.35, m) + FLOAT(np.pi / 2) * rng.integers(0, 2, m),
                               uniform(rng, 0, 24, m),
                    uniform(rng, 0, 24, m))
    su, sv = per_image(uniform(rng, 3.0, 3.6, m)), per_image(uniform(rng, 7.5, 8.5, m))
    fu, fv = u % su, v % sv
    lines = (fu < 0.45) & (fv < sv * 0.55)  # bay markings; the rest of each row period is the aisle
    paint(img, lines.astype(FLOAT) * 0.7, WHITE)
    car = (fu > 0.8) & (fu < su - 0.4) & (fv > 0.5) & (fv < sv * 0.5)
    cell = (np.floor(u / su).astype(np.int64) % 16) * 16 + (np.floor(v / sv).astype(np.int64) % 16)
    table = random_colors(rng, m * 256, (0.0, 1.0), (0.25, 1.0)).reshape(m, 256, 3)
    occ = rng.random((m, 256)) < uniform(rng, 0.5, 0.95, m)[:, None]
    idx = (np.arange(m)[:, None, None], cell)
    c = (car & occ[idx])[..., None]
    return np.where(c, table[idx], img)


_CLASS_RENDERERS = (_river, _highway, _farmland, _residential_area, _forest, _lake,
                      _industrial_area, _pasture, _parking_lot)


def render_landuse(rng, labels, shifted):
    n = len(labels)
    img = render_by_class(rng, labels, _CLASS_RENDERERS, shifted)
    if shifted:  # other sensor: desaturated, brighter, hazy, noiseless
        grey = luminance(img)[..., None]
        return 0.15 + 0.85 * (grey + (img - grey) * 0.45) * 1.1
    img = photometric_jitter(rng, img, gain=0.12, desat=0.3, bright=(0.85, 1.15))
    return with_noise(rng, img, uniform(rng, 0.01, 0.04, n))
