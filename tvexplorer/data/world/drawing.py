"""The demo world's vectorised drawing toolkit. Images are float32 [n, 24, 24, 3] in [0, 1]; per-image
parameters are 1-D arrays of length n; masks and coverages are [n, 24, 24]. Shapes are drawn from signed
distances (negative inside), anti-aliased to about a pixel."""
from __future__ import annotations

import numpy as np

IMAGE_SIZE = 24

FLOAT = np.float32
# pixel-centre coordinates, [24, 24]
PIXEL_Y, PIXEL_X = (np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(FLOAT) + FLOAT(0.5))
TAU = FLOAT(2 * np.pi)
WHITE = np.array([1.0, 1.0, 1.0], FLOAT)
BLACK = np.array([0.0, 0.0, 0.0], FLOAT)


def per_image(a) -> np.ndarray:
    """A per-image parameter (scalar or [n]) reshaped to broadcast against [n, 24, 24]."""
    return np.asarray(a, FLOAT).reshape(-1, 1, 1)


def uniform(rng: np.random.Generator, lo, hi, n: int) -> np.ndarray:
    return rng.uniform(lo, hi, n).astype(FLOAT)


def coverage(d: np.ndarray, soft: float = 1.0) -> np.ndarray:
    """Signed distance (negative inside) -> anti-aliased coverage in [0, 1]."""
    return np.clip(FLOAT(0.5) - d / FLOAT(soft), 0, 1)


def circle_distance(cx, cy, r) -> np.ndarray:
    return np.sqrt((PIXEL_X - per_image(cx)) ** 2 + (PIXEL_Y - per_image(cy)) ** 2) - per_image(r)


def polygon_distance(cx, cy, apothem, sides: int, rot_deg=0.0) -> np.ndarray:
    """Regular convex polygon: max over edge normals at rot + 360*i/sides degrees (y points down)."""
    dx, dy = PIXEL_X - per_image(cx), PIXEL_Y - per_image(cy)
    rot = np.asarray(rot_deg, FLOAT)
    d = None
    for i in range(sides):
        ang = np.deg2rad(rot + FLOAT(360.0 * i / sides))
        di = dx * per_image(np.cos(ang)) + dy * per_image(np.sin(ang))
        d = di if d is None else np.maximum(d, di)
    return d - per_image(apothem)


def box_distance(cx, cy, hw, hh, angle=0.0) -> np.ndarray:
    """Rectangle of half-width hw (along the rotated x axis) and half-height hh; angle in radians."""
    dx, dy = PIXEL_X - per_image(cx), PIXEL_Y - per_image(cy)
    c, s = per_image(np.cos(angle)), per_image(np.sin(angle))
    lx = dx * c + dy * s
    ly = -dx * s + dy * c
    return np.maximum(np.abs(lx) - per_image(hw), np.abs(ly) - per_image(hh))


