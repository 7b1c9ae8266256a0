"""Fine-tuning, the full-batch gradient and trajectory statistics on a tiny random ViT."""
import math

import pytest
import torch
import torch.nn.functional as F

from tvexplorer.core.layout import Layout
from tvexplorer.core.records import Encoder
from tvexplorer.core.split import Split
from tvexplorer.data.splits import to_input
from tvexplorer.models.clip import build_image_encoder, get_flat, set_flat
from tvexplorer.science.alignment import cosine, norm, trajectory_table, vector_alignment
from tvexplorer.science.training import Objective, TrainConfig, finetune, full_batch_gradient

ENCODER = Encoder(embed_dim=8, vision_cfg={"image_size": 8, "patch_size": 4, "width": 16, "layers": 1, "head_width": 8},
                  quick_gelu=False, image_size=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def tiny_problem(n=40, classes=3, seed=0):
    torch.manual_seed(seed)
    encoder = build_image_encoder(ENCODER)
    head = F.normalize(torch.randn(8, classes), dim=0)
    g = torch.Generator().manual_seed(seed)
    split = Split(torch.randint(0, 256, (n, 8, 8, 3), dtype=torch.uint8, generator=g),
                  torch.randint(0, classes, (n,), generator=g))
    return encoder, Objective(head, 10.0, ENCODER.mean, ENCODER.std), split


def test_full_batch_gradient_is_gradient_of_mean_loss():
    encoder, objective, split = tiny_problem()
    g = full_batch_gradient(encoder, objective, split, batch_size=7)  # uneven batches on purpose
    encoder.zero_grad()
    objective.loss(encoder, split.images, split.labels).backward()  # one pass over everything
    expected = torch.cat([p.grad.reshape(-1) for p in encoder.parameters()])
    assert torch.allclose(g, expected, rtol=1e-4, atol=1e-7)
    assert norm(g) > 0


def test_one_epoch_of_full_batch_gd_gives_minus_lr_g0():
    encoder, objective, split = tiny_problem()
    theta0 = get_flat(encoder)
    g0 = full_batch_gradient(encoder, objective, split, batch_size=40)
    set_flat(encoder, theta0)
    lr = 0.05
    thetas = finetune(encoder, objective, split, TrainConfig(optimizer="gd", lr=lr, epochs=2, batch_size=9), task_index=0)
    tau1 = thetas[0] - theta0
    check = vector_alignment(tau1, tau1, g0, lr)
    assert cosine(tau1, -lr * g0) >= 0.9999
    assert check["full_batch_rel_err"] <= 1e-4
    # the second step is taken at theta1, so tau2 is not -2 lr g0 exactly (second-order difference)
    tau2 = thetas[1] - theta0
    assert norm(tau2 + 2 * lr * g0) > 1e-4 * norm(tau2)


def test_adamw_finetuning_is_deterministic_and_learns():
    runs = []
    for _ in range(2):
        encoder, objective, split = tiny_problem()
        before = objective.loss(encoder, split.images, split.labels).item()
        cfg = TrainConfig(lr=3e-3, weight_decay=0.0, batch_size=8, epochs=8, grad_clip=1.0)
        runs.append(finetune(encoder, objective, split, cfg, task_index=0))
        after = objective.loss(encoder, split.images, split.labels).item()
        assert after < before
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_set_flat_copies_rather_than_aliasing():
    encoder, objective, split = tiny_problem()
    theta0 = get_flat(encoder)
    kept = theta0.clone()
    set_flat(encoder, theta0)
    finetune(encoder, objective, split, TrainConfig(lr=1e-2, epochs=1, batch_size=8), task_index=0)
    assert torch.equal(theta0, kept)
    assert not torch.equal(get_flat(encoder), theta0)


def test_trajectory_table_shares_and_cosines():
    encoder, objective, split = tiny_problem()
    layout = Layout.of(dict(encoder.named_parameters()))
    theta0 = get_flat(encoder)
    g0 = full_batch_gradient(encoder, objective, split, batch_size=16)
    thetas = finetune(encoder, objective, split, TrainConfig(lr=1e-2, epochs=3, batch_size=8), task_index=0)
    table = trajectory_table("t", layout, theta0, thetas, g0)
    assert set(table["layer"]) == {"all", *layout.names}
    assert len(table) == 3 * (1 + len(layout.names))
    overall = table[table["layer"] == "all"].reset_index()
    assert math.isclose(overall["norm_share"].sum(), 1.0, rel_tol=1e-9)
    assert math.isclose(overall["cos_tau_e_tau"].iloc[-1], 1.0, rel_tol=1e-9)
    first = thetas[0] - theta0
    assert math.isclose(overall["cos_update_neg_g0"].iloc[0], cosine(first, -g0), rel_tol=1e-9)
    assert math.isclose(overall["update_norm"].iloc[1], norm(thetas[1] - thetas[0]), rel_tol=1e-9)


def test_cosine_and_norm_in_float16_match_float64():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(10_000, generator=g), torch.randn(10_000, generator=g) + 0.5
    a16, b16 = a.half(), b.half()
    exact = float(a16.double() @ b16.double() / (a16.double().norm() * b16.double().norm()))
    assert cosine(a16, b16) == pytest.approx(exact, rel=1e-12)
    assert norm(a16) == pytest.approx(float(a16.double().norm()), rel=1e-12)
    assert cosine(a, torch.zeros_like(a)) == 0.0


def test_to_input_normalises_channels_first():
    images = torch.full((2, 8, 8, 3), 255, dtype=torch.uint8)
    x = to_input(images, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    assert x.shape == (2, 3, 8, 8)
    assert torch.allclose(x, torch.full_like(x, 2.0))


def test_unknown_optimizer_is_rejected():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        TrainConfig(optimizer="rmsprop")
