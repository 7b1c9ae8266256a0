"""The demo world: small, fully deterministic image-classification tasks and a caption corpus.

Every task renders 24x24 RGB images with vectorised numpy code (one task, `digits`, uses the real
scikit-learn handwritten digits). The tasks stand in for the standard 8-task CLIP suite (SUN397,
Stanford Cars, RESISC45, EuroSAT, SVHN, GTSRB, MNIST, DTD) and each has its own visual character:

=============  ===========  =====================================================================
name           mirrors      what the images show
=============  ===========  =====================================================================
digits         MNIST        real sklearn 8x8 handwritten digits, upscaled 3x, white on black
street_digits  SVHN         a digit in a random colour on a cluttered background, cut-off
                            neighbouring digits at the edges
letters        EMNIST       one capital letter, random size, position, stroke width, colour, shear
signs          GTSRB        a traffic sign (shape + border + inner mark) on a street background
textures       DTD          a periodic or random texture (stripes, checks, dots, zigzags, ...)
scenes         SUN397       a landscape / place seen from the ground (beach, forest, city, ...)
landuse        EuroSAT      an overhead view of land (river, highway, farmland, ...)
counting       CLEVR-Count  one to eight small objects
positions      (spatial)    one object in one of the nine cells of a 3x3 grid
=============  ===========  =====================================================================

`DemoTask.sample(..., shifted=True)` draws from a visibly shifted but related distribution (other
palette, cleaner backgrounds, other scales); it is meant only for the contrastive pretraining
`corpus`, so that zero-shot transfer of the pretrained model to the real tasks is partial.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import glyphs

IMAGE_SIZE = 24

_S = IMAGE_SIZE
_F = np.float32
_Y, _X = (np.mgrid[0:_S, 0:_S].astype(_F) + _F(0.5))  # pixel-centre coordinates, [24, 24]
_TAU = _F(2 * np.pi)
_WHITE = np.array([1.0, 1.0, 1.0], _F)
_BLACK = np.array([0.0, 0.0, 0.0], _F)


# --------------------------------------------------------------------------------------------
# Small vectorised drawing toolkit. Images are float32 [n, 24, 24, 3] in [0, 1]; per-image
# parameters are 1-D arrays of length n; masks / alphas are [n, 24, 24].
# --------------------------------------------------------------------------------------------

def _p(a) -> np.ndarray:
    """A per-image parameter (scalar or [n]) reshaped to broadcast against [n, 24, 24]."""
    return np.asarray(a, _F).reshape(-1, 1, 1)


def _u(rng: np.random.Generator, lo, hi, n: int) -> np.ndarray:
    return rng.uniform(lo, hi, n).astype(_F)


def _aa(d: np.ndarray, soft: float = 1.0) -> np.ndarray:
    """Signed distance (negative inside) -> anti-aliased coverage in [0, 1]."""
    return np.clip(_F(0.5) - d / _F(soft), 0, 1)


def _circle_sdf(cx, cy, r) -> np.ndarray:
    return np.sqrt((_X - _p(cx)) ** 2 + (_Y - _p(cy)) ** 2) - _p(r)


def _poly_sdf(cx, cy, apothem, sides: int, rot_deg=0.0) -> np.ndarray:
    """Regular convex polygon: max over edge normals at rot + 360*i/sides degrees (y points down)."""
    dx, dy = _X - _p(cx), _Y - _p(cy)
    rot = np.asarray(rot_deg, _F)
    d = None
    for i in range(sides):
        ang = np.deg2rad(rot + _F(360.0 * i / sides))
        di = dx * _p(np.cos(ang)) + dy * _p(np.sin(ang))
        d = di if d is None else np.maximum(d, di)
    return d - _p(apothem)


def _box_sdf(cx, cy, hw, hh, angle=0.0) -> np.ndarray:
    """Rectangle of half-width hw (along the rotated x axis) and half-height hh; angle in radians."""
    dx, dy = _X - _p(cx), _Y - _p(cy)
    c, s = _p(np.cos(angle)), _p(np.sin(angle))
    lx = dx * c + dy * s
    ly = -dx * s + dy * c
    return np.maximum(np.abs(lx) - _p(hw), np.abs(ly) - _p(hh))


def _rotated(angle, cx=12.0, cy=12.0) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u along the direction `angle`, v across it) relative to (cx, cy)."""
    dx, dy = _X - _p(cx), _Y - _p(cy)
    c, s = _p(np.cos(angle)), _p(np.sin(angle))
    return dx * c + dy * s, -dx * s + dy * c


def _paint(img: np.ndarray, alpha: np.ndarray, color) -> None:
    """In place: img <- img * (1 - alpha) + color * alpha. color is [3] or [n, 3]."""
    a = alpha[..., None]
    col = np.asarray(color, _F)
    col = col[None, None, None, :] if col.ndim == 1 else col[:, None, None, :]
    d = col - img
    d *= a
    img += d


def _fill(n: int, color) -> np.ndarray:
    col = np.asarray(color, _F)
    col = np.broadcast_to(col, (n, 3)) if col.ndim == 1 else col
    return np.broadcast_to(col[:, None, None, :], (n, _S, _S, 3)).astype(_F, copy=True)


def _vgrad(top, bottom, y0: float = 0.0, y1: float = float(_S)) -> np.ndarray:
    """Vertical gradient from colour `top` ([n, 3]) at y0 to `bottom` at y1."""
    t = np.clip((_Y - y0) / (y1 - y0), 0, 1)[None, :, :, None]
    return (np.asarray(top, _F)[:, None, None, :] * (1 - t) + np.asarray(bottom, _F)[:, None, None, :] * t).astype(_F)


def _hsv(h, s, v) -> np.ndarray:
    """Vectorised HSV -> RGB, [n] each -> [n, 3]."""
    h = (np.asarray(h, _F) % 1.0) * 6
    s, v = np.asarray(s, _F), np.asarray(v, _F)
    i = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], -1).astype(_F)


def _lum(c: np.ndarray) -> np.ndarray:
    return c[..., 0] * 0.299 + c[..., 1] * 0.587 + c[..., 2] * 0.114


def _colors(rng, n, sat=(0.0, 1.0), val=(0.0, 1.0), hue=(0.0, 1.0)) -> np.ndarray:
    return _hsv(rng.uniform(*hue, n), rng.uniform(*sat, n), rng.uniform(*val, n))


def _contrast_pair(rng, n, min_diff=0.35, sat=(0.0, 1.0), val=(0.0, 1.0), hue=(0.0, 1.0)):
    """(fg, bg) random colours [n, 3] whose luminances differ by at least min_diff."""
    fg = _colors(rng, n, sat, val, hue)
    bg = _colors(rng, n, sat, val, hue)
    for _ in range(200):
        bad = np.abs(_lum(fg) - _lum(bg)) < min_diff
        k = int(bad.sum())
        if k == 0:
            break
        fg[bad] = _colors(rng, k, sat, val, hue)
        bg[bad] = _colors(rng, k, sat, val, hue)
    return fg, bg


def _contrasting(rng, ref: np.ndarray, min_diff=0.4, sat=(0.0, 1.0), val=(0.0, 1.0)) -> np.ndarray:
    """Random colours [n, 3] whose luminance differs from that of `ref` ([n, 3]) by >= min_diff."""
    n = len(ref)
    out = _colors(rng, n, sat, val)
    lr = _lum(ref)
    for _ in range(200):
        bad = np.abs(_lum(out) - lr) < min_diff
        k = int(bad.sum())
        if k == 0:
            break
        out[bad] = _colors(rng, k, sat, val)
    # extreme refs (mid-grey with a large min_diff) may never succeed: fall back to black / white
    bad = np.abs(_lum(out) - lr) < min_diff
    out[bad] = np.where((lr[bad] > 0.5)[:, None], _BLACK, _WHITE)
    return out


def _jit(rng, base, n, amt) -> np.ndarray:
    """Colour `base` plus uniform per-channel jitter, [n, 3]."""
    return np.clip(np.asarray(base, _F)[None] + rng.uniform(-amt, amt, (n, 3)).astype(_F), 0, 1)


def _pick(rng, palette, n, amt=0.0) -> np.ndarray:
    """One of the colours in `palette` per image, with jitter."""
    pal = np.asarray(palette, _F)
    out = pal[rng.integers(0, len(pal), n)]
    if amt:
        out = np.clip(out + rng.uniform(-amt, amt, (n, 3)).astype(_F), 0, 1)
    return out


def _smooth(rng, n: int, cells: int, ch: int = 1) -> np.ndarray:
    """Smooth value noise in [0, 1]: a (cells+1)^2 random grid, smoothstep-interpolated. [n, 24, 24, ch]."""
    g = rng.random((n, cells + 1, cells + 1, ch), dtype=_F)
    t = (np.arange(_S, dtype=_F) + 0.5) / _S * cells
    i0 = np.minimum(t.astype(np.int64), cells - 1)
    f = t - i0
    f = f * f * (3 - 2 * f)
    a = g[:, i0] * (1 - f)[None, :, None, None] + g[:, i0 + 1] * f[None, :, None, None]
    return a[:, :, i0] * (1 - f)[None, None, :, None] + a[:, :, i0 + 1] * f[None, None, :, None]


