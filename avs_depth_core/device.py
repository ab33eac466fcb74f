"""One device policy for every entry point (the CLI commands, training, the pipeline and the depth node).

'auto' (or nothing) -> CUDA when available, else the CPU; 'cpu'; 'cuda' / 'cuda:N' -> that GPU, or the CPU with a warning
when this torch has no CUDA (a robot keeps running, slower, and says why). A GPU index that does not exist, or any other
text, is a ValueError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def resolve_device(requested: str | torch.device | None = "auto", cuda_available: bool | None = None,
                   device_count: int | None = None, warn: Callable[[str], None] = log.warning) -> torch.device:
    """The torch device for `requested` under the policy above; `cuda_available`/`device_count` default to this machine."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if device_count is None:
        device_count = torch.cuda.device_count() if cuda_available else 0
    text = "auto" if requested is None else str(requested).strip().lower() or "auto"
    if text == "auto":
        return torch.device("cuda:0" if cuda_available else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index_text = text.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise ValueError(f"device {requested!r}: expected auto, cpu, cuda or cuda:N")
        if not cuda_available:
            warn(f"device {requested!r} requested but CUDA is not available (torch {torch.__version__}, "
                 f"CUDA build: {torch.version.cuda or 'none'}); running on the CPU")
            return torch.device("cpu")
        if int(index_text) >= device_count:
            raise ValueError(f"device {requested!r}: only {device_count} CUDA device(s) present")
        return torch.device(f"cuda:{int(index_text)}")
    raise ValueError(f"device {requested!r}: expected auto, cpu, cuda or cuda:N")
