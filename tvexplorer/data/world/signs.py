"""Traffic signs (GTSRB): a shape, a border and an inner mark on a street background."""
from __future__ import annotations

import numpy as np

from .drawing import (FLOAT, IMAGE_SIZE, PIXEL_X, box_blur, box_distance, circle_distance, coverage, jittered, paint,
                      per_image, pick_from_palette, polygon_distance, smooth_noise, uniform, vertical_gradient,
                      with_noise)
from .glyphs import GLYPH_INDEX, glyph_coverage, glyph_indices


SIGN_NAMES = ("stop", "yield", "warning", "speed limit", "no entry", "turn right", "priority road",
              "parking", "pedestrian crossing", "end of restrictions")
_RED = [0.8, 0.1, 0.12]
_BLUE = [0.1, 0.3, 0.75]
_YELLOW = [0.98, 0.8, 0.1]


def _street_background(rng, n, shifted):
    if shifted:  # clean sky / pale grey backgrounds
        return vertical_gradient(jittered(rng, [0.55, 0.75, 0.95], n, 0.08), jittered(rng, [0.85, 0.88, 0.9], n, 0.05))
    pal = [[0.45, 0.45, 0.45], [0.3, 0.45, 0.25], [0.55, 0.65, 0.8], [0.5, 0.4, 0.3], [0.25, 0.25, 0.3],
           [0.7, 0.7, 0.65]]
    c1, c2 = pick_from_palette(rng, pal, n, 0.1), pick_from_palette(rng, pal, n, 0.1)
    img = vertical_gradient(c1, c2)
    img += (smooth_noise(rng, n, 4, 3) - 0.5) * FLOAT(0.35)
    for _ in range(3):  # poles / buildings / foliage patches
        on = rng.random(n) < 0.5
        a = coverage(box_distance(uniform(rng, 0, 24, n), uniform(rng, 0, 24, n), uniform(rng, 0.6, 5, n),
                                  uniform(rng, 2, 12, n)))
        paint(img, a * per_image(on * 0.8), pick_from_palette(rng, pal, n, 0.15))
    return img


