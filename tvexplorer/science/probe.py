"""Linear probe of an image encoder's features: how much of a task its features already hold.

Logistic regression on the L2-normalised features of the training split, scored on the evaluation
images. A probe far below the fine-tuned accuracy means fine-tuning must build new features with
large moves, the regime in which task arithmetic fails; a probe close to it means fine-tuning only
re-aims features that exist, as it does for CLIP.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.split import Split
from ..data.splits import LazySplit, to_input


@torch.inference_mode()
def features(encoder: torch.nn.Module, split: Split | LazySplit, mean, std, device="cpu",
             batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """([n, embed_dim] L2-normalised image features, float64 on the CPU; [n] labels), in the split's
    order (a lazy split is decoded once, so its labels come with its images)."""
    dtype = next(encoder.parameters()).dtype
    out, labels = [], []
    for images, batch_labels in split.batches(batch_size):
        out.append(F.normalize(encoder(to_input(images.to(device), mean, std).to(dtype)), dim=-1).cpu().double())
        labels.append(batch_labels)
    return torch.cat(out), torch.cat(labels)


def probe_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                   test_labels: torch.Tensor) -> float:
    """Accuracy of multinomial logistic regression (standardised features, C = 1) on the test features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    model.fit(train_features.numpy(), train_labels.numpy())
    return float((model.predict(test_features.numpy()) == test_labels.numpy()).mean())
