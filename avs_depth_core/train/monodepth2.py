"""Self-supervised Monodepth2 training on a bag's frame triples: the relative depth model that AVS-Net's echoes scale.

Numbers follow nianticlabs/monodepth2 (options.py, trainer.py, mono_dataset.py) and live in the
config's model section (config/monodepth2.yaml, Monodepth2Config): 0.85 SSIM + 0.15 L1, per-pixel minimum reprojection
over the source frames, auto-masking, edge-aware smoothness 1e-3 / 2^s on mean-normalised disparity, scales {1, 1/2, 1/4,
1/8}, 192x640, Adam lr 1e-4 with StepLR(15, 0.1) stepped per epoch, batch 12, 20 epochs; the sources are the triple's
neighbours frame_interval frames away (20 in the AVS-Net paper). Augmentation as mono_dataset.py: horizontal flip with
p 0.5 (images and intrinsics) and colour jitter (brightness, contrast, saturation 0.2, hue 0.1) with p 0.5, one draw per
sample for all of its frames, applied only to the networks' inputs; the loss sees the un-jittered frames.

The loop is train/loop.py's (progress, TensorBoard + CSV logs and a training curve, <run>/checkpoints/last after every
epoch with optimiser state for --resume, <run>/checkpoints/best, DDP under torchrun); this file holds what is
Monodepth2's. Validation after every epoch on the val split's triples: the photometric loss, and, where the bag has
depth, the seven depth metrics after per-image median scaling with the ground truth (Monodepth2's evaluate_depth.py
protocol); best = lowest median-scaled abs_rel, or the lowest validation loss when the val split has no depth.

The config has the sections every trainer reads: `model:` (Monodepth2Config: network, loss, augmentation), `train:`
(the loop's keys, and epochs, batch_size, lr, scheduler_step_size, scheduler_gamma, which set Monodepth2Config's
num_epochs, batch_size, learning_rate and StepLR keys) and `data:` (DataConfig). The older flat form (Monodepth2Config
keys at the top level) is still read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import StepLR

from avs_depth_core.config import read_sections, section_from_dict
from avs_depth_core.data.datasets import TripletBagDataset
from avs_depth_core.geometry import intrinsics_pyramid
from avs_depth_core.losses.photometric import Monodepth2Loss, Monodepth2LossResult
from avs_depth_core.metrics import METRIC_NAMES, MetricAccumulator
from avs_depth_core.models.monodepth2 import (
    CHECKPOINT_KIND,
    TRAIN_KEYS,
    DepthNet,
    Monodepth2Config,
    PoseNet,
    echo_feature_settings,
    load_monodepth2,
    output_depth,
    predict_poses,
    save_monodepth2,
)
from avs_depth_core.models.resnet import LAYOUTS as RESNET_LAYOUTS
from avs_depth_core.scaling import recover_scale_batch
from avs_depth_core.train import loop
from avs_depth_core.train.dynamic_labels import (
    DynamicLabelsConfig,
    WithDynamicLabels,
    dynamic_term,
    photometric_exclusion,
)
from avs_depth_core.train.echo_supervision import EchoSupervision, EchoSupervisionConfig
from avs_depth_core.train.loop import LoopConfig, Parts, fit
from avs_depth_core.train.runtime import Runtime, autocast, progress, to_device

DEFAULT_CONFIG = "monodepth2.yaml"
# Offsets (in units of frame_interval) of the frames in a TripletBagDataset item, in its order.
TRIPLE_OFFSETS = (-1, 0, 1)
SECTIONS = ("model", "train", "data")


@dataclass
class DataConfig(loop.DataConfig):
    """The `data:` section: which triples train and validate, and how the bag is read."""

    max_depth: float = 30.0  # depth at or beyond it is invalid (BatVision: 12 m BV1, 30 m BV2); also the cache's echo window
    # The trainer never reads the echo; the cache stores it anyway when the bag has one, so keep its resized STFT small.
    echo_size: tuple[int, int] = (32, 32)


# ---------------------------------------------------------------------------------------------------------------------
# configuration


def sectioned_config(raw: Any, source: str) -> dict[str, Any]:
    """A monodepth2 YAML (model/train/data sections, or the older flat Monodepth2Config keys) -> {"model", "train", "data"}."""
    return read_sections(raw, source, flat="model")


def resolve_config(config: dict[str, Any]) -> tuple[Monodepth2Config, LoopConfig, DataConfig]:
    """Validate the three sections (train.epochs/batch_size/lr/scheduler_* set the model's keys); errors name the key."""
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise ValueError(f"config: unknown section(s) {unknown}; expected model, train, data")
    model_values = dict(config.get("model") or {})
    train_values = dict(config.get("train") or {})
    train_values.pop("echo_supervision", None)  # echo_supervision_config reads it
    train_values.pop("dynamic_labels", None)  # dynamic_labels_config reads it
    for key, model_key in TRAIN_KEYS.items():
        if key in train_values:
            model_values[model_key] = train_values.pop(key)
    model_cfg = _model_config(model_values)
    if not set(model_cfg.source_offsets) <= {-1, 1}:
        raise ValueError(f"config: model.source_offsets {model_cfg.source_offsets}: the triple dataset provides the frames "
                         f"at -1 and +1 frame_interval only")
    for key in ("num_layers", "pose_num_layers"):
        if getattr(model_cfg, key) not in RESNET_LAYOUTS:
            raise ValueError(f"config: model.{key} {getattr(model_cfg, key)}: choose a ResNet depth from "
                             f"{sorted(RESNET_LAYOUTS)}")
    train_cfg = section_from_dict(LoopConfig, train_values, "train")
    train_cfg.check()
    data_cfg = section_from_dict(DataConfig, config.get("data"), "data")
    data_cfg.echo_size = tuple(data_cfg.echo_size)
    if not 0 <= data_cfg.min_depth < data_cfg.max_depth:
        raise ValueError(f"config: need 0 <= data.min_depth < data.max_depth, got {data_cfg.min_depth}, {data_cfg.max_depth}")
    if len(data_cfg.echo_size) != 2 or min(data_cfg.echo_size) < 1:
        raise ValueError(f"config: data.echo_size must be [height, width], got {list(data_cfg.echo_size)}")
    return model_cfg, train_cfg, data_cfg


def echo_supervision_config(config: dict[str, Any]) -> EchoSupervisionConfig:
    """The `train.echo_supervision` subsection (absent or null: off), checked; errors name the key."""
    values = (config.get("train") or {}).get("echo_supervision")
    if values is not None and not isinstance(values, dict):
        raise ValueError(f"config: train.echo_supervision must be a mapping (checkpoint, weight, ...), got {values!r}")
    cfg = section_from_dict(EchoSupervisionConfig, values, "train.echo_supervision")
    if cfg.checkpoint is not None:
        cfg.checkpoint = str(cfg.checkpoint)
    cfg.check()
    return cfg


def dynamic_labels_config(config: dict[str, Any]) -> DynamicLabelsConfig:
    """The `train.dynamic_labels` subsection (absent or null: off), checked; errors name the key."""
    values = (config.get("train") or {}).get("dynamic_labels")
    if values is not None and not isinstance(values, dict):
        raise ValueError(f"config: train.dynamic_labels must be a mapping (labels, init_checkpoint, ...), got {values!r}")
    cfg = section_from_dict(DynamicLabelsConfig, values, "train.dynamic_labels")
    for key in ("labels", "init_checkpoint"):
        if getattr(cfg, key) is not None:
            setattr(cfg, key, str(getattr(cfg, key)))
    cfg.check()
    return cfg


def _model_config(values: dict[str, Any]) -> Monodepth2Config:
    try:
        typed = section_from_dict(Monodepth2Config, values, "model")
    except ValueError as err:
        raise ValueError(str(err)) from None
    except TypeError as err:
        raise ValueError(f"config: model: {err}") from None
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in typed.to_dict().items()}
    return Monodepth2Config.from_dict(plain, source="config model")


