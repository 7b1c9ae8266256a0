"""Real benchmarks, offline: tiny fake copies of each on-disk format torchvision reads, the lazy split
and its rules, the registry, and the missing-data message."""
import csv
import hashlib
import json
import pickle

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets as tvd
from PIL import Image
from torch.utils.data import Dataset

from tvexplorer.core.split import Split
from tvexplorer.data.benchmarks import DATASETS, SUITES, ClipPreprocess, DatasetNotFound, benchmark_specs, dataset_names
from tvexplorer.data.sources import load_task
from tvexplorer.data.splits import LazySplit, split_validation, to_input

RNG = np.random.default_rng(0)


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def benchmark(name, root, image_size):
    return load_task({"source": "benchmark", "dataset": name, "root": str(root), "image_size": image_size})


def everything(task):
    """(train + val, test) decoded in memory."""
    pool_train, pool_val, test = task.train.take(), task.val.take(), task.test.take()
    return (torch.cat([pool_train.images, pool_val.images]), torch.cat([pool_train.labels, pool_val.labels])), test


def save_image(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)


def solid(value, size=(12, 12)):
    return np.full((*size, 3), value, np.uint8)


# ---------------------------------------------------------------- MNIST, FashionMNIST, KMNIST, EMNIST (IDX files)

def write_idx(path, array):
    array = np.asarray(array, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.tobytes())


def fake_mnist(root, name, n_train=30, n_test=6):
    """Image i is uniformly 7*i + 3 (train) or 200 + i (test); label i % 10."""
    prefix = {"train": "train", "test": "t10k"} if name != "EMNIST" else {"train": "emnist-digits-train", "test": "emnist-digits-test"}
    values = {"train": 7 * np.arange(n_train) + 3, "test": 200 + np.arange(n_test)}
    for split, v in values.items():
        write_idx(root / name / "raw" / f"{prefix[split]}-images-idx3-ubyte", np.broadcast_to(v[:, None, None], (len(v), 28, 28)))
        write_idx(root / name / "raw" / f"{prefix[split]}-labels-idx1-ubyte", np.arange(len(v)) % 10)
    return values


@pytest.mark.parametrize("name, first_classes", [("MNIST", ["0", "1"]), ("FashionMNIST", ["T-shirt/top", "Trouser"]),
                                                 ("KMNIST", ["o", "ki"]), ("EMNIST", ["0", "1"])])
def test_idx_datasets_read_labels_values_and_sizes(tmp_path, name, first_classes):
    values = fake_mnist(tmp_path, name)
    task = benchmark(name, tmp_path, 8)
    assert task.name == name and list(task.classnames[:2]) == first_classes and len(task.classnames) == 10
    assert (len(task.train), len(task.val), len(task.test)) == (27, 3, 6)
    (images, labels), test = everything(task)
    assert images.shape == (30, 8, 8, 3) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    # each grayscale image comes out uniform in all three channels, with its own label
    per_image = images.reshape(30, -1)
    assert torch.equal(per_image.min(1).values, per_image.max(1).values)
    got = dict(zip(per_image[:, 0].tolist(), labels.tolist()))
    assert got == {int(v): i % 10 for i, v in enumerate(values["train"])}
    assert torch.equal(test.images[:, 0, 0, 0], torch.tensor(values["test"], dtype=torch.uint8))
    assert torch.equal(test.labels, torch.arange(6) % 10)


def test_emnist_images_are_transposed_upright(tmp_path):
    fake_mnist(tmp_path, "EMNIST")
    stored = np.zeros((6, 28, 28), np.uint8)
    stored[:, 0, :] = 255  # EMNIST stores images transposed: a bright top row is really a bright left column
    write_idx(tmp_path / "EMNIST" / "raw" / "emnist-digits-test-images-idx3-ubyte", stored)
    image = benchmark("EMNIST", tmp_path, 28).test.take(1).images[0, :, :, 0]
    assert (image[:, 0] == 255).all() and (image[:, 1:] == 0).all()


