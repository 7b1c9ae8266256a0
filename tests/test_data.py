"""Task data: validation split rules and no image shared between splits of real data."""
import torch

from tvexplorer.core.split import Split
from tvexplorer.data.sources import load_task
from tvexplorer.data.splits import split_validation


def test_validation_is_ten_percent_seeded_and_disjoint():
    pool = Split(torch.arange(300).view(300, 1, 1, 1).expand(300, 1, 1, 3).contiguous().to(torch.int64), torch.arange(300) % 3)
    train, val = split_validation(pool)
    assert len(val) == 30 and len(train) == 270
    ids = set(train.images[:, 0, 0, 0].tolist()) | set(val.images[:, 0, 0, 0].tolist())
    assert ids == set(range(300))
    again_train, again_val = split_validation(pool)
    assert torch.equal(val.images, again_val.images)


def test_validation_is_the_head_of_a_seed_0_permutation():
    # the rule existing caches were built with: lazy and in-memory splits must both keep it
    pool = Split(torch.zeros(50, 1, 1, 3, dtype=torch.uint8), torch.arange(50))
    train, val = split_validation(pool)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(val.labels, order[:5]) and torch.equal(train.labels, order[5:])


def test_validation_is_capped_at_5000():
    n = 60_000
    pool = Split(torch.zeros(n, 1, 1, 3, dtype=torch.uint8), torch.zeros(n, dtype=torch.int64))
    train, val = split_validation(pool)
    assert len(val) == 5000 and len(train) == n - 5000


def test_real_digits_never_repeat_across_splits():
    d = load_task({"source": "demo", "task": "digits", "n_train": 4000, "n_test": 400, "seed": 0})
    assert len(d.train) + len(d.val) == 1297  # capped at the real training pool, not drawn with replacement
    flat = lambda s: {bytes(x) for x in s.images.reshape(len(s), -1).numpy()}
    train, val, test = flat(d.train), flat(d.val), flat(d.test)
    assert len(train) == len(d.train) and not (train & val) and not (train & test) and not (val & test)
