"""The rest of the real on-disk formats torchvision reads (the others are in test_datasets.py): Stanford
Cars (.mat annotations), Flowers102 (.mat labels and split ids), Oxford-IIIT Pet (annotation lists),
STL10 (binary planes), Rendered SST2 (class folders) and PCAM (HDF5), each as a few small files in the
real layout, read through the benchmark source."""
import h5py
import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets as tvd

from test_datasets import benchmark, everything, md5, save_image, solid

RNG = np.random.default_rng(1)


def test_stanford_cars_reads_mat_annotations_and_class_names(tmp_path):
    base = tmp_path / "stanford_cars"
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi_TT Coupe 2012"]
    rows = {"train": [("00001.jpg", 1), ("00002.jpg", 3), ("00003.jpg", 2), ("00004.jpg", 1)],
            "test": [("00001.jpg", 3), ("00002.jpg", 1)]}
    for split, annotations in rows.items():
        for i, (file, _) in enumerate(annotations):
            save_image(base / f"cars_{split}" / file, solid(40 * i + (5 if split == "test" else 0)), quality=100)
        table = np.zeros(len(annotations), dtype=[("fname", "O"), ("class", "O")])
        table["fname"] = [f for f, _ in annotations]
        table["class"] = [c for _, c in annotations]  # 1-based, as the devkit stores them
        mat = base / ("devkit/cars_train_annos.mat" if split == "train" else "cars_test_annos_withlabels.mat")
        mat.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(mat, {"annotations": table})
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(names, dtype=object)})
    task = benchmark("Cars", tmp_path, 8)
    assert list(task.classnames) == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi TT Coupe 2012"]
    assert (len(task.train) + len(task.val), len(task.test)) == (4, 2) and len(task.templates) == 8
    test = task.test.take()
    assert test.labels.tolist() == [2, 0] and (test.images[:, 0, 0, 0].int() - torch.tensor([5, 45])).abs().max() <= 2
    (_, labels), _ = everything(task)
    assert sorted(labels.tolist()) == [0, 0, 1, 2]


def test_flowers102_reads_labels_and_split_ids(tmp_path, monkeypatch):
    base = tmp_path / "flowers-102"
    labels = [1, 2, 102, 1, 2, 50]  # image i+1 has label labels[i] (1-based)
    for i in range(len(labels)):
        save_image(base / "jpg" / f"image_{i + 1:05d}.jpg", solid(30 * i), quality=100)
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array([labels])})
    scipy.io.savemat(base / "setid.mat", {"trnid": np.array([[1, 2, 3]]), "valid": np.array([[4, 5]]), "tstid": np.array([[6, 3]])})
    monkeypatch.setattr(tvd.Flowers102, "_file_dict", {**tvd.Flowers102._file_dict,
                                                       "label": ("imagelabels.mat", md5(base / "imagelabels.mat")),
                                                       "setid": ("setid.mat", md5(base / "setid.mat"))})
    task = benchmark("Flowers102", tmp_path, 8)
    assert len(task.classnames) == 102 and task.classnames[0] == "pink primrose"
    # the official training split only (trnid): the paper's validation ids (valid) are not in the pool
    assert (len(task.train) + len(task.val), len(task.test)) == (3, 2)
    test = task.test.take()
    assert test.labels.tolist() == [49, 101] and (test.images[:, 0, 0, 0].int() - torch.tensor([150, 60])).abs().max() <= 2


