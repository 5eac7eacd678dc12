"""A linear probe: train only a classifier's head, on the frozen base model's mean-pooled states.

This is how lmdock trains a classification learnware under DP (`TaskInfo.pooling == "mean"`).
With a few thousand records, DP-SGD's noise drowns the gradients of LoRA's ~10⁵ weights
(measured: a DP LoRA build on MedQuAD question types stayed at the majority class), while a
linear head of (hidden size × labels) weights on good sentence features learns well
(docs/publishing.md, `benchmarks/dp_training.py`). The encoder is frozen, so each record's
features are computed once, and every DP-SGD step costs one small matrix product.

Training: the head starts at zero (or, in a federated round, at the global head); SGD with
momentum 0.9 and a constant learning rate; the loss is the mean cross-entropy over the batch,
so per-example gradients are those of each record's own loss (what DP-SGD clips). LoRA's
matrices stay at their initial values (B = 0: the identity), so the saved adapter changes only
the head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from lmdock.client.heads import mean_features
from lmdock.client.training.objectives import TaskModel

__all__ = ["FEATURE_BATCH", "MOMENTUM", "linear_probe", "probe_features"]

FEATURE_BATCH = 64
MOMENTUM = 0.9


@torch.no_grad()
def probe_features(tm: TaskModel, texts: Sequence[str]) -> torch.Tensor:
    """The frozen encoder's mean-pooled states the head reads, one row per text (what the lab
    scores many heads on, computed once)."""
    was_training = tm.model.training
    tm.model.eval()  # no dropout: the features are what the runtime will compute
    parts = []
    for start in range(0, len(texts), FEATURE_BATCH):
        batch = tm.tokenizer(
            list(texts[start : start + FEATURE_BATCH]),
            padding=True,
            truncation=True,
            max_length=tm.max_tokens,
            return_tensors="pt",
        ).to(tm.device)
        parts.append(mean_features(tm.model, batch))
    tm.model.train(was_training)
    return torch.cat(parts)


def _head(tm: TaskModel) -> torch.nn.Linear:
    """The trainable copy of `classifier` that PEFT saves with the adapter."""
    wrapper = tm.model.get_base_model().classifier
    head = wrapper.modules_to_save["default"]
    if not isinstance(head, torch.nn.Linear):
        raise TypeError("the classifier head is not a linear layer")
    return head


def linear_probe(
    tm: TaskModel,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    learning_rate: float,
    zero_head: bool = True,
) -> tuple[torch.nn.Linear, Callable[[list[int]], torch.Tensor], torch.optim.Optimizer]:
    """(head, loss of a batch of record indices, optimiser) for training the head alone; the head
    starts at zero, or (`zero_head=False`) where it is (a federated round's global head)."""
    features = probe_features(tm, texts)
    index = {name: i for i, name in enumerate(tm.task.labels)}
    targets = torch.tensor([index[y] for y in labels], device=features.device)
    head = _head(tm)
    if zero_head:
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    for p in tm.model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)

    def loss_of(idx: list[int]) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(head(features[idx]).float(), targets[idx])

    optimiser = torch.optim.SGD(head.parameters(), lr=learning_rate, momentum=MOMENTUM)
    return head, loss_of, optimiser
