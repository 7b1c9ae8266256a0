"""The Hugging Face datasets source (`--data hf`), offline: small parquet copies in the hub's layout,
loaded through the same `datasets.load_dataset` call as the hub's, from a local path."""
import numpy as np
import pytest
import torch

import hubparquet
from test_datasets import benchmark, fake_mnist
from tvexplorer.data.benchmarks import DATASETS, DatasetNotFound, SUITES
from tvexplorer.data.hubdata import HUB_DATASETS, hub_specs
from tvexplorer.data.sources import load_task

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def private_cache(monkeypatch, tmp_path):
    hubparquet.use_private_datasets_cache(monkeypatch, tmp_path)


def hub_task(name, root, image_size):
    return load_task({"source": "hf", "dataset": name, "root": str(root), "image_size": image_size})


def same(a, b):
    return torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_hub_copy_gives_the_same_splits_and_evaluation_subsets_as_torchvision(tmp_path):
    values = fake_mnist(tmp_path / "tv", "MNIST")  # IDX files; the parquet copy holds the same images in the same order
    images = {s: np.broadcast_to(np.asarray(v, np.uint8)[:, None, None], (len(v), 28, 28)) for s, v in values.items()}
    hubparquet.write(tmp_path / "hub" / "ylecun/mnist", {s: (images[s], [i % 10 for i in range(len(v))]) for s, v in values.items()},
                     classnames=[str(d) for d in range(10)])
    hub, tv = hub_task("MNIST", tmp_path / "hub", 8), benchmark("MNIST", tmp_path / "tv", 8)
    assert hub.classnames == tv.classnames and hub.templates == tv.templates == tuple(DATASETS["MNIST"]["templates"])
    assert (len(hub.train), len(hub.val), len(hub.test)) == (len(tv.train), len(tv.val), len(tv.test)) == (27, 3, 6)
    assert same(hub.val.take(), tv.val.take()) and same(hub.train.take(), tv.train.take())
    assert same(hub.test.take(4, seed=0), tv.test.take(4, seed=0))  # the cache's seeded evaluation subset
    assert hub.test.take().images.dtype == torch.uint8 and hub.test.take().images.shape == (6, 8, 8, 3)


def test_svhn_is_read_from_its_configuration_folder(tmp_path):
    splits = hubparquet.digits(tmp_path / "ufldl-stanford/svhn", n_train=10, n_test=4, config="cropped_digits")
    task = hub_task("SVHN", tmp_path, 28)
    assert (len(task.train) + len(task.val), len(task.test)) == (10, 4)
    test = task.test.take()
    assert test.labels.tolist() == [0, 1, 2, 3] and test.images[:, 0, 0, 0].tolist() == splits["test"][0][:, 0, 0].tolist()


def test_fer2013_webdataset_columns_and_fusionbench_label_order(tmp_path):
    faces = RNG.integers(0, 256, (9, 12, 12), dtype=np.uint8)
    hubparquet.write(tmp_path / "clip-benchmark/wds_fer2013", {"train": (faces[:7], list(range(7))), "test": (faces[7:], [4, 6])},
                     columns=("jpg", "cls"))
    task = hub_task("FER2013", tmp_path, 12)
    # the webdataset copy orders neutral 5th, not last as torchvision's FER2013 does
    assert task.classnames[4] == "neutral" and task.classnames[6] == "surprised" and len(task.templates) == 6
    test = task.test.take()
    assert test.labels.tolist() == [4, 6] and torch.equal(test.images[..., 0], torch.from_numpy(faces[7:]))


def test_pcam_boolean_labels_become_class_indices(tmp_path):
    patches = RNG.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    hubparquet.write(tmp_path / "1aurent/PatchCamelyon", {"train": (patches[:4], [True, False, True, True]),
                                                          "test": (patches[4:], [False, True])}, label_type="bool")
    task = hub_task("PCAM", tmp_path, 8)
    assert task.classnames == ("lymph node", "lymph node containing metastatic tumor tissue")
    test = task.test.take()
    assert test.labels.tolist() == [0, 1] and test.labels.dtype == torch.int64 and torch.equal(test.images, torch.from_numpy(patches[4:]))


