"""Golden outputs of the upstream code (ZoeDepth, Monodepth2), written by scripts/make_golden_fixtures.py into fixtures/.

Each fixture is <name>.safetensors (inputs and upstream outputs) + <name>.json (upstream repository and commit, settings).
Weights are rebuilt here from the seeds the JSON records, with the recipe the script used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@dataclass
class Golden:
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key]

    def case(self, name: str) -> dict[str, Any]:
        return self.meta["cases"][name]

    def weights(self, name: str) -> dict[str, torch.Tensor]:
        """The parameters of case `name`: RandomState(seed).uniform(-bound, bound, shape) in float32, as the script drew them."""
        return {key: torch.from_numpy(np.random.RandomState(seed).uniform(-bound, bound, size=shape).astype(np.float32))
                for key, (seed, bound, shape) in self.case(name)["weights"].items()}


def load_golden(name: str) -> Golden:
    tensors, meta = FIXTURES / f"{name}.safetensors", FIXTURES / f"{name}.json"
    if not tensors.is_file() or not meta.is_file():
        pytest.fail(f"golden fixture {tensors} or {meta.name} missing; regenerate with scripts/make_golden_fixtures.py")
    return Golden(load_file(tensors), json.loads(meta.read_text()))


@pytest.fixture(scope="session")
def zoedepth_golden() -> Golden:
    return load_golden("zoedepth")


@pytest.fixture(scope="session")
def monodepth2_golden() -> Golden:
    return load_golden("monodepth2")