# ---------------------------------------------------------------- SVHN (.mat)

def test_svhn_reads_mat_files_and_maps_label_10_to_digit_0(tmp_path, monkeypatch):
    folder = tmp_path / "svhn"
    folder.mkdir()
    data = {}
    for split, n in (("train", 20), ("test", 5)):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1)  # SVHN's labels run 1..10, 10 being the digit 0
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        data[split] = (x, y)
    monkeypatch.setattr(tvd.SVHN, "split_list", {s: ["", f"{s}_32x32.mat", md5(folder / f"{s}_32x32.mat")] for s in data})
    task = benchmark("SVHN", tmp_path, 32)
    assert (len(task.train) + len(task.val), len(task.test)) == (20, 5)
    test = task.test.take()
    x, y = data["test"]
    assert torch.equal(test.labels, torch.tensor([1, 2, 3, 4, 5]))
    assert torch.equal(test.images, torch.from_numpy(x.transpose(3, 0, 1, 2).copy()))
    (_, labels), _ = everything(task)
    assert sorted(labels.tolist()) == sorted((np.arange(20) % 10 + 1) % 10)


# ---------------------------------------------------------------- CIFAR10 and CIFAR100 (pickled batches)

def write_pickle(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def test_cifar10_reads_pickled_batches(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    batches = {f"data_batch_{i}": 2 for i in range(1, 6)} | {"test_batch": 3}
    planes = {}
    for file, n in batches.items():
        planes[file] = RNG.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        write_pickle(folder / file, {"data": planes[file].reshape(n, -1), "labels": [(len(file) + i) % 10 for i in range(n)]})
    write_pickle(folder / "batches.meta", {"label_names": names})
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{i}", md5(folder / f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5(folder / "batches.meta")})
    task = benchmark("CIFAR10", tmp_path, 32)
    assert list(task.classnames) == names and len(task.templates) == 18
    assert (len(task.train) + len(task.val), len(task.test)) == (10, 3)
    test = task.test.take()
    assert torch.equal(test.images, torch.from_numpy(planes["test_batch"].transpose(0, 2, 3, 1).copy()))
    assert test.labels.tolist() == [0, 1, 2]  # len("test_batch") == 10


def test_cifar100_names_lose_their_underscores(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-100-python"
    for file, n in (("train", 10), ("test", 4)):
        write_pickle(folder / file, {"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": [i % 3 for i in range(n)]})
    write_pickle(folder / "meta", {"fine_label_names": ["apple", "aquarium_fish", "maple_tree"]})
    monkeypatch.setattr(tvd.CIFAR100, "train_list", [["train", md5(folder / "train")]])
    monkeypatch.setattr(tvd.CIFAR100, "test_list", [["test", md5(folder / "test")]])
    monkeypatch.setattr(tvd.CIFAR100, "meta", {"filename": "meta", "key": "fine_label_names", "md5": md5(folder / "meta")})
    task = benchmark("CIFAR100", tmp_path, 32)
    assert list(task.classnames) == ["apple", "aquarium fish", "maple tree"]
    assert task.test.take().labels.tolist() == [0, 1, 2, 0]


# ---------------------------------------------------------------- image folders: EuroSAT, RESISC45, a user's data

EUROSAT_FOLDERS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
                   "Residential", "River", "SeaLake"]


def test_eurosat_uses_the_split_files_and_descriptive_names(tmp_path):
    base = tmp_path / "eurosat"
    for c, folder in enumerate(EUROSAT_FOLDERS):
        for k in (1, 2, 3):
            save_image(base / "2750" / folder / f"{folder}_{k}.jpg", solid(20 * c + k), quality=100)
    (base / "eurosat-train.txt").write_text("".join(f"{f}_1.jpg\n{f}_2.jpg\n" for f in EUROSAT_FOLDERS))
    (base / "eurosat-test.txt").write_text("".join(f"{f}_3.jpg\n" for f in EUROSAT_FOLDERS))
    task = benchmark("EuroSAT", tmp_path, 16)
    assert task.classnames[0] == "annual crop land" and task.classnames[9] == "lake or sea"
    assert (len(task.train), len(task.val), len(task.test)) == (18, 2, 10)
    test = task.test.take()
    assert test.labels.tolist() == list(range(10))
    assert (test.images.int() - (20 * torch.arange(10) + 3).view(10, 1, 1, 1)).abs().max() <= 2  # JPEG rounding
    (_, labels), _ = everything(task)
    assert sorted(labels.tolist()) == sorted(list(range(10)) * 2)


def fake_resisc(root, missing=None):
    base = root / "resisc45"
    classes = ["airplane", "baseball_diamond", "wetland"]
    for c in classes:
        for k in range(1, 5):
            if f"{c}_{k:03d}.jpg" != missing:
                save_image(base / "NWPU-RESISC45" / c / f"{c}_{k:03d}.jpg", solid(40), quality=100)
    (base / "resisc45-train.txt").write_text("".join(f"{c}_{k:03d}.jpg\n" for c in classes for k in (1, 2, 3)))
    (base / "resisc45-test.txt").write_text("".join(f"{c}_004.jpg\n" for c in classes))


def test_resisc45_layout_with_split_files(tmp_path):
    fake_resisc(tmp_path)
    task = benchmark("RESISC45", tmp_path, 16)
    assert list(task.classnames) == ["airplane", "baseball diamond", "wetland"]
    assert (len(task.train) + len(task.val), len(task.test)) == (9, 3)
    assert task.test.take().labels.tolist() == [0, 1, 2]


def test_an_image_the_split_file_lists_but_the_folder_lacks_is_reported(tmp_path):
    fake_resisc(tmp_path, missing="wetland_002.jpg")
    with pytest.raises(DatasetNotFound, match=r"RESISC45: .*resisc45 \(1 images listed in .*resisc45-train.txt are missing\)"):
        benchmark("RESISC45", tmp_path, 16)


def test_user_image_folder_prepared_exactly_as_open_clip_prepares_images(tmp_path):
    from open_clip.transform import image_transform
    originals = {}
    for split, n in (("train", 10), ("test", 3)):
        for i in range(n):
            cls = ("cat", "dog")[i % 2]
            originals[split, i] = RNG.integers(0, 256, (30 + i, 45 - i, 3), dtype=np.uint8)  # odd, non-square sizes
            save_image(tmp_path / split / cls / f"{i:02d}.png", originals[split, i])
    task = load_task({"source": "folder", "name": "pets", "root": str(tmp_path), "image_size": 16,
                      "templates": ["a photo of my {}."]})
    assert task.classnames == ("cat", "dog") and task.templates == ("a photo of my {}.",)
    assert (len(task.train) + len(task.val), len(task.test)) == (10, 3)
    test = task.test.take()
    # ImageFolder order: cat/00, cat/02, dog/01
    assert test.labels.tolist() == [0, 0, 1]
    mean, std = (0.48, 0.45, 0.41), (0.27, 0.26, 0.28)
    reference = image_transform(16, is_train=False, mean=mean, std=std)
    expected = torch.stack([reference(Image.fromarray(originals["test", i])) for i in (0, 2, 1)])
    assert torch.allclose(to_input(test.images, mean, std), expected, atol=1e-5)


def test_clip_preprocess_crops_the_centre_and_turns_gray_into_rgb():
    wide = np.zeros((8, 48), np.uint8)
    wide[:, 16:32] = 200  # only the middle third is bright; the centre crop of the upscaled image lies inside it
    out = ClipPreprocess(16)(Image.fromarray(wide, mode="L"))
    assert out.shape == (16, 16, 3) and out.dtype == torch.uint8 and (out == 200).all()


def test_folder_source_without_data_says_where_and_what_layout(tmp_path):
    with pytest.raises(DatasetNotFound) as e:
        load_task({"source": "folder", "name": "pets", "root": str(tmp_path / "nothing"), "image_size": 16})
    message = str(e.value)
    assert "\n" not in message and message.startswith("pets: ") and f"{tmp_path / 'nothing'}/train/<class>/*" in message


# ---------------------------------------------------------------- GTSRB (ppm + csv), DTD, SUN397, FER2013, Food101

def test_gtsrb_reads_class_folders_and_the_test_csv(tmp_path):
    base = tmp_path / "gtsrb"
    for c in range(3):
        for k in range(4):
            save_image(base / "GTSRB" / "Training" / f"{c:05d}" / f"{c:05d}_{k:05d}.ppm", solid(10 * c + k))
    rows = [(f"{i:05d}.ppm", (2 * i) % 3) for i in range(4)]
    for file, _ in rows:
        save_image(base / "GTSRB" / "Final_Test" / "Images" / file, solid(100 + int(file[:5])))
    with open(base / "GT-final_test.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"])
        w.writerows([file, 12, 12, 0, 0, 11, 11, c] for file, c in rows)
    task = benchmark("GTSRB", tmp_path, 12)
    assert len(task.classnames) == 43 and task.classnames[14] == "stop"
    assert (len(task.train) + len(task.val), len(task.test)) == (12, 4)
    test = task.test.take()
    assert test.labels.tolist() == [0, 2, 1, 0] and test.images[:, 0, 0, 0].tolist() == [100, 101, 102, 103]
    (images, labels), _ = everything(task)
    assert sorted(zip(labels.tolist(), images[:, 0, 0, 0].tolist())) == [(c, 10 * c + k) for c in range(3) for k in range(4)]


def test_dtd_reads_partition_one(tmp_path):
    base = tmp_path / "dtd" / "dtd"
    files = {"train": ["banded/banded_0001.jpg", "zigzagged/zigzagged_0001.jpg", "banded/banded_0002.jpg"],
             "test": ["zigzagged/zigzagged_0002.jpg", "banded/banded_0003.jpg"]}
    for split, names in files.items():
        for name in names:
            save_image(base / "images" / name, solid(60))
        (base / "labels").mkdir(parents=True, exist_ok=True)
        (base / "labels" / f"{split}1.txt").write_text("\n".join(names) + "\n")
    (base / "labels" / "val1.txt").write_text("banded/banded_0001.jpg\n")
    task = benchmark("DTD", tmp_path, 16)
    assert list(task.classnames) == ["banded", "zigzagged"]
    assert (len(task.train) + len(task.val), len(task.test)) == (3, 2)
    assert task.test.take().labels.tolist() == [1, 0]


def test_sun397_reads_the_official_partition_files(tmp_path):
    base = tmp_path / "SUN397"
    base.mkdir()
    (base / "ClassName.txt").write_text("/a/abbey\n/a/apartment_building/outdoor\n/b/bedroom\n")
    train = ["/b/bedroom/sun_b1.jpg", "/a/abbey/sun_a1.jpg", "/a/apartment_building/outdoor/sun_o1.jpg", "/a/abbey/sun_a2.jpg"]
    test = ["/a/apartment_building/outdoor/sun_o2.jpg", "/b/bedroom/sun_b2.jpg"]
    for i, line in enumerate(train + test):
        save_image(base / line.lstrip("/"), solid(10 * i), quality=100)
    save_image(base / "a" / "abbey" / "sun_unlisted.jpg", solid(250))  # in no partition: never used
    (base / "Training_01.txt").write_text("\n".join(train) + "\n")
    (base / "Testing_01.txt").write_text("\n".join(test) + "\n")
    task = benchmark("SUN397", tmp_path, 8)
    assert list(task.classnames) == ["abbey", "apartment building outdoor", "bedroom"]
    assert (len(task.train) + len(task.val), len(task.test)) == (4, 2)
    test_split = task.test.take()
    assert test_split.labels.tolist() == [1, 2] and (test_split.images[:, 0, 0, 0].int() - torch.tensor([40, 50])).abs().max() <= 2
    (_, labels), _ = everything(task)
    assert sorted(labels.tolist()) == [0, 0, 1, 2]


def test_fer2013_reads_the_csv_with_both_test_parts(tmp_path, monkeypatch):
    base = tmp_path / "fer2013"
    base.mkdir()
    usage = ["Training"] * 6 + ["PublicTest", "PrivateTest", "PublicTest"]
    with open(base / "fer2013.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        w.writerows([i % 7, " ".join([str(20 * i)] * 48 * 48), u] for i, u in enumerate(usage))
    monkeypatch.setitem(tvd.FER2013._RESOURCES, "fer", ("fer2013.csv", md5(base / "fer2013.csv")))
    task = benchmark("FER2013", tmp_path, 48)
    assert task.classnames[3] == "happy" and task.classnames[6] == "neutral"
    assert (len(task.train) + len(task.val), len(task.test)) == (6, 3)
    test = task.test.take()
    assert test.labels.tolist() == [6, 0, 1] and test.images[:, 0, 0].tolist() == [[120] * 3, [140] * 3, [160] * 3]


def test_food101_reads_its_json_meta(tmp_path):
    base = tmp_path / "food-101"
    meta = {"train": {"apple_pie": ["apple_pie/1", "apple_pie/2"], "baby_back_ribs": ["baby_back_ribs/3"]},
            "test": {"apple_pie": ["apple_pie/4"], "baby_back_ribs": ["baby_back_ribs/5"]}}
    for split, classes in meta.items():
        for files in classes.values():
            for f in files:
                save_image(base / "images" / f"{f}.jpg", solid(30))
        (base / "meta").mkdir(parents=True, exist_ok=True)
        (base / "meta" / f"{split}.json").write_text(json.dumps(classes))
    task = benchmark("Food101", tmp_path, 8)
    assert list(task.classnames) == ["apple pie", "baby back ribs"]
    assert (len(task.train) + len(task.val), len(task.test)) == (3, 2)
    assert task.test.take().labels.tolist() == [0, 1]


# ---------------------------------------------------------------- the lazy split follows the in-memory rules

class Items(Dataset):
    def __init__(self, split):
        self.split = split

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        return self.split.images[i], int(self.split.labels[i])


def pair(n=300):
    images = torch.from_numpy(RNG.integers(0, 256, (n, 2, 2, 3), dtype=np.uint8))
    memory = Split(images, torch.arange(n) % 7)
    return memory, LazySplit(Items(memory), torch.arange(n), workers=0)


def same(a: Split, b: Split):
    return torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_validation_split_of_a_lazy_split_equals_the_in_memory_one():
    memory, lazy = pair()
    (m_train, m_val), (l_train, l_val) = split_validation(memory), split_validation(lazy)
    assert isinstance(l_val, LazySplit) and (len(l_train), len(l_val)) == (270, 30)
    assert same(l_val.take(), m_val) and same(l_train.take(), m_train)
    assert not set(l_val.indices.tolist()) & set(l_train.indices.tolist())


def test_lazy_validation_is_capped_at_5000_without_decoding():
    train, val = split_validation(LazySplit(Items(Split(torch.zeros(0, 1, 1, 3), torch.zeros(0))), torch.arange(60_000)))
    assert (len(train), len(val)) == (55_000, 5000)


@pytest.mark.parametrize("seed", [None, 5])
def test_lazy_batches_come_in_the_in_memory_order_with_or_without_workers(seed):
    memory, lazy = pair(50)
    expected = list(memory.batches(16, shuffle_seed=seed))
    assert [len(labels) for _, labels in expected] == [16, 16, 16, 2]
    for workers in (0, 2):
        got = list(LazySplit(lazy.dataset, lazy.indices, workers).batches(16, shuffle_seed=seed))
        assert len(got) == len(expected)
        for (gi, gl), (ei, el) in zip(got, expected):
            assert gi.dtype == torch.uint8 and gl.dtype == torch.int64 and torch.equal(gi, ei) and torch.equal(gl, el)


def test_take_is_a_fixed_seeded_subset_of_at_most_n():
    memory, lazy = pair(40)
    some = lazy.take(10, seed=3)
    assert isinstance(some, Split) and len(some) == 10
    assert same(some, memory.take(10, seed=3)) and same(some, lazy.take(10, seed=3))
    assert not same(some, lazy.take(10, seed=4))
    assert same(lazy.take(), memory) and same(lazy.take(1000), memory)  # all of it, in order
    rows = {bytes(x) for x in memory.images.reshape(40, -1).numpy()}
    assert {bytes(x) for x in some.images.reshape(10, -1).numpy()} <= rows
    with pytest.raises(ValueError, match="at least one"):
        memory.take(0)


# ---------------------------------------------------------------- the registry

def test_suites_nest_and_name_registered_datasets():
    assert {k: len(v) for k, v in SUITES.items()} == {"8": 8, "14": 14, "20": 20}
    assert SUITES["14"][:8] == SUITES["8"] and SUITES["20"][:14] == SUITES["14"]
    assert set(SUITES["20"]) == set(DATASETS) and len(set(SUITES["20"])) == 20
    assert {"SUN397", "Cars", "RESISC45", "EuroSAT", "SVHN", "GTSRB", "MNIST", "DTD"} == set(SUITES["8"])


def test_every_dataset_has_templates_class_names_and_a_way_to_get_it():
    no_names_in_torchvision = {"SVHN", "GTSRB", "Flowers102", "PCAM", "FER2013"}
    sizes = {"MNIST": 10, "SVHN": 10, "GTSRB": 43, "EuroSAT": 10, "Flowers102": 102, "PCAM": 2, "FER2013": 7}
    for name, entry in DATASETS.items():
        assert entry["templates"] and all(t.count("{}") == 1 for t in entry["templates"]), name
        assert entry["class"] == "SUN397Partition" or hasattr(tvd, entry["class"]), name
        assert entry.get("download") or entry.get("get"), name
        if entry["class"] in no_names_in_torchvision:
            assert "classnames" in entry, name
        if "classnames" in entry:
            assert len(entry["classnames"]) == sizes[name] == len(set(entry["classnames"])), name


def test_benchmark_specs_expand_suites_and_names():
    specs = benchmark_specs("8", "/data", 224)
    assert [s["dataset"] for s in specs] == SUITES["8"]
    assert specs[0] == {"source": "benchmark", "dataset": "SUN397", "root": "/data", "image_size": 224, "download": False}
    assert dataset_names("mnist, cars") == ["MNIST", "Cars"] and dataset_names(["SVHN"]) == ["SVHN"]
    with pytest.raises(ValueError, match="named twice"):
        dataset_names("MNIST,mnist")


def test_unknown_dataset_is_one_line_listing_names_and_suites():
    with pytest.raises(ValueError) as e:
        benchmark_specs(["MNIST", "ImageNet"], "/data", 224)
    message = str(e.value)
    assert "\n" not in message and "'ImageNet'" in message and "RenderedSST2" in message and "8, 14, 20" in message


# ---------------------------------------------------------------- missing data

def test_missing_data_names_dataset_folder_and_the_download_flag(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        benchmark("MNIST", tmp_path, 224)
    message = str(e.value)
    assert isinstance(e.value, DatasetNotFound) and "\n" not in message
    assert message.startswith("MNIST: ") and str(tmp_path / "MNIST" / "raw") in message and "download=True" in message


def test_missing_data_that_torchvision_cannot_fetch_says_where_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFound) as e:
        benchmark("Cars", tmp_path, 224)
    message = str(e.value)
    assert "\n" not in message and str(tmp_path / "stanford_cars") in message
    assert "download=True" not in message and "cars_test_annos_withlabels.mat" in message
