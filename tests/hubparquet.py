"""Small Hugging Face datasets in the hub's own repository layout, written with the `datasets` library:
parquet shards under data/ (or under a configuration's folder, named in README.md's front matter, as
ufldl-stanford/svhn's cropped_digits is), with the features (Image, ClassLabel) stored in the files."""
from pathlib import Path

import datasets
import numpy as np


def use_private_datasets_cache(monkeypatch, tmp_path):
    """Keep the Arrow files `datasets` makes from local parquet in the test's own folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


def write(repo: Path, splits: dict, classnames=None, config=None, columns=("image", "label"), label_type="int64"):
    """splits: {hub split name: (uint8 images [N, H, W(, 3)], labels)}. The label column is a ClassLabel
    when classnames are given, else plain values of label_type (FER2013's webdataset copy, PCAM's bools)."""
    image, label = columns
    label_feature = datasets.ClassLabel(names=list(classnames)) if classnames else datasets.Value(label_type)
    features = datasets.Features({image: datasets.Image(), label: label_feature})
    folder = repo / (config or "data")
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in splits.items():
        table = datasets.Dataset.from_dict({image: list(np.asarray(images)), label: list(labels)}, features=features)
        table.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    if config:
        files = "".join(f"  - split: {s}\n    path: {config}/{s}-*\n" for s in splits)
        (repo / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n{files}---\n")
    return repo


def digit_images(n: int, offset: int) -> np.ndarray:
    """Image i is uniformly offset + 7 * i (mod 256), 28 x 28 grey."""
    values = (offset + 7 * np.arange(n)) % 256
    return np.broadcast_to(values[:, None, None], (n, 28, 28)).astype(np.uint8)


def digits(repo: Path, n_train: int, n_test: int, config=None) -> dict:
    """A 10-class digit dataset (MNIST's or SVHN's layout); labels i % 10."""
    splits = {"train": (digit_images(n_train, 3), [i % 10 for i in range(n_train)]),
              "test": (digit_images(n_test, 200), [i % 10 for i in range(n_test)])}
    write(repo, splits, classnames=[str(d) for d in range(10)], config=config)
    return splits
