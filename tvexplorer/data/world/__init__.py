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

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .characters import DIGIT_WORDS, LETTERS, render_letters, render_street_digits, sample_sk_digits, sk_digits_split
from .drawing import IMAGE_SIZE, to_uint8
from .landuse import LANDUSE_NAMES, render_landuse
from .objects import COUNT_WORDS, POSITION_NAMES, render_counting, render_positions
from .scenes import SCENE_NAMES, render_scenes
from .signs import SIGN_NAMES, render_signs
from .textures import TEXTURE_NAMES, render_textures


def _task_random_generator(name: str, split: str, seed: int, shifted: bool) -> np.random.Generator:
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
        rng = _task_random_generator(self.name, split, seed, shifted)
        if self.name == "digits":
            return sample_sk_digits(rng, split, n, shifted)
        labels = rng.permutation(np.arange(n, dtype=np.int64) % len(self.classnames))
        img = _RENDERERS[self.name](rng, labels, shifted)
        return to_uint8(img), labels


_RENDERERS: dict[str, Callable[[np.random.Generator, np.ndarray, bool], np.ndarray]] = {
    "street_digits": render_street_digits,
    "letters": render_letters,
    "signs": render_signs,
    "textures": render_textures,
    "scenes": render_scenes,
    "landuse": render_landuse,
    "counting": render_counting,
    "positions": render_positions,
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
    allimg = np.concatenate(images, 0) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    return allimg[order], [captions[i] for i in order]