# ---------------------------------------------------------------------------------------------------------------------
# networks and augmentation


class Monodepth2Model(nn.Module):
    """DepthNet + PoseNet as one module (state dict keys depth.* and pose.*, as load_monodepth2 reads them), so DDP wraps
    both and one forward call gives what the loss needs."""

    def __init__(self, config: Monodepth2Config, load_pretrained: bool = True) -> None:
        super().__init__()
        self.depth = DepthNet.from_config(config, load_pretrained)
        self.pose = PoseNet.from_config(config, load_pretrained)

    def forward(self, target: torch.Tensor, sources: dict[int, torch.Tensor],
                rotations: dict[int, torch.Tensor] | None = None, echo: torch.Tensor | None = None
                ) -> tuple[dict[tuple[str, int], torch.Tensor], dict[int, torch.Tensor]]:
        """(augmented) target (B, 3, H, W) and sources {offset: (B, 3, H, W)} -> (DepthNet outputs: disparities by scale
        and, with model.echo_input, ("log_scale", 0); poses target->source); rotations: the pose prior's
        (imu_pair_rotations), replacing PoseNet's; echo: the target's echo features (model.echo_input only)."""
        return self.depth(target, echo), predict_poses(self.pose, target, sources, rotations)


def depthnet_echo(batch: dict[str, Any], config: Monodepth2Config, device: torch.device) -> torch.Tensor | None:
    """The centre frames' echo features for a DepthNet with model.echo_input (None without one). The echo is not
    mirrored with a flipped sample: it sets one scale per image, which mirroring does not change."""
    if config.echo_input == "none":
        return None
    if "echo" not in batch:
        raise ValueError(f"model.echo_input {config.echo_input!r}: the batch has no echo features (a bag without echoes?)")
    return batch["echo"].to(device)


