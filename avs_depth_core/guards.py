"""Numeric guards: a NaN or inf in an input batch or a loss is an error naming the key, the samples' stamps and the step."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch


def _stamps(batch: Mapping[str, Any]) -> list[int]:
    stamps = batch.get("stamp_ns")
    if stamps is None:
        return []
    return [int(s) for s in (stamps.tolist() if isinstance(stamps, torch.Tensor) else stamps)]


def check_batch_finite(batch: Mapping[str, Any], step: int | None, keys: Iterable[str]) -> None:
    """A NaN/inf in an input tensor is an error naming the key, the stamps of the offending samples and the training step
    (None outside training)."""
    for key in keys:
        value = batch.get(key)
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        bad = ~torch.isfinite(value.reshape(value.shape[0], -1)).all(dim=1)
        if bad.any():
            stamps = _stamps(batch)
            where = [stamps[i] for i in bad.nonzero().flatten().tolist()] if stamps else bad.nonzero().flatten().tolist()
            prefix = "" if step is None else f"step {step}: "
            raise ValueError(f"{prefix}batch['{key}'] holds NaN or inf for samples with stamp_ns {where}")


def check_loss_finite(loss: torch.Tensor, step: int, batch: Mapping[str, Any]) -> None:
    if not torch.isfinite(loss).all():
        raise ValueError(f"step {step}: loss is {loss.item()} on samples with stamp_ns {_stamps(batch)}; "
                         "inputs were finite, so training diverged (try a lower train.lr or train.clip_grad)")