def test_oxford_pets_reads_the_annotation_lists(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    lists = {"trainval": ["Abyssinian_1 1 1 1", "american_bulldog_10 2 2 1", "Abyssinian_2 1 1 1", "yorkshire_terrier_3 3 2 25"],
             "test": ["american_bulldog_11 2 2 1", "yorkshire_terrier_4 3 2 25"]}
    for split, lines in lists.items():
        for i, line in enumerate(lines):
            save_image(base / "images" / f"{line.split()[0]}.jpg", solid(60 * i), quality=100)
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    task = benchmark("OxfordIIITPet", tmp_path, 8)
    # torchvision names the classes from the file names, in label order
    assert list(task.classnames) == ["Abyssinian", "American Bulldog", "Yorkshire Terrier"]
    assert (len(task.train) + len(task.val), len(task.test)) == (4, 2)
    test = task.test.take()
    assert test.labels.tolist() == [1, 2] and (test.images[:, 0, 0, 0].int() - torch.tensor([0, 60])).abs().max() <= 2


def test_stl10_reads_column_major_binary_planes(tmp_path, monkeypatch):
    base = tmp_path / "stl10_binary"
    base.mkdir()
    images = {"train": RNG.integers(0, 256, (5, 96, 96, 3), dtype=np.uint8), "test": RNG.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)}
    labels = {"train": [1, 2, 10, 1, 3], "test": [10, 1, 2]}  # 1-based
    for split in images:
        # each image is stored as three 96x96 planes, each plane column by column
        (base / f"{split}_X.bin").write_bytes(images[split].transpose(0, 3, 2, 1).tobytes())
        (base / f"{split}_y.bin").write_bytes(np.array(labels[split], np.uint8).tobytes())
    (base / "unlabeled_X.bin").write_bytes(b"")
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (base / "class_names.txt").write_text("\n".join(names) + "\n")
    monkeypatch.setattr(tvd.STL10, "train_list", [[f, md5(base / f)] for f in ("train_X.bin", "train_y.bin", "unlabeled_X.bin")])
    monkeypatch.setattr(tvd.STL10, "test_list", [[f, md5(base / f)] for f in ("test_X.bin", "test_y.bin")])
    task = benchmark("STL10", tmp_path, 96)
    assert list(task.classnames) == names
    assert (len(task.train) + len(task.val), len(task.test)) == (5, 3)
    test = task.test.take()
    assert test.labels.tolist() == [9, 0, 1] and torch.equal(test.images, torch.from_numpy(images["test"]))


def test_rendered_sst2_reads_class_folders(tmp_path):
    base = tmp_path / "rendered-sst2"
    for split, counts in (("train", (3, 2)), ("test", (1, 2))):
        for label, (name, n) in enumerate(zip(("negative", "positive"), counts)):
            for i in range(n):
                save_image(base / split / name / f"{i}.png", solid(100 * label + i))
    task = benchmark("RenderedSST2", tmp_path, 8)
    assert list(task.classnames) == ["negative", "positive"]
    assert (len(task.train) + len(task.val), len(task.test)) == (5, 3)
    test = task.test.take()
    assert test.labels.tolist() == [0, 1, 1] and test.images[:, 0, 0, 0].tolist() == [0, 100, 101]


def write_pcam(base, split, images, labels):
    base.mkdir(parents=True, exist_ok=True)
    with h5py.File(base / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
        f["x"] = images
    with h5py.File(base / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
        f["y"] = np.array(labels, np.uint8).reshape(-1, 1, 1, 1)


def test_pcam_reads_hdf5_patches_and_labels(tmp_path):
    patches = {"train": RNG.integers(0, 256, (6, 96, 96, 3), dtype=np.uint8), "test": RNG.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)}
    write_pcam(tmp_path / "pcam", "train", patches["train"], [0, 1, 1, 0, 1, 0])
    write_pcam(tmp_path / "pcam", "test", patches["test"], [1, 0, 1])
    task = benchmark("PCAM", tmp_path, 96)
    assert task.classnames == ("lymph node", "lymph node containing metastatic tumor tissue")
    assert (len(task.train) + len(task.val), len(task.test)) == (6, 3)
    test = task.test.take()
    assert test.labels.tolist() == [1, 0, 1] and torch.equal(test.images, torch.from_numpy(patches["test"]))
    (images, labels), _ = everything(task)
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_pcam_without_h5py_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "h5py" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="PCAM needs the h5py package: pip install h5py"):
        benchmark("PCAM", tmp_path, 96)