def split_outputs(outputs: dict[tuple[str, int], torch.Tensor]
                  ) -> tuple[dict[tuple[str, int], torch.Tensor], dict[tuple[str, int], torch.Tensor]]:
    """DepthNet outputs -> (the disparities the photometric loss sees, the rest: the echo input's log scale)."""
    disps = {k: v for k, v in outputs.items() if k[0] == "disp"}
    return disps, {k: v for k, v in outputs.items() if k[0] != "disp"}


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    # ITU-R 601-2 luma, the weights torchvision's rgb_to_grayscale uses.
    return (0.299 * x[..., 0, :, :] + 0.587 * x[..., 1, :, :] + 0.114 * x[..., 2, :, :]).unsqueeze(-3)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: float) -> torch.Tensor:
    return (factor * x + (1 - factor) * other).clamp(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = x.unbind(-3)
    maxc, _ = x.max(-3)
    minc, _ = x.min(-3)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], -3)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) HSV (hue in [0, 1)) -> RGB in [0, 1]."""
    h, s, v = x.unbind(-3)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = torch.stack([torch.stack(c, -3) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    index = i.unsqueeze(-3).unsqueeze(0).expand(1, *x.shape)
    return torch.gather(choices, 0, index)[0]


def color_jitter(frames: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """torchvision ColorJitter on one sample's frames (N, 3, H, W) with ONE draw of factors and order for all of them
    (Monodepth2 mono_dataset.py): brightness/contrast/saturation factors U[1 - b, 1 + b], hue shift U[-h, h], in a random
    order. Contrast blends each frame with the mean of its own grayscale, as torchvision does."""
    def draw(spread: float, centre: float = 1.0) -> float:
        return float(centre + spread * (2 * torch.rand((), generator=generator) - 1))

    factors = {"brightness": draw(brightness), "contrast": draw(contrast), "saturation": draw(saturation), "hue": draw(hue, 0.0)}
    x = frames
    for k in torch.randperm(4, generator=generator).tolist():
        name = ("brightness", "contrast", "saturation", "hue")[k]
        f = factors[name]
        if name == "brightness":
            x = (x * f).clamp(0, 1)
        elif name == "contrast":
            x = _blend(x, _grayscale(x).mean(dim=(-3, -2, -1), keepdim=True), f)
        elif name == "saturation":
            x = _blend(x, _grayscale(x), f)
        elif f != 0:
            hsv = rgb_to_hsv(x)
            hsv = torch.stack([(hsv[..., 0, :, :] + f) % 1.0, hsv[..., 1, :, :], hsv[..., 2, :, :]], -3)
            x = hsv_to_rgb(hsv).clamp(0, 1)
    return x


def augment(frames: torch.Tensor, K: torch.Tensor, config: Monodepth2Config,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """augment_with_flags without the flags."""
    return augment_with_flags(frames, K, config, generator)[:3]


def augment_with_flags(frames: torch.Tensor, K: torch.Tensor, config: Monodepth2Config,
                       generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """frames (B, N, 3, H, W) in [0, 1], K (B, 3, 3) -> (frames for the loss, frames for the networks, K).

    Flip (p hflip_prob) mirrors every frame of a sample and its intrinsics: pixel u goes to W - 1 - u, so cx -> W - 1 - cx
    (and the skew changes sign). Monodepth2 keeps K, right only for cx = (W - 1) / 2; kept here as the correct geometry.
    Jitter (p color_jitter_prob) touches only the networks' copy. The fourth result: which samples were mirrored (B,).
    """
    b, _, _, _, w = frames.shape
    flip = torch.rand(b, generator=generator) < config.hflip_prob
    jitter = torch.rand(b, generator=generator) < config.color_jitter_prob
    frames, K = frames.clone(), K.clone()
    if flip.any():
        idx = flip.nonzero().flatten().to(frames.device)
        frames[idx] = frames[idx].flip(-1)
        K[idx, 0, 2] = (w - 1) - K[idx, 0, 2]
        K[idx, 0, 1] = -K[idx, 0, 1]
    inputs = frames.clone()
    for i in jitter.nonzero().flatten().tolist():
        inputs[i] = color_jitter(frames[i], config.brightness, config.contrast, config.saturation, config.hue, generator)
    return frames, inputs, K, flip


def split_frames(frames: torch.Tensor, offsets: list[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """(B, 3, 3, H, W) triple -> (target (B, 3, H, W), {offset: source}) for the configured source offsets."""
    by_offset = {o: frames[:, i] for i, o in enumerate(TRIPLE_OFFSETS)}
    return by_offset[0], {o: by_offset[o] for o in offsets}


def imu_pair_rotations(batch: dict[str, Any], flipped: torch.Tensor | None, offsets: list[int],
                       device: torch.device) -> dict[int, torch.Tensor]:
    """model.pose_prior imu: per source offset the rotation (B, 3, 3) of the pair's transform in temporal order (first
    camera -> second camera, predict_poses' convention) from the triple's IMU attitudes R (camera-to-world): R_second^T
    R_first. A mirrored sample (flip augmentation) mirrors its rotation too: S R S with S = diag(-1, 1, 1)."""
    if "imu_rotation" not in batch:
        raise ValueError("model.pose_prior imu: the batch has no imu_rotation (the dataset was built without need_imu)")
    R = batch["imu_rotation"].double()
    by_offset = {o: R[:, i] for i, o in enumerate(TRIPLE_OFFSETS)}
    out = {}
    for o in offsets:
        first, second = (by_offset[o], by_offset[0]) if o < 0 else (by_offset[0], by_offset[o])
        rot = second.transpose(1, 2) @ first
        if flipped is not None and flipped.any():
            S = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=rot.dtype))
            rot = torch.where(flipped.view(-1, 1, 1), S @ rot @ S, rot)
        out[o] = rot.float().to(device)
    return out


def batch_intrinsics(K: torch.Tensor, size: tuple[int, int], stamps: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Dataset K (B, 3, 3) for the network size -> 4x4 (K, inv_K); missing (NaN) or bad intrinsics name the frames."""
    try:
        return intrinsics_pyramid(K, size, size, [0], source="camera intrinsics")[0]
    except ValueError as err:
        raise ValueError(f"{err} (triples centred on stamp_ns {[int(s) for s in stamps]})") from None