def _noise(rng, img: np.ndarray, sigma) -> np.ndarray:
    sig = np.asarray(sigma, _F).reshape(-1, 1, 1, 1)
    return img + rng.standard_normal(img.shape, dtype=_F) * sig


def _box_blur(img: np.ndarray) -> np.ndarray:
    """3x3 box blur with edge replication, [n, 24, 24, c]."""
    p = np.pad(img, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    v = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
    return (v[:, :, :-2] + v[:, :, 1:-1] + v[:, :, 2:]) / _F(9)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def _by_class(rng, labels: np.ndarray, renderers, shifted: bool) -> np.ndarray:
    """Render each class with its own function fn(rng, m, shifted) -> [m, 24, 24, 3]."""
    img = np.empty((len(labels), _S, _S, 3), _F)
    for c, fn in enumerate(renderers):
        m = labels == c
        k = int(m.sum())
        if k:
            img[m] = fn(rng, k, shifted)
    return img


# ---- bitmap glyphs --------------------------------------------------------------------------

_GLYPH_CHARS = "".join(glyphs.FONT)
_GLYPH_INDEX = {c: i for i, c in enumerate(_GLYPH_CHARS)}
_GPAD = 2
_GLYPHS = np.pad(
    np.array([[[ch == "#" for ch in row] for row in glyphs.FONT[c]] for c in _GLYPH_CHARS], _F),
    ((0, 0), (_GPAD, _GPAD), (_GPAD, _GPAD)),
)


def _glyph_alpha(idx, cx, cy, height, shear=0.0, thr=0.5) -> np.ndarray:
    """Coverage [n, 24, 24] of glyphs `idx` ([n] indices into _GLYPH_CHARS) centred at (cx, cy).

    height: glyph height in pixels; shear: x offset per pixel of y (italic); thr in (0, 1): lower
    values draw thicker strokes (bilinear-interpolated bitmap, thresholded with ~1 px anti-aliasing).
    """
    idx = np.asarray(idx, np.int64)
    n = len(idx)
    scale = _p(np.asarray(height, _F) / glyphs.HEIGHT)
    dy = _Y - _p(cy)
    gy = dy / scale + _F(glyphs.HEIGHT / 2 - 0.5 + _GPAD)
    gx = (_X - _p(cx) - _p(shear) * dy) / scale + _F(glyphs.WIDTH / 2 - 0.5 + _GPAD)
    h, w = _GLYPHS.shape[1:]
    gy = np.clip(gy, 0, h - 1.001)
    gx = np.clip(gx, 0, w - 1.001)
    y0 = gy.astype(np.int64)
    x0 = gx.astype(np.int64)
    wy, wx = gy - y0, gx - x0
    gi = idx.reshape(n, 1, 1)
    g = _GLYPHS
    val = ((g[gi, y0, x0] * (1 - wx) + g[gi, y0, x0 + 1] * wx) * (1 - wy)
           + (g[gi, y0 + 1, x0] * (1 - wx) + g[gi, y0 + 1, x0 + 1] * wx) * wy)
    return np.clip((val - _p(thr)) * scale + 0.5, 0, 1)


def _glyph_ids(chars: str, which) -> np.ndarray:
    lut = np.array([_GLYPH_INDEX[c] for c in chars], np.int64)
    return lut[np.asarray(which, np.int64)]


# --------------------------------------------------------------------------------------------
# The task type
# --------------------------------------------------------------------------------------------

def _task_rng(name: str, split: str, seed: int, shifted: bool) -> np.random.Generator:
    key = f"tvexplorer.demo|{name}|{split}|{int(seed)}|{int(bool(shifted))}".encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


@dataclass(frozen=True)
class DemoTask:
    name: str                      # short id, e.g. "street_digits"
    mirrors: str                   # the standard benchmark it stands in for, e.g. "SVHN"
    classnames: tuple[str, ...]    # human words used in prompts
    templates: tuple[str, ...]     # zero-shot prompt templates, each with one "{}"

    def available(self, split: str) -> int | None:
        """How many distinct images `split` holds; None for procedural tasks, which never repeat."""
        return len(sk_digits_split(split)) if self.name == "digits" else None

    def sample(self, split: str, n: int, seed: int = 0, shifted: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """split in {"train", "test"}. Returns images uint8 [n, 24, 24, 3] and labels int64 [n].

        Deterministic in (task name, split, seed, shifted); "train" and "test" are independent
        draws. Procedural tasks have exactly balanced labels (n % classes aside), in random order.
        shifted=True draws from a visibly shifted but related distribution, meant only for the
        contrastive pretraining corpus.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        n = int(n)
        if n < 0:
            raise ValueError("n must be >= 0")
        rng = _task_rng(self.name, split, seed, shifted)
        if self.name == "digits":
            return _sample_sk_digits(rng, split, n, shifted)
        labels = rng.permutation(np.arange(n, dtype=np.int64) % len(self.classnames))
        img = _RENDERERS[self.name](rng, labels, shifted)
        return _to_uint8(img), labels


# --------------------------------------------------------------------------------------------
# digits (MNIST): real scikit-learn handwritten digits
# --------------------------------------------------------------------------------------------

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SK_DIGITS_TRAIN = 1297  # fixed split of the 1797 sklearn digits: first 1297 of a seed-0 permutation


@functools.lru_cache(maxsize=1)
def _sk_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.asarray(d.images, _F)  # [1797, 8, 8], values 0..16
    perm = np.random.default_rng(0).permutation(len(images))
    return images, np.asarray(d.target, np.int64), perm


def sk_digits_split(split: str) -> np.ndarray:
    """Indices into sklearn's load_digits() that make up the fixed train / test split."""
    _, _, perm = _sk_digits()
    return perm[:SK_DIGITS_TRAIN] if split == "train" else perm[SK_DIGITS_TRAIN:]


def _sample_sk_digits(rng, split, n, shifted):
    images, targets, _ = _sk_digits()
    pool = sk_digits_split(split)
    pick = pool[rng.choice(len(pool), n, replace=n > len(pool))]
    ink = images[pick] / _F(16)  # [n, 8, 8]
    if not shifted:
        g = np.rint(ink * 255).astype(np.uint8)
        g = np.repeat(np.repeat(g, 3, axis=1), 3, axis=2)
        return np.repeat(g[..., None], 3, axis=3), targets[pick].copy()
    # shifted: coloured ink on a coloured background, moved by up to 2 px, slightly blurred
    big = np.repeat(np.repeat(ink, 3, axis=1), 3, axis=2)
    big = np.pad(big, ((0, 0), (2, 2), (2, 2)))
    oy, ox = rng.integers(0, 5, n), rng.integers(0, 5, n)
    rows = (oy[:, None] + np.arange(_S))[:, :, None]
    cols = (ox[:, None] + np.arange(_S))[:, None, :]
    a = big[np.arange(n)[:, None, None], rows, cols]
    fg, bg = _contrast_pair(rng, n, 0.45, sat=(0.3, 1.0))
    img = _fill(n, bg)
    _paint(img, a, fg)
    img = _box_blur(img) * 0.4 + img * 0.6
    return _to_uint8(img), targets[pick].copy()


# --------------------------------------------------------------------------------------------
# street_digits (SVHN)
# --------------------------------------------------------------------------------------------

def _render_street_digits(rng, labels, shifted):
    n = len(labels)
    if shifted:  # clean: flat background, centred digit, no distractors, no blur
        fg, bg = _contrast_pair(rng, n, 0.45)
        img = _fill(n, bg)
        a = _glyph_alpha(_glyph_ids("0123456789", labels), 12 + _u(rng, -1, 1, n), 12 + _u(rng, -1, 1, n),
                         _u(rng, 13, 16, n), 0.0, _u(rng, 0.4, 0.5, n))
        _paint(img, a, fg)
        return _noise(rng, img, 0.01)
    fg, bg = _contrast_pair(rng, n, 0.4)
    # cluttered multi-coloured background around a base colour
    img = _fill(n, bg)
    img += (_smooth(rng, n, 3, 3) - 0.5) * _p(_u(rng, 0.2, 0.45, n))[..., None]
    for _ in range(3):
        on = rng.random(n) < 0.6
        col = np.clip(bg + rng.uniform(-0.3, 0.3, (n, 3)).astype(_F), 0, 1)
        a = _aa(_box_sdf(_u(rng, 0, 24, n), _u(rng, 0, 24, n), _u(rng, 1, 6, n), _u(rng, 1, 6, n)))
        _paint(img, a * _p(on * _u(rng, 0.4, 0.8, n)), col)
    h = _u(rng, 12, 18, n)
    cx, cy = 12 + _u(rng, -1.5, 1.5, n), 12 + _u(rng, -2, 2, n)
    shear = _u(rng, -0.15, 0.15, n)
    thr = _u(rng, 0.3, 0.55, n)
    a = _glyph_alpha(_glyph_ids("0123456789", labels), cx, cy, h, shear, thr)
    # neighbouring house-number digits, cut off by the image border (same colour and size)
    step = h * 5 / 7 + _u(rng, 1.5, 3.0, n)
    for side in (-1, 1):
        on = rng.random(n) < 0.55
        other = rng.integers(0, 10, n)
        a2 = _glyph_alpha(_glyph_ids("0123456789", other[on]), (cx + side * step)[on], cy[on], h[on], shear[on], thr[on])
        a[on] = np.maximum(a[on], a2)
    # occasional shadow / outline under the digits
    sh = rng.random(n) < 0.3
    shadow = np.roll(np.roll(a, 1, axis=1), 1, axis=2) * _p(sh * 0.6)
    _paint(img, shadow, np.clip(bg * 0.4, 0, 1))
    _paint(img, a, fg)
    blur = rng.random(n) < 0.5
    img[blur] = _box_blur(img[blur]) * 0.6 + img[blur] * 0.4
    img *= _p(_u(rng, 0.7, 1.15, n))[..., None]  # illumination
    return _noise(rng, img, _u(rng, 0.01, 0.05, n))


# --------------------------------------------------------------------------------------------
# letters (EMNIST)
# --------------------------------------------------------------------------------------------

LETTERS = "ACEHKLMSTX"


def _render_letters(rng, labels, shifted):
    n = len(labels)
    ids = _glyph_ids(LETTERS, labels)
    if shifted:  # black on white, upright, large, centred
        img = _fill(n, _jit(rng, [0.95, 0.95, 0.95], n, 0.04))
        a = _glyph_alpha(ids, 12 + _u(rng, -1, 1, n), 12 + _u(rng, -1, 1, n), _u(rng, 15, 18, n), 0.0,
                         _u(rng, 0.35, 0.5, n))
        _paint(img, a, _jit(rng, [0.05, 0.05, 0.05], n, 0.05))
        return _noise(rng, img, 0.01)
    fg, bg = _contrast_pair(rng, n, 0.4)
    img = _vgrad(bg, np.clip(bg + rng.uniform(-0.15, 0.15, (n, 3)).astype(_F), 0, 1))
    h = _u(rng, 11, 17, n)
    half_w = h * 5 / 14 + 1
    cx = _u(rng, 0, 1, n) * (24 - 2 * half_w - 2) + half_w + 1
    cy = _u(rng, 0, 1, n) * (24 - h - 2) + h / 2 + 1
    a = _glyph_alpha(ids, cx, cy, h, _u(rng, -0.3, 0.3, n), _u(rng, 0.25, 0.55, n))
    _paint(img, a, fg)
    return _noise(rng, img, _u(rng, 0.01, 0.04, n))


# --------------------------------------------------------------------------------------------
# signs (GTSRB)
# --------------------------------------------------------------------------------------------

SIGN_NAMES = ("stop", "yield", "warning", "speed limit", "no entry", "turn right", "priority road",
              "parking", "pedestrian crossing", "end of restrictions")
_RED = [0.8, 0.1, 0.12]
_BLUE = [0.1, 0.3, 0.75]
_YELLOW = [0.98, 0.8, 0.1]


def _street_background(rng, n, shifted):
    if shifted:  # clean sky / pale grey backgrounds
        return _vgrad(_jit(rng, [0.55, 0.75, 0.95], n, 0.08), _jit(rng, [0.85, 0.88, 0.9], n, 0.05))
    pal = [[0.45, 0.45, 0.45], [0.3, 0.45, 0.25], [0.55, 0.65, 0.8], [0.5, 0.4, 0.3], [0.25, 0.25, 0.3],
           [0.7, 0.7, 0.65]]
    c1, c2 = _pick(rng, pal, n, 0.1), _pick(rng, pal, n, 0.1)
    img = _vgrad(c1, c2)
    img += (_smooth(rng, n, 4, 3) - 0.5) * _F(0.35)
    for _ in range(3):  # poles / buildings / foliage patches
        on = rng.random(n) < 0.5
        a = _aa(_box_sdf(_u(rng, 0, 24, n), _u(rng, 0, 24, n), _u(rng, 0.6, 5, n), _u(rng, 2, 12, n)))
        _paint(img, a * _p(on * 0.8), _pick(rng, pal, n, 0.15))
    return img


def _draw_sign(c, cx, cy, s, rot, red, blue, yellow, white, black, speed_digit):
    """Premultiplied colour [m, 24, 24, 3] and coverage [m, 24, 24] of signs of class c."""
    m = len(cx)
    sign = np.zeros((m, _S, _S, 3), _F)
    cover = np.zeros((m, _S, _S), _F)

    def put(alpha, color):
        _paint(sign, alpha, color)
        np.maximum(cover, alpha, out=cover)

    ps = _p(s)
    if c == 0:  # stop: red octagon, thin white inner ring, white "text" bar
        d = _poly_sdf(cx, cy, s * 0.95, 8, rot)
        put(_aa(d), red)
        put(_aa(np.abs(d + ps * 0.1 + 0.5) - 0.5), white)
        put(_aa(_box_sdf(cx, cy, s * 0.55, s * 0.15 + 0.2)) * _aa(np.abs(np.sin(_X * 1.6)) - 0.4), white)
    elif c == 1:  # yield: inverted triangle, red border, white inside
        d = _poly_sdf(cx, cy - s * 0.1, s * 0.5, 3, 270 + rot)
        put(_aa(d), red)
        put(_aa(d + ps * 0.2), white)
    elif c == 2:  # warning: upright triangle, red border, white inside, black exclamation mark
        d = _poly_sdf(cx, cy + s * 0.1, s * 0.5, 3, 90 + rot)
        put(_aa(d), red)
        put(_aa(d + ps * 0.2), white)
        put(_aa(_box_sdf(cx, cy + s * 0.02, s * 0.08 + 0.3, s * 0.2)), black)
        put(_aa(_circle_sdf(cx, cy + s * 0.4, s * 0.08 + 0.35)), black)
    elif c == 3:  # speed limit: white disc, red ring, black two-digit number
        d = _circle_sdf(cx, cy, s)
        put(_aa(d), red)
        put(_aa(d + ps * 0.22), white)
        gh = s * 0.75
        num = np.maximum(_glyph_alpha(_glyph_ids("35678", speed_digit), cx - gh * 0.4, cy, gh, 0.0, 0.45),
                         _glyph_alpha(np.full(m, _GLYPH_INDEX["0"]), cx + gh * 0.4, cy, gh, 0.0, 0.45))
        put(num, black)
    elif c == 4:  # no entry: red disc, white horizontal bar
        put(_aa(_circle_sdf(cx, cy, s)), red)
        put(_aa(_box_sdf(cx, cy, s * 0.65, s * 0.17)), white)
    elif c == 5:  # turn right: blue disc, white arrow pointing right
        put(_aa(_circle_sdf(cx, cy, s)), blue)
        arrow = np.minimum(_box_sdf(cx - s * 0.22, cy, s * 0.35, s * 0.12),
                           _poly_sdf(cx + s * 0.25, cy, s * 0.22, 3, 180))
        put(_aa(arrow), white)
    elif c == 6:  # priority road: white diamond with a black edge and a yellow diamond inside
        d = _poly_sdf(cx, cy, s * 0.72, 4, 45 + rot)
        put(_aa(d), black)
        put(_aa(d + 0.8), white)
        put(_aa(d + ps * 0.27), yellow)
    elif c == 7:  # parking: blue square with a white P
        put(_aa(_poly_sdf(cx, cy, s * 0.82, 4, rot)), blue)
        put(_glyph_alpha(np.full(m, _GLYPH_INDEX["P"]), cx, cy, s * 1.15, 0.0, 0.4), white)
    elif c == 8:  # pedestrian crossing: blue square, white triangle, black walking-figure mark
        put(_aa(_poly_sdf(cx, cy, s * 0.82, 4, rot)), blue)
        put(_aa(_poly_sdf(cx, cy + s * 0.05, s * 0.33, 3, 90)), white)
        put(_aa(_box_sdf(cx, cy + s * 0.15, s * 0.06 + 0.25, s * 0.18)), black)
        put(_aa(_circle_sdf(cx, cy - s * 0.12, s * 0.06 + 0.35)), black)
    else:  # end of restrictions: white disc, thin dark outline, black diagonal stripe
        d = _circle_sdf(cx, cy, s)
        put(_aa(d), np.clip(white * 0.55, 0, 1))
        put(_aa(d + 0.8), white)
        put(_aa(_box_sdf(cx, cy, s * 0.85, s * 0.1 + 0.3, np.float32(-np.pi / 4))) * _aa(d + 1.0), black)
    return sign, cover


def _render_signs(rng, labels, shifted):
    n = len(labels)
    img = _street_background(rng, n, shifted)
    if shifted:
        s = _u(rng, 9.5, 11, n)
        cx, cy = 12 + _u(rng, -0.5, 0.5, n), 12 + _u(rng, -0.5, 0.5, n)
    else:
        s = _u(rng, 7, 10.5, n)
        cx = 12 + _u(rng, -1, 1, n) * (11.5 - s)
        cy = 12 + _u(rng, -1, 1, n) * (11.5 - s)
    cx = cx.astype(_F)
    cy = cy.astype(_F)
    rot = _u(rng, -6, 6, n)
    red, blue, yellow = _jit(rng, _RED, n, 0.1), _jit(rng, _BLUE, n, 0.1), _jit(rng, _YELLOW, n, 0.06)
    white, black = _jit(rng, [0.95, 0.95, 0.95], n, 0.05), _jit(rng, [0.06, 0.06, 0.06], n, 0.05)
    speed_digit = rng.integers(0, 5, n)
    sign = np.zeros_like(img)
    cover = np.zeros(img.shape[:3], _F)
    for c in range(len(SIGN_NAMES)):
        m = labels == c
        if m.any():
            sign[m], cover[m] = _draw_sign(c, cx[m], cy[m], s[m], rot[m], red[m], blue[m], yellow[m], white[m],
                                           black[m], speed_digit[m])
    if not shifted:
        sign *= _p(_u(rng, 0.55, 1.1, n))[..., None]  # illumination
    _paint(img, cover, np.zeros(3, _F))
    img += sign
    if not shifted:
        blur = rng.random(n) < 0.35
        img[blur] = _box_blur(img[blur]) * 0.7 + img[blur] * 0.3
    return _noise(rng, img, 0.01 if shifted else _u(rng, 0.01, 0.05, n))


# --------------------------------------------------------------------------------------------
# textures (DTD)
# --------------------------------------------------------------------------------------------

TEXTURE_NAMES = ("striped", "chequered", "dotted", "zigzagged", "wavy", "grid", "blotchy", "spiralled", "speckled")


def _tex_pattern(rng, c, m, shifted):
    """Coverage pattern [m, 24, 24] in [0, 1] of texture class c."""
    k = 1.3 if shifted else 1.0  # shifted: coarser patterns
    th = _u(rng, 0, np.pi, m)
    u, v = _rotated(th, 12 + _u(rng, -6, 6, m), 12 + _u(rng, -6, 6, m))
    phase = _p(_u(rng, 0, 2 * np.pi, m))
    sq = lambda x, sharp=3.0: np.clip(x * sharp + 0.5, 0, 1)
    if c == 0:  # striped: straight parallel bands
        lam = _p(_u(rng, 4, 8, m) * k)
        return sq(np.sin(_TAU * u / lam + phase))
    if c == 1:  # chequered
        lam = _p(_u(rng, 6, 10, m) * k)
        s1, s2 = sq(np.sin(_TAU * u / lam + phase)), sq(np.sin(_TAU * v / lam + phase * 0.7))
        return s1 * (1 - s2) + s2 * (1 - s1)
    if c == 2:  # dotted: lattice of round dots
        lam = _u(rng, 5, 8, m) * k
        r = lam * _u(rng, 0.18, 0.27, m)
        du = ((u / _p(lam) + phase) % 1 - 0.5) * _p(lam)
        dv = ((v / _p(lam) + phase * 0.37) % 1 - 0.5) * _p(lam)
        return _aa(np.sqrt(du * du + dv * dv) - _p(r))
    if c == 3:  # zigzagged: bands whose centre line is a sharp triangle wave
        lam = _p(_u(rng, 5, 8, m) * k)
        per = _p(_u(rng, 5, 7, m) * k)
        amp = _p(_u(rng, 1.6, 2.6, m) * k)
        tri = np.abs(((v / per + phase) % 1) * 2 - 1) * 2 - 1
        return sq(np.sin(_TAU * (u + amp * tri) / lam))
    if c == 4:  # wavy: bands whose centre line is a long sine wave
        lam = _p(_u(rng, 5, 8, m) * k)
        per = _p(_u(rng, 12, 18, m) * k)
        amp = _p(_u(rng, 1.6, 2.8, m) * k)
        return sq(np.sin(_TAU * (u + amp * np.sin(_TAU * v / per + phase)) / lam))
    if c == 5:  # grid: thin lines in two perpendicular directions
        lam = _p(_u(rng, 5, 8, m) * k)
        w = _p(_u(rng, 0.45, 0.8, m))
        du = np.abs(((u / lam + phase) % 1 - 0.5) * lam)
        dv = np.abs(((v / lam + phase * 0.61) % 1 - 0.5) * lam)
        return _aa(np.minimum(du, dv) - w)
    if c == 6:  # blotchy: thresholded smooth noise
        cells = 5 if not shifted else 3
        g = _smooth(rng, m, cells)[..., 0]
        return sq(g - _p(_u(rng, 0.42, 0.58, m)), 6.0)
    if c == 7:  # spiralled: an Archimedean spiral around a point near the centre
        lam = _p(_u(rng, 4.5, 7, m) * k)
        cx, cy = 12 + _u(rng, -3, 3, m), 12 + _u(rng, -3, 3, m)
        dx, dy = _X - _p(cx), _Y - _p(cy)
        r = np.sqrt(dx * dx + dy * dy)
        ang = np.arctan2(dy, dx)
        sign = _p(np.where(rng.random(m) < 0.5, -1, 1))
        return sq(np.sin(sign * ang - _TAU * r / lam + phase))
    # speckled: random isolated specks
    dens = _p(_u(rng, 0.12, 0.3, m))
    return (rng.random((m, _S, _S), dtype=_F) < dens).astype(_F)


def _render_textures(rng, labels, shifted):
    n = len(labels)
    if shifted:  # greyscale palette
        g1, g2 = _contrast_pair(rng, n, 0.4, sat=(0.0, 0.0))
    else:
        g1, g2 = _contrast_pair(rng, n, 0.3, sat=(0.2, 1.0))
    pat = np.empty((n, _S, _S), _F)
    for c in range(len(TEXTURE_NAMES)):
        m = labels == c
        if m.any():
            pat[m] = _tex_pattern(rng, c, int(m.sum()), shifted)
    img = _fill(n, g2)
    if not shifted:  # mild lighting variation
        img *= (0.8 + 0.4 * _smooth(rng, n, 2))
    _paint(img, pat, g1)
    return _noise(rng, img, 0.01 if shifted else _u(rng, 0.01, 0.04, n))


# --------------------------------------------------------------------------------------------
# scenes (SUN397)
# --------------------------------------------------------------------------------------------

SCENE_NAMES = ("beach", "forest", "desert", "snowfield", "ocean", "city skyline", "night sky", "meadow",
               "mountains")

# shared palettes: classes overlap in colour so that structure, not the colour average, decides
_SKY_TOP = np.array([[0.35, 0.6, 0.92], [0.6, 0.63, 0.68], [0.38, 0.3, 0.55], [0.68, 0.76, 0.85]], _F)
_SKY_BOTTOM = np.array([[0.72, 0.85, 0.98], [0.8, 0.8, 0.82], [0.98, 0.62, 0.38], [0.93, 0.9, 0.84]], _F)
_SAND = [[0.93, 0.82, 0.58], [0.85, 0.65, 0.4], [0.93, 0.9, 0.82], [0.7, 0.6, 0.45], [0.8, 0.45, 0.3]]
_WATER = [[0.1, 0.4, 0.72], [0.1, 0.5, 0.55], [0.3, 0.42, 0.52], [0.05, 0.22, 0.45]]
_GRASS = [[0.45, 0.75, 0.25], [0.6, 0.7, 0.3], [0.78, 0.72, 0.38], [0.25, 0.5, 0.2]]
_FOLIAGE = [[0.1, 0.32, 0.12], [0.22, 0.45, 0.15], [0.72, 0.42, 0.1], [0.55, 0.2, 0.1], [0.15, 0.3, 0.3]]
_ROCK = [[0.45, 0.42, 0.5], [0.5, 0.45, 0.4], [0.35, 0.38, 0.45], [0.58, 0.56, 0.55], [0.6, 0.4, 0.3]]
_BUILDING = [[0.3, 0.3, 0.33], [0.45, 0.42, 0.4], [0.25, 0.28, 0.38], [0.6, 0.58, 0.55], [0.5, 0.35, 0.3]]


def _below(line) -> np.ndarray:
    """Coverage of the region below a (possibly per-column) horizon line."""
    return _aa(line - _Y)


def _wave_line(rng, m, y, amp, per) -> np.ndarray:
    return _p(y) + _p(amp) * np.sin(_TAU * _X / _p(per) + _p(_u(rng, 0, 2 * np.pi, m)))


def _sky(rng, m, kinds=(0, 1, 2, 3)):
    """Sky gradient of a random kind per image (0 day, 1 overcast, 2 dusk, 3 hazy); returns (img, kind)."""
    k = np.asarray(kinds)[rng.integers(0, len(kinds), m)]
    top = np.clip(_SKY_TOP[k] + rng.uniform(-0.08, 0.08, (m, 3)).astype(_F), 0, 1)
    bot = np.clip(_SKY_BOTTOM[k] + rng.uniform(-0.06, 0.06, (m, 3)).astype(_F), 0, 1)
    return _vgrad(top, bot), k


def _sun(rng, img, m, p, kind, center_y=(3, 7)):
    on = (rng.random(m) < p) & (kind != 1)
    col = np.where((kind == 2)[:, None], _jit(rng, [1.0, 0.55, 0.3], m, 0.05), _jit(rng, [1.0, 0.95, 0.65], m, 0.04))
    a = _aa(_circle_sdf(_u(rng, 3, 21, m), _u(rng, *center_y, m), _u(rng, 1.5, 2.5, m)))
    _paint(img, a * _p(on), col)


def _scene_beach(rng, m, sh):
    img, kind = _sky(rng, m)
    _sun(rng, img, m, 0.5, kind)
    yh = _u(rng, 5, 10, m)
    water = _pick(rng, _WATER, m, 0.06)
    _paint(img, _below(_p(yh)), water)
    shore = _wave_line(rng, m, yh + _u(rng, 4, 8, m), _u(rng, 0.6, 1.6, m), _u(rng, 9, 18, m))
    _paint(img, _aa(np.abs(_Y - shore + 0.7) - 0.7) * 0.85, _jit(rng, [0.95, 0.95, 0.95], m, 0.05))  # surf
    _paint(img, _below(shore), _pick(rng, _SAND, m, 0.05))
    for _ in range(2):  # parasols / towels
        on = rng.random(m) < 0.4
        a = _aa(_box_sdf(_u(rng, 2, 22, m), _u(rng, 19, 22, m), _u(rng, 0.8, 1.6, m), 0.6))
        _paint(img, a * _p(on), _colors(rng, m, (0.7, 1), (0.7, 1)))
    return img


def _scene_forest(rng, m, sh):
    sky, _ = _sky(rng, m)
    img = sky * (1 - np.clip((_Y - 6) / 8, 0, 1))[None, :, :, None]
    img += (_pick(rng, _FOLIAGE, m, 0.05) * 0.5)[:, None, None, :] * np.clip((_Y - 6) / 8, 0, 1)[None, :, :, None]
    leaves = _pick(rng, _FOLIAGE, m, 0.05)
    ys = np.sort(rng.uniform(6, 26, (m, 14)).astype(_F), axis=1)
    for j in range(14):  # conifers, back to front
        x = _u(rng, -1, 25, m)
        a = _u(rng, 1.8, 3.2, m)
        base = ys[:, j]
        _paint(img, _aa(_box_sdf(x, base + 0.8, 0.5, 1.2)), _jit(rng, [0.3, 0.2, 0.1], m, 0.05))
        crown = _aa(_poly_sdf(x, base - a, a, 3, 90))
        col = np.clip(leaves + rng.uniform(-0.08, 0.08, (m, 3)).astype(_F), 0, 1) * (0.65 + 0.35 * j / 13)
        _paint(img, crown, col)
    return img


def _scene_desert(rng, m, sh):
    img, kind = _sky(rng, m, (0, 2, 3))
    _sun(rng, img, m, 0.6, kind)
    sand = _pick(rng, _SAND, m, 0.05)
    y1 = _u(rng, 7, 12, m)
    far = _wave_line(rng, m, y1, _u(rng, 1.5, 3, m), _u(rng, 14, 24, m))
    _paint(img, _below(far), np.clip(sand * 1.08, 0, 1))
    near = _wave_line(rng, m, y1 + _u(rng, 4, 8, m), _u(rng, 1.5, 3, m), _u(rng, 12, 22, m))
    _paint(img, _below(near), sand * 0.88)
    img *= 1 - 0.15 * np.clip((_Y - near) / 8, 0, 1)[..., None]  # shaded dune faces
    on = rng.random(m) < 0.4  # cactus
    cx, cy = _u(rng, 3, 21, m), _u(rng, 16, 20, m)
    a = np.maximum(_aa(_box_sdf(cx, cy, 0.6, 2.5)), _aa(_box_sdf(cx + 1.2, cy - 0.5, 0.5, 1.1)))
    _paint(img, a * _p(on), _jit(rng, [0.2, 0.5, 0.2], m, 0.05))
    return img


def _scene_snowfield(rng, m, sh):
    img, kind = _sky(rng, m, (0, 1, 1, 2, 3))
    line = _wave_line(rng, m, _u(rng, 8, 14, m), _u(rng, 0.3, 1.5, m), _u(rng, 16, 30, m))
    tint = _SKY_BOTTOM[kind] * 0.3 + 0.7
    ground = _vgrad(np.clip(tint * 1.05, 0, 1), np.clip(tint * _F([0.88, 0.92, 1.0]), 0, 1))
    ground -= (_smooth(rng, m, 3) * _F(0.12)) * np.array([1.0, 0.7, 0.2], _F)  # bluish shadows
    a = _below(line)[..., None]
    img = img * (1 - a) + ground * a
    for _ in range(4):  # distant dark pines on the horizon line
        on = rng.random(m) < 0.45
        x = _u(rng, 1, 23, m)
        yb = line[np.arange(m), 0, np.clip(x.astype(np.int64), 0, 23)]
        ap = _u(rng, 0.8, 1.2, m)
        tri = np.maximum(_aa(_poly_sdf(x, yb - 1.0 - 2 * ap, ap, 3, 90)), _aa(_box_sdf(x, yb - 0.5, 0.4, 0.9)))
        _paint(img, tri * _p(on), _jit(rng, [0.15, 0.22, 0.2], m, 0.05))
    flakes = (rng.random((m, _S, _S), dtype=_F) < _p(_u(rng, 0.0, 0.06, m))).astype(_F) * 0.8
    _paint(img, flakes, _WHITE)
    return img


def _scene_ocean(rng, m, sh):
    img, kind = _sky(rng, m)
    _sun(rng, img, m, 0.3, kind, center_y=(2, 5))
    yh = _u(rng, 5, 11, m)
    water = _pick(rng, _WATER, m, 0.06)
    sea = _vgrad(water, water * 0.6)
    a = _below(_p(yh))[..., None]
    img = img * (1 - a) + sea * a
    for _ in range(9):  # white wave crests, longer nearer the viewer
        y = yh + _u(rng, 0.08, 1, m) * (24 - yh)
        hw = 0.4 + (y - yh) / 8 + _u(rng, 0, 1, m)
        crest = _aa(_box_sdf(_u(rng, 0, 24, m), y, hw, 0.35))
        _paint(img, crest * _p(_u(rng, 0.5, 0.9, m)), _jit(rng, [0.85, 0.92, 1.0], m, 0.05))
    on = rng.random(m) < 0.35  # sailing boat on the horizon
    bx = _u(rng, 3, 21, m)
    boat = np.maximum(_aa(_box_sdf(bx, yh - 0.2, 1.4, 0.5)), _aa(_poly_sdf(bx + 0.2, yh - 2.2, 0.6, 3, 90)))
    _paint(img, boat * _p(on), _jit(rng, [0.95, 0.95, 0.95], m, 0.05))
    return img


def _scene_city(rng, m, sh):
    img, kind = _sky(rng, m)
    night = rng.random(m) < 0.25
    dark = _vgrad(_jit(rng, [0.03, 0.04, 0.12], m, 0.02), _jit(rng, [0.12, 0.12, 0.3], m, 0.05))
    img = np.where(night[:, None, None, None], dark, img)
    # building profile: up to 9 buildings across the width
    top_y = np.full((m, _S), 30, _F)
    bcol = np.zeros((m, _S, 3), _F)
    base = _pick(rng, _BUILDING, m, 0.05)
    x = np.full(m, -1.0, _F) - _u(rng, 0, 2, m)
    for _ in range(9):
        w = _u(rng, 2.5, 6, m)
        h = _u(rng, 5, 18, m)
        cols = (np.arange(_S)[None] >= x[:, None]) & (np.arange(_S)[None] < (x + w)[:, None])
        top_y = np.where(cols, 24 - h[:, None], top_y)
        shade = np.clip(base * _u(rng, 0.6, 1.3, m)[:, None], 0, 1)
        bcol = np.where(cols[..., None], shade[:, None, :], bcol)
        x = x + w
    bcol = np.where(night[:, None, None], bcol * 0.25, bcol)
    inb = (_Y[None] >= top_y[:, None, :]).astype(_F)[..., None]
    img = img * (1 - inb) + bcol[:, None, :, :] * inb
    win = ((_X.astype(np.int64) % 2 == 0) & (_Y.astype(np.int64) % 2 == 1))[None] & (_Y[None] > top_y[:, None, :] + 1)
    lit = win & (rng.random((m, _S, _S)) < _p(_u(rng, 0.25, 0.7, m)))
    _paint(img, lit.astype(_F) * 0.85, _jit(rng, [1.0, 0.9, 0.5], m, 0.05))
    return img


def _scene_night(rng, m, sh):
    top = _pick(rng, [[0.02, 0.03, 0.1], [0.0, 0.0, 0.02], [0.08, 0.03, 0.12]], m, 0.02)
    bot = _pick(rng, [[0.08, 0.1, 0.28], [0.05, 0.06, 0.12], [0.2, 0.12, 0.3], [0.25, 0.15, 0.15]], m, 0.04)
    img = _vgrad(top, bot)
    stars = (rng.random((m, _S, _S), dtype=_F) < _p(_u(rng, 0.03, 0.08, m))).astype(_F)
    stars *= rng.uniform(0.5, 1.0, (m, _S, _S)).astype(_F)
    _paint(img, stars, _jit(rng, [0.95, 0.95, 0.85], m, 0.05))
    on = rng.random(m) < 0.7  # moon, often a crescent
    mx, my, mr = _u(rng, 4, 20, m), _u(rng, 3, 10, m), _u(rng, 2, 3.5, m)
    moon = _aa(_circle_sdf(mx, my, mr))
    cres = rng.random(m) < 0.5
    bite = _aa(_circle_sdf(mx + mr * 0.6, my - mr * 0.3, mr)) * _p(cres)
    _paint(img, moon * (1 - bite) * _p(on), _jit(rng, [0.95, 0.92, 0.7], m, 0.04))
    hills = rng.random(m) < 0.6
    line = _wave_line(rng, m, _u(rng, 19, 22, m), _u(rng, 0.5, 2, m), _u(rng, 10, 24, m))
    _paint(img, _below(line) * _p(hills), _jit(rng, [0.02, 0.03, 0.04], m, 0.02))
    return img


def _scene_meadow(rng, m, sh):
    img, kind = _sky(rng, m)
    _sun(rng, img, m, 0.3, kind)
    line = _wave_line(rng, m, _u(rng, 8, 13, m), _u(rng, 0.5, 2, m), _u(rng, 16, 30, m))
    grass = _pick(rng, _GRASS, m, 0.05)
    ground = _vgrad(grass, grass * 0.75)
    a = _below(line)[..., None]
    img = img * (1 - a) + ground * a
    below = _Y[None] > line + 1
    flowers = below & (rng.random((m, _S, _S)) < _p(_u(rng, 0.04, 0.12, m)))
    fcol = np.array([[0.95, 0.2, 0.2], [1.0, 0.9, 0.2], [1.0, 1.0, 1.0], [0.7, 0.4, 0.9]], _F)
    fc = fcol[rng.integers(0, 4, (m, _S, _S))]
    f = flowers[..., None].astype(_F)
    img = img * (1 - f) + fc * f
    on = rng.random(m) < 0.35  # a lone round tree
    tx, ty = _u(rng, 3, 21, m), line[:, 0, 0] - 0.5
    _paint(img, _aa(_box_sdf(tx, ty, 0.5, 1.5)) * _p(on), _jit(rng, [0.35, 0.22, 0.1], m, 0.04))
    _paint(img, _aa(_circle_sdf(tx, ty - 3, 2.2)) * _p(on), _pick(rng, _FOLIAGE, m, 0.05))
    return img


def _scene_mountains(rng, m, sh):
    img, kind = _sky(rng, m)
    ridge = np.full((m, 1, _S), 40, _F)
    peaks = []
    for _ in range(3):
        px, py = _u(rng, -2, 26, m), _u(rng, 3, 11, m)
        slope = _u(rng, 0.8, 1.6, m)
        ridge = np.minimum(ridge, (_p(py) + _p(slope) * np.abs(_X[:1] - _p(px)))[:, :1, :])
        peaks.append(py)
    ridge = np.minimum(ridge, 18)
    _paint(img, _below(ridge), _pick(rng, _ROCK, m, 0.05))
    snowline = np.min(np.stack(peaks, 1), 1) + _u(rng, 2.5, 4.5, m)
    snow = _below(ridge) * _aa(_Y - _p(snowline)) * _p(rng.random(m) < 0.8)
    _paint(img, snow, _jit(rng, [0.96, 0.97, 1.0], m, 0.03))
    line = _wave_line(rng, m, _u(rng, 18, 21, m), _u(rng, 0.3, 1.2, m), _u(rng, 12, 24, m))
    _paint(img, _below(line), _pick(rng, _GRASS + _FOLIAGE[:2], m, 0.05) * 0.8)
    return img


_SCENE_RENDERERS = (_scene_beach, _scene_forest, _scene_desert, _scene_snowfield, _scene_ocean, _scene_city,
                    _scene_night, _scene_meadow, _scene_mountains)


def _posterize(img: np.ndarray, levels: int = 4) -> np.ndarray:
    return np.round(np.clip(img, 0, 1) * (levels - 1)) / _F(levels - 1)


def _photometric(rng, img, gain=0.15, desat=0.4, bright=(0.8, 1.15)) -> np.ndarray:
    """Per-image white balance (channel gains), partial desaturation and exposure."""
    n = len(img)
    g = 1 + rng.uniform(-gain, gain, (n, 3)).astype(_F)
    img = img * g[:, None, None, :]
    grey = _lum(img)[..., None]
    img = grey + (img - grey) * (1 - _u(rng, 0, desat, n))[:, None, None, None]
    return img * _u(rng, *bright, n)[:, None, None, None]


def _render_scenes(rng, labels, shifted):
    n = len(labels)
    img = _by_class(rng, labels, _SCENE_RENDERERS, shifted)
    if shifted:  # flat cartoon look: saturated, posterised, noiseless
        grey = _lum(img)[..., None]
        return _posterize(grey + (img - grey) * 1.5, 4)
    img = _photometric(rng, img)
    return _noise(rng, img, _u(rng, 0.01, 0.04, n))


# --------------------------------------------------------------------------------------------
# landuse (EuroSAT / RESISC45): overhead views
# --------------------------------------------------------------------------------------------

LANDUSE_NAMES = ("river", "highway", "farmland", "residential area", "forest", "lake", "industrial area",
                 "pasture", "parking lot")
_LAND = [[0.33, 0.45, 0.22], [0.25, 0.38, 0.18], [0.45, 0.5, 0.28], [0.5, 0.45, 0.3], [0.38, 0.42, 0.35]]
_CANOPY = [[0.15, 0.35, 0.13], [0.1, 0.25, 0.1], [0.25, 0.4, 0.15], [0.45, 0.35, 0.12], [0.15, 0.3, 0.25]]
_ASPHALT = [[0.42, 0.42, 0.44], [0.3, 0.3, 0.32], [0.55, 0.54, 0.52], [0.45, 0.4, 0.36]]
_LAKE = [[0.1, 0.22, 0.4], [0.08, 0.3, 0.35], [0.2, 0.28, 0.35], [0.05, 0.12, 0.25]]


def _land(rng, m, palette=_LAND, amt=0.05, var=0.12):
    img = _fill(m, _pick(rng, palette, m, amt))
    img += (_smooth(rng, m, 4, 3) - 0.5) * _F(var)
    return img


def _lu_river(rng, m, sh):
    img = _land(rng, m)
    u, v = _rotated(_u(rng, 0, np.pi, m), 12 + _u(rng, -3, 3, m), 12 + _u(rng, -3, 3, m))
    vv = v - _p(_u(rng, 1.5, 4, m)) * np.sin(_TAU * u / _p(_u(rng, 14, 24, m)) + _p(_u(rng, 0, 6.3, m)))
    w = _p(_u(rng, 1.3, 2.6, m))
    _paint(img, _aa(np.abs(vv) - w - 0.8) * 0.6, _jit(rng, [0.45, 0.42, 0.3], m, 0.05))  # banks
    _paint(img, _aa(np.abs(vv) - w), _pick(rng, _LAKE, m, 0.04))
    return img


def _lu_highway(rng, m, sh):
    img = _land(rng, m)
    u, v = _rotated(_u(rng, 0, np.pi, m), 12 + _u(rng, -4, 4, m), 12 + _u(rng, -4, 4, m))
    w = _p(_u(rng, 2.2, 3.4, m))
    _paint(img, _aa(np.abs(v) - w - 0.7), _jit(rng, [0.6, 0.58, 0.52], m, 0.05))  # verge
    _paint(img, _aa(np.abs(v) - w), _pick(rng, _ASPHALT, m, 0.04))
    dash = _aa(np.abs(v) - 0.35) * (((u + _p(_u(rng, 0, 4, m))) % 4) < 2)
    _paint(img, dash * 0.9, _jit(rng, [0.95, 0.95, 0.85], m, 0.05))
    cars = (_aa(np.abs(np.abs(v) - w * 0.5) - 0.45)
            * (rng.random((m, _S, _S)) < 0.08))
    _paint(img, cars, _colors(rng, m, (0.5, 1), (0.6, 1)))
    return img


def _lu_farmland(rng, m, sh):
    img = np.empty((m, _S, _S, 3), _F)
    # split the image into up to four fields by two lines
    u1, _ = _rotated(_u(rng, 0, np.pi, m), 12 + _u(rng, -4, 4, m), 12 + _u(rng, -4, 4, m))
    u2, _ = _rotated(_u(rng, 0, np.pi, m), 12 + _u(rng, -4, 4, m), 12 + _u(rng, -4, 4, m))
    region = (u1 > 0).astype(np.int64) * 2 + (u2 > 0)
    crops = [[0.45, 0.6, 0.2], [0.75, 0.7, 0.35], [0.5, 0.38, 0.22], [0.3, 0.5, 0.18], [0.85, 0.8, 0.5]]
    for r in range(4):
        uu, _ = _rotated(_u(rng, 0, np.pi, m))
        lam = _p(_u(rng, 2.2, 3.5, m))
        rows = np.clip(np.sin(_TAU * uu / lam) * 3 + 0.5, 0, 1)[..., None]
        c1, c2 = _pick(rng, crops, m, 0.06), _pick(rng, crops, m, 0.06)
        c2 = c1 * 0.55 + c2 * 0.15  # darker furrows
        field = c1[:, None, None] * rows + c2[:, None, None] * (1 - rows)
        sel = (region == r)[..., None]
        img = np.where(sel, field, img)
    edge = np.minimum(np.abs(u1), np.abs(u2))
    _paint(img, _aa(edge - 0.4) * 0.8, _jit(rng, [0.35, 0.3, 0.2], m, 0.05))
    return img


def _lu_residential(rng, m, sh):
    img = _land(rng, m, _LAND, 0.05, 0.08)
    u, v = _rotated(_u(rng, -0.3, 0.3, m), _u(rng, 0, 24, m), _u(rng, 0, 24, m))
    sp = _p(_u(rng, 8.5, 10.5, m))
    sw = _F(1.5)
    fu, fv = u % sp, v % sp
    street = np.maximum(np.clip(sw + 0.5 - fu, 0, 1), np.clip(sw + 0.5 - fv, 0, 1))
    _paint(img, street, _jit(rng, [0.58, 0.58, 0.58], m, 0.06))
    # houses: a 2x2 lattice of roofs per block, some lots empty (lawn)
    hs = (sp - sw) / 2
    hu, hv = (fu - sw) % hs, (fv - sw) % hs
    house = (fu > sw) & (fv > sw) & (hu > 0.6) & (hu < hs - 0.6) & (hv > 0.6) & (hv < hs - 0.6)
    iu = np.floor(u / sp).astype(np.int64) * 2 + ((fu - sw) >= hs)
    iv = np.floor(v / sp).astype(np.int64) * 2 + ((fv - sw) >= hs)
    cell = (iu % 16) * 16 + (iv % 16)
    roofs = np.array([[0.72, 0.3, 0.2], [0.55, 0.25, 0.18], [0.62, 0.62, 0.64], [0.82, 0.5, 0.3], [0.4, 0.4, 0.45]], _F)
    table = roofs[rng.integers(0, len(roofs), (m, 256))] * rng.uniform(0.85, 1.15, (m, 256, 1)).astype(_F)
    idx = (np.arange(m)[:, None, None], cell)
    occupied = rng.random((m, 256)) < 0.85
    h = (house & occupied[idx])[..., None]
    return np.where(h, table[idx], img)


def _lu_forest(rng, m, sh):
    canopy = _pick(rng, _CANOPY, m, 0.03)
    img = _fill(m, canopy * 0.45)  # shadowed gaps between crowns
    img += (_smooth(rng, m, 4, 3) - 0.5) * _F(0.08)
    for _ in range(40):  # tree crowns with a lit upper-left side
        x, y, r = _u(rng, -1, 25, m), _u(rng, -1, 25, m), _u(rng, 1.3, 2.4, m)
        col = np.clip(canopy * _u(rng, 0.75, 1.15, m)[:, None] + rng.uniform(-0.04, 0.04, (m, 3)).astype(_F), 0, 1)
        _paint(img, _aa(_circle_sdf(x, y, r)), col)
        _paint(img, _aa(_circle_sdf(x - r * 0.3, y - r * 0.3, r * 0.45)) * 0.6, np.clip(col * 1.45 + 0.03, 0, 1))
    return img


def _lu_lake(rng, m, sh):
    img = _land(rng, m)
    cx, cy, R = 12 + _u(rng, -3, 3, m), 12 + _u(rng, -3, 3, m), _u(rng, 5, 8, m)
    dx, dy = _X - _p(cx), _Y - _p(cy)
    ang = np.arctan2(dy, dx)
    rr = _p(R) * (1 + 0.15 * np.sin(2 * ang + _p(_u(rng, 0, 6.3, m))) + 0.1 * np.sin(3 * ang + _p(_u(rng, 0, 6.3, m))))
    d = np.sqrt(dx * dx + dy * dy) - rr
    _paint(img, _aa(d - 0.8) * 0.6, _jit(rng, [0.5, 0.48, 0.35], m, 0.05))
    _paint(img, _aa(d), _pick(rng, _LAKE, m, 0.04))
    return img


def _lu_industrial(rng, m, sh):
    img = _land(rng, m, _ASPHALT + [[0.5, 0.48, 0.42]], 0.05, 0.1)
    th = _u(rng, 0, np.pi / 2, m)
    for _ in range(4):
        on = rng.random(m) < 0.8
        cx, cy = _u(rng, 2, 22, m), _u(rng, 2, 22, m)
        hw, hh = _u(rng, 2.5, 5, m), _u(rng, 2, 4, m)
        _paint(img, _aa(_box_sdf(cx + 0.8, cy + 0.8, hw, hh, th)) * _p(on * 0.6), _BLACK)  # shadow
        _paint(img, _aa(_box_sdf(cx, cy, hw, hh, th)) * _p(on), _pick(rng, [[0.85, 0.85, 0.85], [0.7, 0.72, 0.75],
                                                                            [0.55, 0.65, 0.75], [0.9, 0.9, 0.88]], m, 0.05))
    for _ in range(2):  # storage tanks
        on = rng.random(m) < 0.4
        _paint(img, _aa(_circle_sdf(_u(rng, 2, 22, m), _u(rng, 2, 22, m), _u(rng, 1.5, 2.5, m))) * _p(on),
               _jit(rng, [0.92, 0.92, 0.9], m, 0.04))
    return img


def _lu_pasture(rng, m, sh):
    img = _land(rng, m, [[0.5, 0.65, 0.3], [0.6, 0.6, 0.35], [0.42, 0.55, 0.27], [0.55, 0.5, 0.32]], 0.05, 0.08)
    on = rng.random(m) < 0.5  # a hedge line
    u, v = _rotated(_u(rng, 0, np.pi, m), _u(rng, 4, 20, m), _u(rng, 4, 20, m))
    _paint(img, _aa(np.abs(v) - 0.45) * _p(on), _jit(rng, [0.2, 0.33, 0.15], m, 0.04))
    for _ in range(3):  # isolated trees
        t = rng.random(m) < 0.4
        _paint(img, _aa(_circle_sdf(_u(rng, 1, 23, m), _u(rng, 1, 23, m), _u(rng, 0.9, 1.4, m))) * _p(t),
               _jit(rng, [0.15, 0.3, 0.12], m, 0.04))
    return img


def _lu_parking(rng, m, sh):
    img = _land(rng, m, _ASPHALT, 0.04, 0.06)
    u, v = _rotated(_u(rng, -0.35, 0.35, m) + _F(np.pi / 2) * rng.integers(0, 2, m), _u(rng, 0, 24, m),
                    _u(rng, 0, 24, m))
    su, sv = _p(_u(rng, 3.0, 3.6, m)), _p(_u(rng, 7.5, 8.5, m))
    fu, fv = u % su, v % sv
    lines = (fu < 0.45) & (fv < sv * 0.55)  # bay markings; the rest of each row period is the aisle
    _paint(img, lines.astype(_F) * 0.7, _WHITE)
    car = (fu > 0.8) & (fu < su - 0.4) & (fv > 0.5) & (fv < sv * 0.5)
    cell = (np.floor(u / su).astype(np.int64) % 16) * 16 + (np.floor(v / sv).astype(np.int64) % 16)
    table = _colors(rng, m * 256, (0.0, 1.0), (0.25, 1.0)).reshape(m, 256, 3)
    occ = rng.random((m, 256)) < _u(rng, 0.5, 0.95, m)[:, None]
    idx = (np.arange(m)[:, None, None], cell)
    c = (car & occ[idx])[..., None]
    return np.where(c, table[idx], img)


_LANDUSE_RENDERERS = (_lu_river, _lu_highway, _lu_farmland, _lu_residential, _lu_forest, _lu_lake,
                      _lu_industrial, _lu_pasture, _lu_parking)


def _render_landuse(rng, labels, shifted):
    n = len(labels)
    img = _by_class(rng, labels, _LANDUSE_RENDERERS, shifted)
    if shifted:  # other sensor: desaturated, brighter, hazy, noiseless
        grey = _lum(img)[..., None]
        return 0.15 + 0.85 * (grey + (img - grey) * 0.45) * 1.1
    img = _photometric(rng, img, gain=0.12, desat=0.3, bright=(0.85, 1.15))
    return _noise(rng, img, _u(rng, 0.01, 0.04, n))


# --------------------------------------------------------------------------------------------
# counting (CLEVR-Count) and positions
# --------------------------------------------------------------------------------------------

COUNT_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight")
POSITION_NAMES = ("top left", "top center", "top right", "middle left", "center", "middle right",
                  "bottom left", "bottom center", "bottom right")


def _object_alpha(kind, cx, cy, r) -> np.ndarray:
    """kind per image: 0 circle, 1 square, 2 triangle, 3 diamond."""
    kind = np.asarray(kind)
    d = np.where(_p(kind == 0), _circle_sdf(cx, cy, r), _poly_sdf(cx, cy, r * 0.85, 4))
    tri = kind == 2
    if tri.any():
        d = np.where(_p(tri), _poly_sdf(cx, cy + r * 0.2, r * 0.6, 3, 90), d)
    dia = kind == 3
    if dia.any():
        d = np.where(_p(dia), _poly_sdf(cx, cy, r * 0.8, 4, 45), d)
    return _aa(d)


def _plain_background(rng, n, shifted):
    if shifted:
        return _fill(n, _jit(rng, [0.95, 0.95, 0.95], n, 0.03))
    c1 = _colors(rng, n, (0.0, 0.6), (0.05, 0.95))
    c2 = np.clip(c1 + rng.uniform(-0.15, 0.15, (n, 3)).astype(_F), 0, 1)
    img = _vgrad(c1, c2)
    img += (_smooth(rng, n, 3, 1) - 0.5) * _F(0.15)
    return img


def _render_counting(rng, labels, shifted):
    n = len(labels)
    k = labels + 1
    img = _plain_background(rng, n, shifted)
    bg = img.mean(axis=(1, 2))
    cells = np.argsort(rng.random((n, 16)), axis=1)  # 4x4 grid of 6 px cells, first k are used
    kind0 = rng.integers(0, 2, n)
    col0 = _contrasting(rng, bg, 0.4, sat=(0.5, 1.0))
    for j in range(8):
        on = j < k
        cx = (cells[:, j] % 4) * 6 + 3 + _u(rng, -0.7, 0.7, n)
        cy = (cells[:, j] // 4) * 6 + 3 + _u(rng, -0.7, 0.7, n)
        if shifted:
            a = _aa(_circle_sdf(cx, cy, np.full(n, 2.3, _F)))
            col = np.broadcast_to(_F([0.1, 0.1, 0.7]), (n, 3))
        else:
            r = _u(rng, 1.7, 2.3, n)
            same = rng.random(n) < 0.5  # half the images: all objects alike, else mixed shapes/colours
            a = _object_alpha(np.where(same, kind0, rng.integers(0, 2, n)), cx, cy, r)
            col = np.where(same[:, None], col0, _contrasting(rng, bg, 0.4, sat=(0.5, 1.0)))
        _paint(img, a * _p(on), col)
    return _noise(rng, img, 0.01 if shifted else _u(rng, 0.01, 0.04, n))


def _render_positions(rng, labels, shifted):
    n = len(labels)
    img = _plain_background(rng, n, shifted)
    bg = img.mean(axis=(1, 2))
    jit = 0.5 if shifted else 1.6
    cx = (labels % 3) * 8 + 4 + _u(rng, -jit, jit, n)
    cy = (labels // 3) * 8 + 4 + _u(rng, -jit, jit, n)
    if shifted:
        a = _aa(_circle_sdf(cx, cy, np.full(n, 2.5, _F)))
        col = np.broadcast_to(_F([0.8, 0.1, 0.1]), (n, 3))
    else:
        r = _u(rng, 2.0, 3.3, n)
        a = _object_alpha(rng.integers(0, 4, n), cx, cy, r)
        col = _contrasting(rng, bg, 0.4, sat=(0.4, 1.0))
    _paint(img, a, col)
    return _noise(rng, img, 0.01 if shifted else _u(rng, 0.01, 0.04, n))


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------

_RENDERERS: dict[str, Callable[[np.random.Generator, np.ndarray, bool], np.ndarray]] = {
    "street_digits": _render_street_digits,
    "letters": _render_letters,
    "signs": _render_signs,
    "textures": _render_textures,
    "scenes": _render_scenes,
    "landuse": _render_landuse,
    "counting": _render_counting,
    "positions": _render_positions,
}

TASKS: dict[str, DemoTask] = {
    t.name: t
    for t in (
        DemoTask("digits", "MNIST", DIGIT_WORDS, (
            'a photo of the number: "{}".',
            "a handwritten digit {}.",
            "an image of the digit {}.",
        )),
        DemoTask("street_digits", "SVHN", DIGIT_WORDS, (
            'a photo of the house number: "{}".',
            "a street sign with the digit {}.",
            "a house number {}.",
        )),
        DemoTask("letters", "EMNIST", tuple(LETTERS), (
            'a photo of the letter: "{}".',
            "the letter {}.",
            "a character {}.",
        )),
        DemoTask("signs", "GTSRB", SIGN_NAMES, (
            'a zoomed in photo of a "{}" traffic sign.',
            'a centered photo of a "{}" traffic sign.',
            'a close up photo of a "{}" traffic sign.',
        )),
        DemoTask("textures", "DTD", TEXTURE_NAMES, (
            "a photo of a {} texture.",
            "a photo of a {} pattern.",
            "a photo of a {} thing.",
            "a photo of a {} object.",
        )),
        DemoTask("scenes", "SUN397", SCENE_NAMES, (
            "a photo of a {}.",
            "a photo of the {}.",
            "a view of a {}.",
        )),
        DemoTask("landuse", "EuroSAT", LANDUSE_NAMES, (
            "a centered satellite photo of {}.",
            "a centered satellite photo of a {}.",
            "a centered satellite photo of the {}.",
        )),
        DemoTask("counting", "CLEVR-Count", COUNT_WORDS, (
            "a photo of {} objects.",
            "there are {} objects in the image.",
            "a rendering of {} shapes.",
        )),
        DemoTask("positions", "spatial (CLEVR-style)", POSITION_NAMES, (
            "a photo of an object in the {} of the image.",
            "a shape at the {}.",
            "the object is at the {}.",
        )),
    )
}

# The pretraining corpus's caption templates and the other name of every class (see captions.json).
_CAPTIONS = json.loads(Path(__file__).with_name("captions.json").read_text())
CORPUS_TEMPLATES: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _CAPTIONS["templates"].items()}
OTHER_NAMES: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _CAPTIONS["other_names"].items()}


def partner_class(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """The class each label is paired with for caption confusions: 0-1, 2-3, ...; with an odd count
    the last class pairs with the one before it (which keeps its own partner)."""
    partner = labels ^ 1
    return np.where(partner >= n_classes, labels - 1, partner)


def corpus(n: int, seed: int = 0, unshifted_fraction: float = 0.0,
           name_rate: float | dict[str, float] = 1.0, unnamed: tuple[str, ...] = (),
           confusion: float = 0.0) -> tuple[np.ndarray, list[str]]:
    """The contrastive pretraining corpus: n image-caption pairs, mixed evenly over TASKS.

    Images come from each task's split="train": a share `unshifted_fraction` in the task's own
    domain, the rest with shifted=True; each caption puts a name of the class into one of
    CORPUS_TEMPLATES[task] (phrasing that differs from the tasks' zero-shot templates). Captions of
    shifted images use the class's own word; captions of in-domain images use it with probability
    `name_rate` (one number, or one per task), else OTHER_NAMES[task]. So the prompts' words can be
    learned mostly on images that look unlike the task's own, as web captions name things on other
    photos than a benchmark's. Class words listed in `unnamed` never appear at all. With probability
    `confusion` a caption names the class's partner instead (classes paired in order, 0-1, 2-3, ...;
    an odd last class joins the pair before it): captions that mix up similar things leave the prompt
    words pointing between two classes, so zero-shot confuses them while the features still separate them.
    The pairs are shuffled; deterministic in (n, seed). Returns uint8 [n, 24, 24, 3] and n strings.
    """
    n = int(n)
    if n < 0:
        raise ValueError("n must be >= 0")
    names = list(TASKS)
    counts = [n // len(names) + (i < n % len(names)) for i in range(len(names))]
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"tvexplorer.demo|corpus|{int(seed)}".encode())
                                               .digest()[:8], "little"))
    images, captions = [], []
    for name, k in zip(names, counts):
        task = TASKS[name]
        # a share of in-domain images gives the encoder usable features; the shifted rest keeps
        # zero-shot transfer partial (seed + 1: distinct from the tasks' own training draws)
        k_in = int(round(k * unshifted_fraction))
        img, lab = task.sample("train", k - k_in, seed=seed, shifted=True)
        if k_in:
            img_in, lab_in = task.sample("train", k_in, seed=seed + 1)
            img, lab = np.concatenate([img, img_in]), np.concatenate([lab, lab_in])
        tpl = CORPUS_TEMPLATES[name]
        which = rng.integers(0, len(tpl), k)
        rate = name_rate[name] if isinstance(name_rate, dict) else name_rate
        shifted = np.arange(k) < k - k_in
        own = ((rng.random(k) < rate) | shifted) & ~np.isin(lab, [c for c, w in enumerate(task.classnames) if w in unnamed])
        named = np.where(rng.random(k) < confusion, partner_class(lab, len(task.classnames)), lab)
        images.append(img)
        captions += [tpl[w].format((task.classnames if o else OTHER_NAMES[name])[c]) for w, c, o in zip(which, named, own)]
    order = rng.permutation(n)
    allimg = np.concatenate(images, 0) if images else np.zeros((0, _S, _S, 3), np.uint8)
    return allimg[order], [captions[i] for i in order]