def _draw_sign(c, cx, cy, s, rot, red, blue, yellow, white, black, speed_digit):
    """Premultiplied colour [m, 24, 24, 3] and coverage [m, 24, 24] of signs of class c."""
    m = len(cx)
    sign = np.zeros((m, IMAGE_SIZE, IMAGE_SIZE, 3), FLOAT)
    cover = np.zeros((m, IMAGE_SIZE, IMAGE_SIZE), FLOAT)

    def put(alpha, color):
        paint(sign, alpha, color)
        np.maximum(cover, alpha, out=cover)

    ps = per_image(s)
    if c == 0:  # stop: red octagon, thin white inner ring, white "text" bar
        d = polygon_distance(cx, cy, s * 0.95, 8, rot)
        put(coverage(d), red)
        put(coverage(np.abs(d + ps * 0.1 + 0.5) - 0.5), white)
        put(coverage(box_distance(cx, cy, s * 0.55, s * 0.15 + 0.2)) * coverage(np.abs(np.sin(PIXEL_X * 1.6)) - 0.4),
            white)
    elif c == 1:  # yield: inverted triangle, red border, white inside
        d = polygon_distance(cx, cy - s * 0.1, s * 0.5, 3, 270 + rot)
        put(coverage(d), red)
        put(coverage(d + ps * 0.2), white)
    elif c == 2:  # warning: upright triangle, red border, white inside, black exclamation mark
        d = polygon_distance(cx, cy + s * 0.1, s * 0.5, 3, 90 + rot)
        put(coverage(d), red)
        put(coverage(d + ps * 0.2), white)
        put(coverage(box_distance(cx, cy + s * 0.02, s * 0.08 + 0.3, s * 0.2)), black)
        put(coverage(circle_distance(cx, cy + s * 0.4, s * 0.08 + 0.35)), black)
    elif c == 3:  # speed limit: white disc, red ring, black two-digit number
        d = circle_distance(cx, cy, s)
        put(coverage(d), red)
        put(coverage(d + ps * 0.22), white)
        gh = s * 0.75
        num = np.maximum(glyph_coverage(glyph_indices("35678", speed_digit), cx - gh * 0.4, cy, gh, 0.0, 0.45),
                         glyph_coverage(np.full(m, GLYPH_INDEX["0"]), cx + gh * 0.4, cy, gh, 0.0, 0.45))
        put(num, black)
    elif c == 4:  # no entry: red disc, white horizontal bar
        put(coverage(circle_distance(cx, cy, s)), red)
        put(coverage(box_distance(cx, cy, s * 0.65, s * 0.17)), white)
    elif c == 5:  # turn right: blue disc, white arrow pointing right
        put(coverage(circle_distance(cx, cy, s)), blue)
        arrow = np.minimum(box_distance(cx - s * 0.22, cy, s * 0.35, s * 0.12),
                           polygon_distance(cx + s * 0.25, cy, s * 0.22, 3, 180))
        put(coverage(arrow), white)
    elif c == 6:  # priority road: white diamond with a black edge and a yellow diamond inside
        d = polygon_distance(cx, cy, s * 0.72, 4, 45 + rot)
        put(coverage(d), black)
        put(coverage(d + 0.8), white)
        put(coverage(d + ps * 0.27), yellow)
    elif c == 7:  # parking: blue square with a white P
        put(coverage(polygon_distance(cx, cy, s * 0.82, 4, rot)), blue)
        put(glyph_coverage(np.full(m, GLYPH_INDEX["P"]), cx, cy, s * 1.15, 0.0, 0.4), white)
    elif c == 8:  # pedestrian crossing: blue square, white triangle, black walking-figure mark
        put(coverage(polygon_distance(cx, cy, s * 0.82, 4, rot)), blue)
        put(coverage(polygon_distance(cx, cy + s * 0.05, s * 0.33, 3, 90)), white)
        put(coverage(box_distance(cx, cy + s * 0.15, s * 0.06 + 0.25, s * 0.18)), black)
        put(coverage(circle_distance(cx, cy - s * 0.12, s * 0.06 + 0.35)), black)
    else:  # end of restrictions: white disc, thin dark outline, black diagonal stripe
        d = circle_distance(cx, cy, s)
        put(coverage(d), np.clip(white * 0.55, 0, 1))
        put(coverage(d + 0.8), white)
        put(coverage(box_distance(cx, cy, s * 0.85, s * 0.1 + 0.3, np.float32(-np.pi / 4))) * coverage(d + 1.0), black)
    return sign, cover


def render_signs(rng, labels, shifted):
    n = len(labels)
    img = _street_background(rng, n, shifted)
    if shifted:
        s = uniform(rng, 9.5, 11, n)
        cx, cy = 12 + uniform(rng, -0.5, 0.5, n), 12 + uniform(rng, -0.5, 0.5, n)
    else:
        s = uniform(rng, 7, 10.5, n)
        cx = 12 + uniform(rng, -1, 1, n) * (11.5 - s)
        cy = 12 + uniform(rng, -1, 1, n) * (11.5 - s)
    cx = cx.astype(FLOAT)
    cy = cy.astype(FLOAT)
    rot = uniform(rng, -6, 6, n)
    red, blue, yellow = jittered(rng, _RED, n, 0.1), jittered(rng, _BLUE, n, 0.1), jittered(rng, _YELLOW, n, 0.06)
    white, black = jittered(rng, [0.95, 0.95, 0.95], n, 0.05), jittered(rng, [0.06, 0.06, 0.06], n, 0.05)
    speed_digit = rng.integers(0, 5, n)
    sign = np.zeros_like(img)
    cover = np.zeros(img.shape[:3], FLOAT)
    for c in range(len(SIGN_NAMES)):
        m = labels == c
        if m.any():
            sign[m], cover[m] = _draw_sign(c, cx[m], cy[m], s[m], rot[m], red[m], blue[m], yellow[m], white[m],
                                           black[m], speed_digit[m])
    if not shifted:
        sign *= per_image(uniform(rng, 0.55, 1.1, n))[..., None]  # illumination
    paint(img, cover, np.zeros(3, FLOAT))
    img += sign
    if not shifted:
        blur = rng.random(n) < 0.35
        img[blur] = box_blur(img[blur]) * 0.7 + img[blur] * 0.3
    return with_noise(rng, img, 0.01 if shifted else uniform(rng, 0.01, 0.05, n))