def training_loss(net: nn.Module, criterion: Monodepth2Loss, batch: dict[str, Any], config: Monodepth2Config,
                  runtime: Runtime, echo: EchoSupervision | None = None, step: int = 0,
                  dynamic: DynamicLabelsConfig | None = None) -> Monodepth2LossResult:
    """One training batch (TripletBagDataset items, on the host) -> the loss result: augment, move to the device, depth and
    pose networks on the augmented frames, the multi-scale loss on the plain ones; with `echo`, plus its weighted
    pseudo-label term at optimiser step `step` (its scalars in the result's extras); with `dynamic`, plus the mined
    dynamic-region label term of the batch's "dynamic_label" / "dynamic_mask" (train/dynamic_labels.py)."""
    frames, inputs, K, flipped = augment_with_flags(batch["rgb"], batch["K"], config)
    K4, inv_K4 = batch_intrinsics(K, (config.height, config.width), batch["stamp_ns"])
    moved = to_device({"frames": frames, "inputs": inputs, "K4": K4, "inv_K4": inv_K4}, runtime.device)
    target, sources = split_frames(moved["frames"], config.source_offsets)
    target_in, sources_in = split_frames(moved["inputs"], config.source_offsets)
    rotations = imu_pair_rotations(batch, flipped, config.source_offsets, runtime.device) \
        if config.pose_prior == "imu" else None
    echo_in = depthnet_echo(batch, config, runtime.device)
    with autocast(runtime):
        outputs, poses = net(target_in, sources_in, rotations, echo_in)
    outputs = {k: v.float() for k, v in outputs.items()}
    poses = {k: v.float() for k, v in poses.items()}
    # The photometric loss sees the unscaled depth: scaling the depth and not PoseNet's translation would change the warp.
    disps, scale_outputs = split_outputs(outputs)
    exclude = photometric_exclusion(batch, flipped, runtime.device) \
        if dynamic is not None and dynamic.enabled and dynamic.mask_photometric else None
    result = criterion(target, sources, disps, poses, moved["K4"], moved["inv_K4"], exclude)
    if dynamic is not None and dynamic.enabled:
        term, stats = dynamic_term(disps, batch, flipped, dynamic, (config.min_depth, config.max_depth))
        result = dataclasses.replace(result, loss=result.loss + term, extras={**result.extras, **stats})
    if echo is None:
        return result
    depth = output_depth({**disps, **scale_outputs}, config.min_depth, config.max_depth)
    term, extras = echo.term(depth, batch, flipped, step)
    if scale_outputs:
        extras = {**extras, "echo_log_scale": scale_outputs[("log_scale", 0)].detach().mean()}
    return dataclasses.replace(result, loss=result.loss + term, extras={**result.extras, **extras})