def test_food101_tests_on_the_hubs_validation_split(tmp_path):
    names = HUB_DATASETS["Food101"]["classnames"]
    hubparquet.write(tmp_path / "ethz/food101", {"train": (RNG.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8), [0, 1] * 5),
                                                 "validation": (RNG.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8), [100, 5, 7])},
                     classnames=names)
    task = hub_task("Food101", tmp_path, 8)
    assert len(task.classnames) == 101 and task.test.take().labels.tolist() == [100, 5, 7]


def test_emnist_from_the_hub_is_fusionbenchs_letters_split(tmp_path):
    letters = [chr(ord("A") + i) for i in range(26)]
    hubparquet.write(tmp_path / "tanganke/emnist_letters", {"train": (hubparquet.digit_images(26, 0), list(range(26))),
                                                            "test": (hubparquet.digit_images(2, 9), [25, 0])}, classnames=letters)
    task = hub_task("EMNIST", tmp_path, 8)
    assert list(task.classnames) == letters and task.templates == tuple(DATASETS["EMNIST"]["templates"])
    assert task.test.take().labels.tolist() == [25, 0]


def test_hub_catalogue_covers_every_dataset_with_consistent_class_names():
    assert set(HUB_DATASETS) == set(DATASETS)
    sizes = {"SUN397": 397, "Cars": 196, "RESISC45": 45, "DTD": 47, "OxfordIIITPet": 37, "Flowers102": 102, "CIFAR100": 100,
             "Food101": 101, "EMNIST": 26, "FER2013": 7, "STL10": 10, "CIFAR10": 10, "KMNIST": 10, "FashionMNIST": 10, "RenderedSST2": 2}
    for name, entry in HUB_DATASETS.items():
        names = entry.get("classnames") or DATASETS[name].get("classnames")
        assert names and len(names) == len(set(names)), name
        assert len(names) == sizes.get(name, len(DATASETS[name].get("classnames", names))), name
        assert "/" in entry["repo"], name


def test_hub_specs_follow_the_suites_and_default_to_the_hub():
    specs = hub_specs("8", None, 224)
    assert [s["dataset"] for s in specs] == SUITES["8"]
    assert specs[0] == {"source": "hf", "dataset": "SUN397", "root": None, "image_size": 224}
    assert hub_specs("mnist", "/mirror", 32)[0]["root"] == "/mirror"


# ---------------------------------------------------------------- what goes wrong, in one line

def test_no_local_copy_says_where_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFound) as e:
        hub_task("MNIST", tmp_path, 8)
    message = str(e.value)
    assert "\n" not in message and message.startswith("MNIST: ") and str(tmp_path / "ylecun/mnist") in message
    assert "huggingface-cli download ylecun/mnist --repo-type dataset" in message


def test_missing_split_column_or_classes_are_one_line(tmp_path):
    hubparquet.write(tmp_path / "ylecun/mnist", {"train": (hubparquet.digit_images(4, 0), [0, 1, 2, 3])}, classnames=list("0123456789"))
    with pytest.raises(DatasetNotFound, match=r"MNIST: could not load split 'test' of .*ylecun/mnist") as e:
        hub_task("MNIST", tmp_path, 8)
    assert "\n" not in str(e.value)

    hubparquet.write(tmp_path / "tanganke/kmnist", {s: (hubparquet.digit_images(2, 0), [0, 1]) for s in ("train", "test")},
                     classnames=list("0123456789"), columns=("picture", "label"))
    with pytest.raises(DatasetNotFound, match="KMNIST: .* has no column 'image' \\(columns: picture, label\\)"):
        hub_task("KMNIST", tmp_path, 8)

    hubparquet.write(tmp_path / "tanganke/eurosat", {s: (hubparquet.digit_images(2, 0), [0, 1]) for s in ("train", "test")},
                     classnames=["forest", "river", "sea"])
    with pytest.raises(ValueError, match="EuroSAT: the hub dataset has 3 classes but 10 class names are given") as e:
        hub_task("EuroSAT", tmp_path, 8)
    assert "\n" not in str(e.value)



def test_build_with_data_hf_needs_no_data_root(tmp_path):
    from tvexplorer.cli import making, parser
    from tvexplorer.models.clip import ModelSpec
    args = parser().parse_args(["build", "--out", str(tmp_path / "c"), "--model", "ViT-B-32", "--tasks", "MNIST,EMNIST", "--data", "hf"])
    assert making._task_specs(args, ModelSpec("ViT-B-32")) == [
        {"source": "hf", "dataset": name, "root": None, "image_size": 224} for name in ("MNIST", "EMNIST")]