def rotated_coordinates(angle, cx=12.0, cy=12.0) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u along the direction `angle`, v across it) relative to (cx, cy)."""
    dx, dy = PIXEL_X - per_image(cx), PIXEL_Y - per_image(cy)
    c, s = per_image(np.cos(angle)), per_image(np.sin(angle))
    return dx * c + dy * s, -dx * s + dy * c


def paint(img: np.ndarray, alpha: np.ndarray, color) -> None:
    """In place: img <- img * (1 - alpha) + color * alpha. color is [3] or [n, 3]."""
    a = alpha[..., None]
    col = np.asarray(color, FLOAT)
    col = col[None, None, None, :] if col.ndim == 1 else col[:, None, None, :]
    d = col - img
    d *= a
    img += d


def filled(n: int, color) -> np.ndarray:
    col = np.asarray(color, FLOAT)
    col = np.broadcast_to(col, (n, 3)) if col.ndim == 1 else col
    return np.broadcast_to(col[:, None, None, :], (n, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(FLOAT, copy=True)


def vertical_gradient(top, bottom, y0: float = 0.0, y1: float = float(IMAGE_SIZE)) -> np.ndarray:
    """Vertical gradient from colour `top` ([n, 3]) at y0 to `bottom` at y1."""
    t = np.clip((PIXEL_Y - y0) / (y1 - y0), 0, 1)[None, :, :, None]
    top, bottom = np.asarray(top, FLOAT)[:, None, None, :], np.asarray(bottom, FLOAT)[:, None, None, :]
    return (top * (1 - t) + bottom * t).astype(FLOAT)


def hsv_to_rgb(h, s, v) -> np.ndarray:
    """Vectorised HSV -> RGB, [n] each -> [n, 3]."""
    h = (np.asarray(h, FLOAT) % 1.0) * 6
    s, v = np.asarray(s, FLOAT), np.asarray(v, FLOAT)
    i = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], -1).astype(FLOAT)


def luminance(c: np.ndarray) -> np.ndarray:
    return c[..., 0] * 0.299 + c[..., 1] * 0.587 + c[..., 2] * 0.114


def random_colors(rng, n, sat=(0.0, 1.0), val=(0.0, 1.0), hue=(0.0, 1.0)) -> np.ndarray:
    return hsv_to_rgb(rng.uniform(*hue, n), rng.uniform(*sat, n), rng.uniform(*val, n))


def contrasting_pair(rng, n, min_diff=0.35, sat=(0.0, 1.0), val=(0.0, 1.0), hue=(0.0, 1.0)):
    """(fg, bg) random colours [n, 3] whose luminances differ by at least min_diff."""
    fg = random_colors(rng, n, sat, val, hue)
    bg = random_colors(rng, n, sat, val, hue)
    for _ in range(200):
        bad = np.abs(luminance(fg) - luminance(bg)) < min_diff
        k = int(bad.sum())
        if k == 0:
            break
        fg[bad] = random_colors(rng, k, sat, val, hue)
        bg[bad] = random_colors(rng, k, sat, val, hue)
    return fg, bg


def contrasting_colors(rng, ref: np.ndarray, min_diff=0.4, sat=(0.0, 1.0), val=(0.0, 1.0)) -> np.ndarray:
    """Random colours [n, 3] whose luminance differs from that of `ref` ([n, 3]) by >= min_diff."""
    n = len(ref)
    out = random_colors(rng, n, sat, val)
    lr = luminance(ref)
    for _ in range(200):
        bad = np.abs(luminance(out) - lr) < min_diff
        k = int(bad.sum())
        if k == 0:
            break
        out[bad] = random_colors(rng, k, sat, val)
    # extreme refs (mid-grey with a large min_diff) may never succeed: fall back to black / white
    bad = np.abs(luminance(out) - lr) < min_diff
    out[bad] = np.where((lr[bad] > 0.5)[:, None], BLACK, WHITE)
    return out


def jittered(rng, base, n, amt) -> np.ndarray:
    """Colour `base` plus uniform per-channel jitter, [n, 3]."""
    return np.clip(np.asarray(base, FLOAT)[None] + rng.uniform(-amt, amt, (n, 3)).astype(FLOAT), 0, 1)


def pick_from_palette(rng, palette, n, amt=0.0) -> np.ndarray:
    """One of the colours in `palette` per image, with jitter."""
    pal = np.asarray(palette, FLOAT)
    out = pal[rng.integers(0, len(pal), n)]
    if amt:
        out = np.clip(out + rng.uniform(-amt, amt, (n, 3)).astype(FLOAT), 0, 1)
    return out


def smooth_noise(rng, n: int, cells: int, ch: int = 1) -> np.ndarray:
    """Smooth value noise in [0, 1]: a (cells+1)^2 random grid, smoothstep-interpolated. [n, 24, 24, ch]."""
    g = rng.random((n, cells + 1, cells + 1, ch), dtype=FLOAT)
    t = (np.arange(IMAGE_SIZE, dtype=FLOAT) + 0.5) / IMAGE_SIZE * cells
    i0 = np.minimum(t.astype(np.int64), cells - 1)
    f = t - i0
    f = f * f * (3 - 2 * f)
    a = g[:, i0] * (1 - f)[None, :, None, None] + g[:, i0 + 1] * f[None, :, None, None]
    return a[:, :, i0] * (1 - f)[None, None, :, None] + a[:, :, i0 + 1] * f[None, None, :, None]


def with_noise(rng, img: np.ndarray, sigma) -> np.ndarray:
    sig = np.asarray(sigma, FLOAT).reshape(-1, 1, 1, 1)
    return img + rng.standard_normal(img.shape, dtype=FLOAT) * sig


def box_blur(img: np.ndarray) -> np.ndarray:
    """3x3 box blur with edge replication, [n, 24, 24, c]."""
    p = np.pad(img, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    v = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
    return (v[:, :, :-2] + v[:, :, 1:-1] + v[:, :, 2:]) / FLOAT(9)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def render_by_class(rng, labels: np.ndarray, renderers, shifted: bool) -> np.ndarray:
    """Render each class with its own function fn(rng, m, shifted) -> [m, 24, 24, 3]."""
    img = np.empty((len(labels), IMAGE_SIZE, IMAGE_SIZE, 3), FLOAT)
    for c, fn in enumerate(renderers):
        m = labels == c
        k = int(m.sum())
        if k:
            img[m] = fn(rng, k, shifted)
    return img


def photometric_jitter(rng, img, gain=0.15, desat=0.4, bright=(0.8, 1.15)) -> np.ndarray:
    """Per-image white balance (channel gains), partial desaturation and exposure."""
    n = len(img)
    g = 1 + rng.uniform(-gain, gain, (n, 3)).astype(FLOAT)
    img = img * g[:, None, None, :]
    grey = luminance(img)[..., None]
    img = grey + (img - grey) * (1 - uniform(rng, 0, desat, n))[:, None, None, None]
    return img * uniform(rng, *bright, n)[:, None, None, None]