# ---------------------------------------------------------------------------------------------------------------------
# training


def build_dataset(bag: Path, split: str, model_cfg: Monodepth2Config, data_cfg: DataConfig, verbose: bool,
                  echo: EchoSupervision | None = None) -> TripletBagDataset:
    """The triples; with echo supervision, every frame's echo as the teacher AVS-Net reads it (its STFT, size, rate)."""
    echo_inputs: dict[str, Any] = {"echo_size": data_cfg.echo_size}
    if echo is not None:
        t = echo.teacher.cfg
        if data_cfg.max_depth != t.max_depth:
            raise ValueError(f"config: data.max_depth {data_cfg.max_depth} differs from the echo-supervision AVS-Net's "
                             f"max_depth {t.max_depth} (its echo window); set data.max_depth={t.max_depth}")
        echo_inputs = {"echo_size": tuple(t.echo_size or t.image_size), "stft": t.stft, "speed_of_sound": t.speed_of_sound,
                       "sample_rate": t.sample_rate, "neighbour_echoes": split == "train"}
    return TripletBagDataset(bag, split=split, image_size=(model_cfg.height, model_cfg.width),
                             interval=model_cfg.frame_interval, max_depth=data_cfg.max_depth, tolerance_s=data_cfg.tolerance_s,
                             cache_dir=data_cfg.cache_dir, skip_bad=data_cfg.skip_bad, progress=verbose, verbose=verbose,
                             need_imu=model_cfg.pose_prior == "imu", **echo_inputs)


