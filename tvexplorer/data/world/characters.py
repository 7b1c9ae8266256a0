"""Characters: handwritten digits (MNIST: real scikit-learn digits), house numbers (SVHN) and capital
letters (EMNIST)."""
from __future__ import annotations

import functools

import numpy as np

from .drawing import (FLOAT, IMAGE_SIZE, box_blur, box_distance, contrasting_pair, coverage, filled, jittered, paint,
                      per_image, smooth_noise, to_uint8, uniform, vertical_gradient, with_noise)
from .glyphs import glyph_coverage, glyph_indices


# digits (MNIST): real scikit-learn handwritten digits

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SK_DIGITS_TRAIN = 1297  # fixed split of the 1797 sklearn digits: first 1297 of a seed-0 permutation


@functools.lru_cache(maxsize=1)
def _load_sk_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.asarray(d.images, FLOAT)  # [1797, 8, 8], values 0..16
    perm = np.random.default_rng(0).permutation(len(images))
    return images, np.asarray(d.target, np.int64), perm


def sk_digits_split(split: str) -> np.ndarray:
    """Indices into sklearn's load_digits() that make up the fixed train / test split."""
    _, _, perm = _load_sk_digits()
    return perm[:SK_DIGITS_TRAIN] if split == "train" else perm[SK_DIGITS_TRAIN:]


def sample_sk_digits(rng, split, n, shifted):
    images, targets, _ = _load_sk_digits()
    pool = sk_digits_split(split)
    pick = pool[rng.choice(len(pool), n, replace=n > len(pool))]
    ink = images[pick] / FLOAT(16)  # [n, 8, 8]
    if not shifted:
        g = np.rint(ink * 255).astype(np.uint8)
        g = np.repeat(np.repeat(g, 3, axis=1), 3, axis=2)
        return np.repeat(g[..., None], 3, axis=3), targets[pick].copy()
    # shifted: coloured ink on a coloured background, moved by up to 2 px, slightly blurred
    big = np.repeat(np.repeat(ink, 3, axis=1), 3, axis=2)
    big = np.pad(big, ((0, 0), (2, 2), (2, 2)))
    oy, ox = rng.integers(0, 5, n), rng.integers(0, 5, n)
    rows = (oy[:, None] + np.arange(IMAGE_SIZE))[:, :, None]
    cols = (ox[:, None] + np.arange(IMAGE_SIZE))[:, None, :]
    a = big[np.arange(n)[:, None, None], rows, cols]
    fg, bg = contrasting_pair(rng, n, 0.45, sat=(0.3, 1.0))
    img = filled(n, bg)
    paint(img, a, fg)
    img = box_blur(img) * 0.4 + img * 0.6
    return to_uint8(img), targets[pick].copy()


# street_digits (SVHN)

def render_street_digits(rng, labels, shifted):
    n = len(labels)
    if shifted:  # clean: flat background, centred digit, no distractors, no blur
        fg, bg = contrasting_pair(rng, n, 0.45)
        img = filled(n, bg)
        a = glyph_coverage(glyph_indices("0123456789", labels), 12 + uniform(rng, -1, 1, n),
                           12 + uniform(rng, -1, 1, n),
                         uniform(rng, 13, 16, n), 0.0, uniform(rng, 0.4, 0.5, n))
        paint(img, a, fg)
        return with_noise(rng, img, 0.01)
    fg, bg = contrasting_pair(rng, n, 0.4)
    # cluttered multi-coloured background around a base colour
    img = filled(n, bg)
    img += (smooth_noise(rng, n, 3, 3) - 0.5) * per_image(uniform(rng, 0.2, 0.45, n))[..., None]
    for _ in range(3):
        on = rng.random(n) < 0.6
        col = np.clip(bg + rng.uniform(-0.3, 0.3, (n, 3)).astype(FLOAT), 0, 1)
        a = coverage(box_distance(uniform(rng, 0, 24, n), uniform(rng, 0, 24, n), uniform(rng, 1, 6, n),
                                  uniform(rng, 1, 6, n)))
        paint(img, a * per_image(on * uniform(rng, 0.4, 0.8, n)), col)
    h = uniform(rng, 12, 18, n)
    cx, cy = 12 + uniform(rng, -1.5, 1.5, n), 12 + uniform(rng, -2, 2, n)
    shear = uniform(rng, -0.15, 0.15, n)
    thr = uniform(rng, 0.3, 0.55, n)
    a = glyph_coverage(glyph_indices("0123456789", labels), cx, cy, h, shear, thr)
    # neighbouring house-number digits, cut off by the image border (same colour and size)
    step = h * 5 / 7 + uniform(rng, 1.5, 3.0, n)
    for side in (-1, 1):
        on = rng.random(n) < 0.55
        other = rng.integers(0, 10, n)
        a2 = glyph_coverage(glyph_indices("0123456789", other[on]), (cx + side * step)[on], cy[on], h[on], shear[on],
                            thr[on])
        a[on] = np.maximum(a[on], a2)
    # occasional shadow / outline under the digits
    sh = rng.random(n) < 0.3
    shadow = np.roll(np.roll(a, 1, axis=1), 1, axis=2) * per_image(sh * 0.6)
    paint(img, shadow, np.clip(bg * 0.4, 0, 1))
    paint(img, a, fg)
    blur = rng.random(n) < 0.5
    img[blur] = box_blur(img[blur]) * 0.6 + img[blur] * 0.4
    img *= per_image(uniform(rng, 0.7, 1.15, n))[..., None]  # illumination
    return with_noise(rng, img, uniform(rng, 0.01, 0.05, n))


# letters (EMNIST)

LETTERS = "ACEHKLMSTX"


def render_letters(rng, labels, shifted):
    n = len(labels)
    ids = glyph_indices(LETTERS, labels)
    if shifted:  # black on white, upright, large, centred
        img = filled(n, jittered(rng, [0.95, 0.95, 0.95], n, 0.04))
        a = glyph_coverage(ids, 12 + uniform(rng, -1, 1, n), 12 + uniform(rng, -1, 1, n), uniform(rng, 15, 18, n), 0.0,
                         uniform(rng, 0.35, 0.5, n))
        paint(img, a, jittered(rng, [0.05, 0.05, 0.05], n, 0.05))
        return with_noise(rng, img, 0.01)
    fg, bg = contrasting_pair(rng, n, 0.4)
    img = vertical_gradient(bg, np.clip(bg + rng.uniform(-0.15, 0.15, (n, 3)).astype(FLOAT), 0, 1))
    h = uniform(rng, 11, 17, n)
    half_w = h * 5 / 14 + 1
    cx = uniform(rng, 0, 1, n) * (24 - 2 * half_w - 2) + half_w + 1
    cy = uniform(rng, 0, 1, n) * (24 - h - 2) + h / 2 + 1
    a = glyph_coverage(ids, cx, cy, h, uniform(rng, -0.3, 0.3, n), uniform(rng, 0.25, 0.55, n))
    paint(img, a, fg)
    return with_noise(rng, img, uniform(rng, 0.01, 0.04, n))
