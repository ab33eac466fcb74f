"""Helpers the unit tests share, as fixtures: a tiny supervised bag (TinyBag) with `avs-depth train` arguments for it, a
small simulated bag for Monodepth2 and echo scaling (SimBag, `sim_bag` built once per session), and a randomly
initialised tiny AVS-Net checkpoint (`tiny_checkpoint`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import yaml

from avs_depth_core.audio import BATVISION_CHIRP, synthesize_chirp
from avs_depth_core.cli import main
from avs_depth_core.data import topics
from avs_depth_core.data.bag import BagWriter, make_msg
from avs_depth_core.data.messages import camera_info_fields, echo_fields, image_fields
from avs_depth_core.models.avsnet import AVSNet, AVSNetConfig

ROOT = Path(__file__).resolve().parents[2]


class TinyBag:
    """A bag of flat scenes: frame i shows a wall at d_i metres (texture brightness falls with d), its depth, and an echo
    with a reflection 2 d_i / c after emission. One sequence per split; recorded at the network size (no resize)."""

    H, W = 32, 64
    K = np.array([[40.0, 0, 32], [0, 40, 16], [0, 0, 1]])
    T0 = 1_000_000_000_000
    PERIOD = 100_000_000
    RATE = 44_100
    MAX_DEPTH = 8.0
    ECHO_LEN = 2400  # covers the 8 m round trip at 340 m/s (2075 samples)

    @classmethod
    def write(cls, path: Path, splits: dict[str, int] | None = None, seed: int = 0,
              nan_depth_at: tuple[int, ...] = ()) -> Path:
        splits = splits or {"train": 6, "val": 2, "test": 2}
        rng = np.random.default_rng(seed)
        chirp = synthesize_chirp(BATVISION_CHIRP)
        H, W, n_echo = cls.H, cls.W, cls.ECHO_LEN
        t, k = cls.T0, 0
        with BagWriter(path) as w:
            for split, n in splits.items():
                start = t
                for _ in range(n):
                    d = float(rng.uniform(1.0, 6.0))
                    rgb = np.clip(rng.normal(200 / d, 20, (H, W, 3)), 0, 255).astype(np.uint8)
                    depth = np.full((H, W), d, np.float32)
                    depth[:, :4] = np.nan  # invalid pixels
                    if k in nan_depth_at:
                        depth[:] = np.nan
                    echo = rng.normal(0, 1e-3, (2, n_echo)).astype(np.float32)
                    echo[:, :chirp.size] += 0.5 * chirp
                    delay = int(2 * d / 340.0 * cls.RATE)
                    echo[:, delay:delay + chirp.size] += 0.3 / d * chirp[:n_echo - delay]
                    w.write(topics.CAMERA_INFO, make_msg(topics.CAMERA_INFO_TYPE, t, "cam", camera_info_fields(cls.K, W, H)),
                            topics.CAMERA_INFO_TYPE)
                    w.write(topics.IMAGE, make_msg(topics.IMAGE_TYPE, t, "cam", image_fields(rgb, "rgb8")), topics.IMAGE_TYPE)
                    w.write(topics.DEPTH, make_msg(topics.IMAGE_TYPE, t, "cam", image_fields(depth, "32FC1")),
                            topics.IMAGE_TYPE)
                    w.write(topics.ECHO, make_msg(topics.ECHO_TYPE, t, "mic", echo_fields(echo, cls.RATE, BATVISION_CHIRP)),
                            topics.ECHO_TYPE)
                    t += cls.PERIOD
                    k += 1
                w.add_sequence(f"{split}0", split, start, t - cls.PERIOD)
                t += 2_000_000_000
        return path

    @classmethod
    def train_args(cls, bag: Path, out: Path, cache: Path, *extra: str) -> list[str]:
        """`avs-depth train` on the tiny config at 32x64 with a 32x32 echo STFT and an 8 m range."""
        return ["train", "--bag", str(bag), "--config", "avsnet_tiny", "--out", str(out), "--device", "cpu",
                "--num-workers", "0", "--batch-size", "2", "--set", "model.image_size=[32, 64]",
                "--set", "model.echo_size=[32, 32]", "--set", f"model.max_depth={cls.MAX_DEPTH}",
                "--set", f"data.max_depth={cls.MAX_DEPTH}", "--set", "data.image_size=null", "--set", f"data.cache_dir={cache}",
                *extra]

    @classmethod
    def train(cls, tmp_path: Path, *extra: str) -> Path:
        """Train one epoch on a fresh tiny bag (tmp_path/bag); returns the run directory (tmp_path/run)."""
        bag = cls.write(tmp_path / "bag")
        out = tmp_path / "run"
        assert main(cls.train_args(bag, out, tmp_path / "cache", *extra)) == 0
        return out


class SimBag:
    """A scale-ambiguous bv1 bag from `avs-depth simulate` at 64x128 (one sequence per split), and a tiny Monodepth2
    config and `avs-depth train --model monodepth2` arguments for it."""

    H, W = 64, 128
    INTERVAL = 2
    MAX_DEPTH = 12.0  # the bv1 preset's clip
    TINY_MODEL: ClassVar[dict[str, Any]] = {"height": H, "width": W, "encoder_width": 8, "decoder_channels": [4, 8, 16, 16, 32],
                  "frame_interval": INTERVAL, "batch_size": 4, "num_epochs": 1}

    @classmethod
    def simulate(cls, out: Path, sequences: int = 3, frames: int = 12, seed: int = 0) -> Path:
        assert main(["simulate", "--preset", "bv1", "--sequences", str(sequences), "--frames", str(frames),
                     "--seed", str(seed), "--out", str(out), "--height", str(cls.H), "--width", str(cls.W),
                     "--scale-ambiguous"]) == 0
        return out

    @classmethod
    def write_config(cls, path: Path, **model: object) -> Path:
        """A sectioned monodepth2 config for the tiny network."""
        path.write_text(yaml.safe_dump({"model": {**cls.TINY_MODEL, **model}, "train": {"num_workers": 0, "log_every": 1},
                                        "data": {"max_depth": cls.MAX_DEPTH}}))
        return path

    @staticmethod
    def train_args(bag: Path, out: Path, cache: Path, config: Path, *extra: str) -> list[str]:
        return ["train", "--model", "monodepth2", "--bag", str(bag), "--config", str(config), "--out", str(out),
                "--device", "cpu", "--set", f"data.cache_dir={cache}", *extra]


def tiny_avsnet_checkpoint(path: Path, **overrides: Any) -> Path:
    """config/avsnet_tiny.yaml's model (with overrides), randomly initialised with seed 0, saved at `path`."""
    cfg = yaml.safe_load((ROOT / "config" / "avsnet_tiny.yaml").read_text())["model"]
    torch.manual_seed(0)
    return AVSNet(AVSNetConfig.from_dict({**cfg, **overrides})).save(path)


@pytest.fixture(scope="session")
def tiny_bag() -> type[TinyBag]:
    return TinyBag


@pytest.fixture(scope="session")
def sim() -> type[SimBag]:
    return SimBag


@pytest.fixture(scope="session")
def sim_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SimBag's bag, 3 sequences of 12 frames, simulated once per session."""
    return SimBag.simulate(tmp_path_factory.mktemp("sim") / "bag")


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Callable[..., Path]:
    return tiny_avsnet_checkpoint