class Monodepth2Trainer(loop.Trainer):
    """Self-supervised relative depth: DepthNet + PoseNet on frame triples, Adam with the per-epoch StepLR of
    Monodepth2's trainer.py, the multi-scale photometric loss on augmented inputs."""

    kind = CHECKPOINT_KIND
    command = "avs-depth train --model monodepth2"
    samples = "triples"
    scheduler_per_epoch = True  # Monodepth2 steps its StepLR once per epoch
    score_keys = ("abs_rel", "loss")  # the val loss when the val split has no depth
    shown_keys = ("loss", "abs_rel", "rmse", "delta1")
    plot_keys = ("loss", "abs_rel", "delta1")

    def __init__(self, config: dict[str, Any]) -> None:
        model_cfg, train, data = resolve_config(config)
        self.echo_cfg = echo_supervision_config(config)
        self.dynamic_cfg = dynamic_labels_config(config)
        if self.echo_cfg.enabled:
            model_cfg.depth_units = "metres"  # stored with the weights: the DepthNet is trained to predict metres
        elif model_cfg.depth_units == "metres":
            raise ValueError("config: model.depth_units metres needs train.echo_supervision.checkpoint (or "
                             "--echo-supervision CKPT): only echo-supervised training makes the depth metric")
        if model_cfg.echo_input != "none" and not self.echo_cfg.enabled:
            raise ValueError(f"config: model.echo_input {model_cfg.echo_input!r} needs train.echo_supervision.checkpoint "
                             f"(or --echo-supervision CKPT): the echo sets the scale of a metric DepthNet, and the "
                             f"echo features are the teacher AVS-Net's")
        # The teacher loads on the CPU here (the datasets need its echo settings) and moves in build().
        self.echo = EchoSupervision(self.echo_cfg, "cpu", (model_cfg.min_depth, model_cfg.max_depth)) \
            if self.echo_cfg.enabled else None
        if self.echo is not None and model_cfg.echo_input != "none":
            # the DepthNet reads the teacher's echo features: their settings go into the checkpoint with the weights
            features = echo_feature_settings(self.echo.teacher.cfg)
            model_cfg.echo_channels, model_cfg.echo_size = features["channels"], list(features["size"])
            model_cfg.echo_features = features
        super().__init__(model_cfg, train, data, epochs=model_cfg.num_epochs, batch_size=model_cfg.batch_size)
        if self.echo is not None:  # the depth is meant to be metres: score and show it unscaled as well
            self.score_keys = ("metric_abs_rel", *self.score_keys)
            self.shown_keys = (*self.shown_keys, "metric_abs_rel", "metric_delta1")
            self.plot_keys = (*self.plot_keys, "metric_abs_rel", "metric_delta1")

    def resolved(self) -> dict[str, Any]:
        out = super().resolved()
        if self.echo_cfg.enabled:
            out["train"]["echo_supervision"] = dataclasses.asdict(self.echo_cfg)
        if self.dynamic_cfg.enabled:
            out["train"]["dynamic_labels"] = dataclasses.asdict(self.dynamic_cfg)
        return out

    def describe(self) -> str:
        m = self.model_cfg
        return (f"Monodepth2 (ResNet-{m.num_layers}, {m.height}x{m.width}, sources "
                f"{[o * m.frame_interval for o in m.source_offsets]} frames)")

    def dataset(self, bag: Path, split: str, verbose: bool) -> TripletBagDataset:
        dataset = build_dataset(bag, split, self.model_cfg, self.data, verbose, self.echo)
        if self.dynamic_cfg.enabled and split == self.data.train_split:
            return WithDynamicLabels(dataset, self.dynamic_cfg.labels)
        return dataset

    def build(self, device: torch.device, total_steps: int) -> Parts:
        model = Monodepth2Model(self.model_cfg).to(device)
        if self.dynamic_cfg.init_checkpoint is not None:  # their stage 4 starts from the stage-1 networks
            init_from_checkpoint(model, self.dynamic_cfg.init_checkpoint)
        if self.echo is not None:
            self.echo.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.model_cfg.learning_rate)
        scheduler = StepLR(optimizer, self.model_cfg.scheduler_step_size, self.model_cfg.scheduler_gamma)
        return Parts(model, optimizer, scheduler, Monodepth2Loss.from_config(self.model_cfg).to(device))

    def loss(self, net: nn.Module, criterion: Monodepth2Loss, batch: dict[str, Any], step: int,
             runtime: Runtime) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        result = training_loss(net, criterion, batch, self.model_cfg, runtime, self.echo, step, self.dynamic_cfg)
        return result.loss, {"automasked": 1.0 - result.warp_selected_fraction, **result.extras}

    def validate(self, model: Monodepth2Model, criterion: Monodepth2Loss, loader: torch.utils.data.DataLoader,
                 runtime: Runtime) -> dict[str, float]:
        return validate(model, criterion, loader, runtime.device, self.model_cfg, self.data)

    def checkpoint_config(self) -> dict[str, Any]:
        return dict(self.model_cfg.to_dict(), pretrained_encoder=None)  # the weights are in the checkpoint now

    def save_best(self, model: Monodepth2Model, path: Path, meta: dict[str, Any]) -> None:
        save_monodepth2(path, model.depth, self.model_cfg, model.pose, meta)


