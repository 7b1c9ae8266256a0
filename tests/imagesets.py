"""Small image sets on disk for the add-task tests: a synthetic 4-class task that the demo model can
learn, and damaged or hostile variants of it."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

# Each class is a disc of one colour at a random place on a noisy grey background: learnable from a
# few dozen images by the demo's 24x24 model, and named with words its captions never used.
CLASSES = {"ruby_disc": (220, 40, 40), "jade_disc": (40, 200, 60), "azure_disc": (40, 80, 230), "amber_disc": (235, 200, 30)}


def disc_image(rng: np.random.Generator, colour, size: int = 32) -> Image.Image:
    image = rng.normal(128, 30, (size, size, 3))
    cy, cx = rng.uniform(8, size - 8, 2)
    r = rng.uniform(5, 9)
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    image[inside] = np.array(colour) + rng.normal(0, 15, (inside.sum(), 3))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def make_image_set(root: Path, n_train: int = 40, n_test: int = 10, split: bool = True, seed: int = 0,
                   classes: dict | None = None) -> Path:
    """root/train/<class>/*.png and root/test/<class>/*.png (or root/<class>/*.png when not split)."""
    rng = np.random.default_rng(seed)
    for name, colour in (classes or CLASSES).items():
        for part, n in ((("train", n_train), ("test", n_test)) if split else (("", n_train + n_test),)):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                disc_image(rng, colour).save(folder / f"{i:03d}.png")
    return root


def zip_folder(folder: Path, out: Path, wrap: str | None = None) -> Path:
    """out.zip of every file under folder (inside one wrapping folder `wrap` when given)."""
    with zipfile.ZipFile(out, "w") as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                rel = path.relative_to(folder).as_posix()
                z.write(path, f"{wrap}/{rel}" if wrap else rel)
    return out
