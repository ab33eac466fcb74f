"""Shared test fixtures: the real BatVision sample lives in ../shared and is read in place."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AVS_SHARED_DIR", ROOT.parent / "shared"))
BV2_SAMPLE = SHARED / "fixtures" / "batvision_bv2_sample"

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture(scope="session")
def bv2_sample() -> Path:
    if not (BV2_SAMPLE / "audio_47.wav").is_file():
        pytest.fail(f"BatVision fixture missing at {BV2_SAMPLE}; ../shared must sit beside the project root")
    return BV2_SAMPLE


@pytest.fixture
def thread_errors() -> Iterator[Callable[[BaseException], None]]:
    """An on_error for a thread under test (avs_depth_ros.workers): what the thread reports fails the test at its end.
    (pytest.fail called inside a thread raises there, not in the test: pytest would only warn.)"""
    errors: list[BaseException] = []
    yield errors.append
    if errors:
        pytest.fail(f"a thread under test failed: {type(errors[0]).__name__}: {errors[0]}", pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    # Tiny CPU models run faster single-threaded on a 2-core machine, and results stay repeatable.
    import torch

    torch.set_num_threads(1)