def init_from_checkpoint(model: Monodepth2Model, path: str | Path) -> None:
    """Load a monodepth2 checkpoint's DepthNet and PoseNet into `model` (the shapes must match the config's)."""
    loaded = load_monodepth2(path, "cpu", with_pose=True)
    try:
        model.depth.load_state_dict(loaded.depth_net.state_dict())
        model.pose.load_state_dict(loaded.pose_net.state_dict())
    except RuntimeError as err:
        raise ValueError(f"{path}: does not fit the configured Monodepth2 (train.dynamic_labels.init_checkpoint): "
                         f"{str(err).splitlines()[0]}") from None


def train_monodepth2(config: dict[str, Any], bag: str | Path, run_dir: str | Path, *, resume: str | Path | None = None,
                     device: str | None = None) -> dict[str, Any]:
    """Train Monodepth2 on `bag`'s triples into `run_dir` (train/loop.py fit). `config` is sectioned (sectioned_config)."""
    return fit(Monodepth2Trainer(config), bag, run_dir, resume=resume, device=device)


@torch.inference_mode()
def validate(model: Monodepth2Model, criterion: Monodepth2Loss, loader: torch.utils.data.DataLoader, device: torch.device,
             model_cfg: Monodepth2Config, data_cfg: DataConfig) -> dict[str, float]:
    """Mean photometric loss of the un-augmented val triples, and where the centre frames have depth, the seven metrics
    after per-image median scaling with the ground truth (Monodepth2 evaluate_depth.py) plus the spread of those ratios;
    for a metric DepthNet (depth_units metres) also the metrics of the unscaled depth, prefixed metric_."""
    was_training = model.training
    model.eval()
    size = (model_cfg.height, model_cfg.width)
    acc = MetricAccumulator(data_cfg.min_depth, data_cfg.max_depth)
    unscaled = MetricAccumulator(data_cfg.min_depth, data_cfg.max_depth) if model_cfg.depth_units == "metres" else None
    losses, ratios = [], []
    try:
        for batch in progress(loader, len(loader), "validate", Runtime(device)):
            K4, inv_K4 = batch_intrinsics(batch["K"], size, batch["stamp_ns"])
            frames = batch["rgb"].to(device)
            target, sources = split_frames(frames, model_cfg.source_offsets)
            rotations = imu_pair_rotations(batch, None, model_cfg.source_offsets, device) \
                if model_cfg.pose_prior == "imu" else None
            outputs, poses = model(target, sources, rotations, depthnet_echo(batch, model_cfg, device))
            disps, _ = split_outputs(outputs)
            result = criterion(target, sources, disps, poses, K4.to(device), inv_K4.to(device))
            losses.append((float(result.loss), int(target.shape[0])))
            if "depth" not in batch:
                continue
            has = batch["has_depth"].bool()
            if not has.any():
                continue
            depth = output_depth(outputs, model_cfg.min_depth, model_cfg.max_depth)[has.to(device)]
            gt = batch["depth"][has].to(device)
            valid = (gt > data_cfg.min_depth) & (gt < data_cfg.max_depth)
            scales = recover_scale_batch(depth, gt, "median", mask=valid, min_depth=data_cfg.min_depth,
                                         max_depth=data_cfg.max_depth, min_pixels=1, fallback="unit")
            ratios += [s.scale for s in scales if s.fallback is None]
            acc.update(torch.stack([depth[i] * s.scale for i, s in enumerate(scales)]), gt)
            if unscaled is not None:
                unscaled.update(depth.clamp(data_cfg.min_depth, data_cfg.max_depth), gt)
    finally:
        model.train(was_training)
    out = {"loss": sum(v * n for v, n in losses) / max(1, sum(n for _, n in losses))}
    if acc.count:
        out.update({k: v for k, v in acc.compute().items() if k in METRIC_NAMES})
        med = float(np.median(ratios))
        out["scale_ratio_median"] = med
        out["scale_ratio_std"] = float(np.std(np.asarray(ratios) / med))
    if unscaled is not None and unscaled.count:
        out.update({f"metric_{k}": v for k, v in unscaled.compute().items() if k in METRIC_NAMES})
    return out
