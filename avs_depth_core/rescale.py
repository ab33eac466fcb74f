"""The frozen side of the pixel-wise rescale maps (TR2M with echoes; the trainable head is models/rescale_head.py), and
scaling method "pixelwise" for live use and evaluation.

RescaleFrontend holds the frozen networks, all run under no_grad:
- the relative model R (avs_depth_core.relative.RelativeDepthModel): an Only-RGB AVS-Net (`relative: avsnet_rgb`, the
  live demo's relative model) or a Monodepth2 DepthNet (`relative: monodepth2`); its map becomes the relative disparity
  r = 1/R normalised to median 1 per image;
- the image features (TR2M: DINOv2's last patch tokens): one decoder map (`feature_layer`, default r3 at 1/8) of the
  MiDaS part of an Only-RGB AVS-Net (`features_checkpoint`; the relative model's own checkpoint when R is that AVS-Net);
- the echo (TR2M: the CLIP text token): an RGB-Echoes AVS-Net (`echo_checkpoint`) gives its ResNet-18 STFT tokens, its
  range-profile tokens when it has a range encoder and `echo_range_tokens` is on, and its metric map Mp, whose median
  gives the per-image global scale k the head starts from (AVS-Net eq. 3 done in disparity: k = median(1/Mp) /
  median(r) over the pixels where Mp lies within the depth range).
precompute runs them once over a bag's frames (and their mirrors, ears swapped) with TR2M's pseudo labels; training and
evaluation then only run the small head (TR2M precomputes its pseudo depth the same way).

PixelwiseRescaler is scale method "pixelwise" in the live pipeline: with a fresh echo, the head's maps A and B from the
image features and the echo tokens, anchored at this frame's median scale s (scaling.recover_scale "pixelwise" returns
it), give M = 1 / (A r + B) (or the depth form). Without one, the scale the tracker holds (the same hold and NaN rules as
"median") scales R globally, because the head's inputs (echo tokens, Mp) belong to the frame they came with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from avs_depth_core.audio.features import unpack_range_profile
from avs_depth_core.config import check_fields, dataclass_from_dict
from avs_depth_core.data.datasets import SupervisedBagDataset
from avs_depth_core.losses.rescale import pseudo_labels
from avs_depth_core.models.avsnet import AVSNet
from avs_depth_core.models.rescale_head import EchoRescaleHead, normalised_disparity
from avs_depth_core.relative import RelativeDepthModel
from avs_depth_core.scaling import ScaleResult, apply_scale

EAR_SWAP = [1, 0, 3, 2]  # STFT left/right, range-profile planes left/right (train/echo_augment.py's layout)


RELATIVE_KINDS = ("avsnet_rgb", "monodepth2")
FEATURE_LAYERS = ("bottleneck", "r4", "r3", "r2")


@dataclass
class FrontendConfig:
    """The `frontend:` keys of the `model:` section (checkpoints of frozen networks)."""

    relative: str = "avsnet_rgb"  # RELATIVE_KINDS
    relative_checkpoint: str = ""
    features_checkpoint: str = ""  # Only-RGB AVS-Net for the image features ("" = relative_checkpoint, avsnet_rgb only)
    feature_layer: str = "r4"  # FEATURE_LAYERS: 1/32, 1/16, 1/8, 1/4 of the input (TR2M: 1/14)
    echo_checkpoint: str = ""  # RGB-Echoes AVS-Net: echo tokens and the global scale ("" = no echo)
    echo_range_tokens: bool = True  # add the echo network's range-profile tokens (when it has a range encoder)
    min_depth: float = 1e-3  # Mp pixels used for the global scale: min_depth < Mp < max_depth
    max_depth: float = 30.0

    def __post_init__(self) -> None:
        check_fields(self)
        if self.relative not in RELATIVE_KINDS:
            raise ValueError(f"model.frontend.relative must be one of {list(RELATIVE_KINDS)}, got {self.relative!r}")
        if self.feature_layer not in FEATURE_LAYERS:
            raise ValueError(f"model.frontend.feature_layer must be one of {list(FEATURE_LAYERS)}, got {self.feature_layer!r}")
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(f"model.frontend: need 0 <= min_depth < max_depth, got {self.min_depth}, {self.max_depth}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config model.frontend") -> FrontendConfig:
        return dataclass_from_dict(cls, values, where, prefix="model.frontend.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _require(path: str, key: str) -> Path:
    if not path:
        raise ValueError(f"config: model.frontend.{key} is required (a checkpoint path)")
    p = Path(path)
    if not (p.is_file() or p.with_suffix(".json").is_file() or Path(str(p) + ".json").is_file()):
        raise FileNotFoundError(f"model.frontend.{key}: {path}: checkpoint not found")
    return p


class RescaleFrontend:
    """The frozen networks; __call__(rgb (B,3,H,W) in [0,1], echo (B,C,He,We) or None) -> dict of tensors."""

    def __init__(self, cfg: FrontendConfig, device: str | torch.device = "cpu") -> None:
        self.cfg, self.device = cfg, torch.device(device)
        if cfg.relative == "avsnet_rgb":
            self.relative = RelativeDepthModel.avsnet_rgb(_require(cfg.relative_checkpoint, "relative_checkpoint"), device)
        else:
            self.relative = RelativeDepthModel.monodepth2(_require(cfg.relative_checkpoint, "relative_checkpoint"), device)
        features = cfg.features_checkpoint or (cfg.relative_checkpoint if cfg.relative == "avsnet_rgb" else "")
        if cfg.relative == "avsnet_rgb" and not cfg.features_checkpoint:
            self.features = self.relative.module
        else:
            self.features = AVSNet.from_checkpoint(_require(features, "features_checkpoint"), device)
        self.echo_net = AVSNet.from_checkpoint(_require(cfg.echo_checkpoint, "echo_checkpoint"), device) \
            if cfg.echo_checkpoint else None
        if self.echo_net is not None and not self.echo_net.cfg.use_echo:
            raise ValueError(f"model.frontend.echo_checkpoint: {cfg.echo_checkpoint} is an Only-RGB AVS-Net; "
                             "the echo tokens need an RGB-Echoes checkpoint (use_echo true)")
        for net in (self.features, self.echo_net):
            if net is not None:
                net.eval().requires_grad_(False)

    @classmethod
    def from_modules(cls, cfg: FrontendConfig, relative: RelativeDepthModel | None, features: AVSNet,
                     echo_net: AVSNet | None) -> RescaleFrontend:
        """From networks already loaded (the live pipeline's); `relative` may be None when only features and echo
        tokens are asked for."""
        frontend = cls.__new__(cls)
        frontend.cfg, frontend.device = cfg, next(features.parameters()).device
        frontend.relative, frontend.features, frontend.echo_net = relative, features, echo_net
        return frontend

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.features.cfg.image_size)

    @property
    def image_channels(self) -> int:
        return self.features.visual.channels[self.cfg.feature_layer]

    @property
    def uses_range_tokens(self) -> bool:
        return self.echo_net is not None and self.cfg.echo_range_tokens and self.echo_net.range_encoder is not None

    @torch.no_grad()
    def echo_tokens(self, echo: torch.Tensor) -> torch.Tensor:
        net = self.echo_net
        tokens = net.audio(echo[:, :2])
        if self.uses_range_tokens:
            tokens = torch.cat([tokens, net.range_encoder(unpack_range_profile(echo[:, 2:], net.cfg.range_bins))], dim=1)
        return tokens

    @torch.no_grad()
    def image_features(self, rgb: torch.Tensor) -> torch.Tensor:
        net = self.features
        return net.visual((rgb - net.norm_mean.to(rgb.dtype)) / net.norm_std.to(rgb.dtype))[self.cfg.feature_layer]

    @torch.no_grad()
    def __call__(self, rgb: torch.Tensor, echo: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """-> relative (R), rel_disparity (r, median 1), features, and with an echo network and echo: echo_tokens,
        pseudo_metric (Mp), global_scale (k, 1/m), pseudo_metric_log (log Mp k r); without: a fitted-anchor head's inputs."""
        rgb = rgb.to(self.device)
        relative = self.relative(rgb)
        r = normalised_disparity(relative, "depth")
        out = {"relative": relative, "rel_disparity": r, "features": self.image_features(rgb)}
        if self.echo_net is not None and echo is not None:
            echo = echo.to(self.device)
            mp = self.echo_net(rgb, echo)["metric_depth"]
            k = global_disparity_scale(r, mp, self.cfg.min_depth, self.cfg.max_depth)
            out.update(echo_tokens=self.echo_tokens(echo), pseudo_metric=mp, global_scale=k,
                       pseudo_metric_log=torch.log(mp.clamp_min(1e-6) * k.view(-1, 1, 1, 1) * r))
        return out


def global_disparity_scale(r: torch.Tensor, pseudo_metric: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """k (B,) = median(1 / Mp) / median(r) over the pixels where min_depth < Mp < max_depth (all pixels when none is):
    1 / (k r) is AVS-Net's median scaling of R to Mp, done in disparity."""
    ks = []
    for i in range(r.shape[0]):
        ok = (pseudo_metric[i] > min_depth) & (pseudo_metric[i] < max_depth) & torch.isfinite(r[i])
        if int(ok.sum()) == 0:
            ok = torch.isfinite(r[i]) & (pseudo_metric[i] > 0)
        ks.append((1.0 / pseudo_metric[i][ok]).median() / r[i][ok].median())
    return torch.stack(ks)


class FrozenFeatureSet(Dataset):
    """The front end's outputs and the pseudo labels of every frame, in memory: item i -> dict of tensors; with `flipped`
    every key also as flip_<key> (the frame mirrored, ears swapped)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        lengths = {len(v) for v in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"FrozenFeatureSet: tensors of different lengths {sorted(lengths)}")
        self.tensors, self.length = tensors, lengths.pop()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.tensors.items()}


def frame_dataset(bag: Path, split: str, frontend: RescaleFrontend, max_depth: float, verbose: bool = False,
                  **options: Any) -> SupervisedBagDataset:
    """The bag's frames at the frozen networks' input settings (the echo network's, which also fixes the echo layout);
    `options`: SupervisedBagDataset's (tolerance_s, cache_dir, skip_bad)."""
    net = frontend.echo_net or frontend.features
    return SupervisedBagDataset.for_model(bag, split, net.cfg, max_depth=max_depth, progress=verbose, verbose=verbose,
                                          **options)


@torch.no_grad()
def precompute(frames: Dataset, frontend: RescaleFrontend, min_depth: float, max_depth: float, flipped: bool,
               batch_size: int = 16) -> FrozenFeatureSet:
    """Run the frozen networks over every frame (and its mirror when `flipped`) and fit the pseudo labels."""
    columns: dict[str, list[torch.Tensor]] = {}
    for batch in DataLoader(frames, batch_size=batch_size, shuffle=False):
        views = [("", batch["rgb"], batch["echo"], batch["depth"])]
        if flipped:
            echo = batch["echo"][:, EAR_SWAP[:batch["echo"].shape[1]]]
            views.append(("flip_", batch["rgb"].flip(-1), echo, batch["depth"].flip(-1)))
        for prefix, rgb, echo, depth in views:
            out = frontend(rgb, echo)
            valid = (depth > min_depth) & (depth < max_depth)
            pseudo, alpha, beta, delta1 = pseudo_labels(out["rel_disparity"], depth, valid, min_depth, max_depth)
            row = {"rgb": rgb, "depth": depth, "rel_disparity": out["rel_disparity"], "features": out["features"],
                   "pseudo_depth": pseudo, "pseudo_alpha": alpha, "pseudo_beta": beta, "pseudo_delta1": delta1,
                   "relative": out["relative"]}
            for key in ("echo_tokens", "pseudo_metric", "global_scale", "pseudo_metric_log"):
                if key in out:
                    row[key] = out[key]
            for key, value in row.items():
                columns.setdefault(prefix + key, []).append(value.float().cpu())
    return FrozenFeatureSet({k: torch.cat(v) for k, v in columns.items()})


def head_inputs(head: EchoRescaleHead, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    cfg = head.cfg
    return {"image_features": batch["features"], "echo_tokens": batch["echo_tokens"] if cfg.use_echo else None,
            "rel_disparity": batch["rel_disparity"],
            "global_scale": batch.get("global_scale") if cfg.anchor == "global" else None,
            "pseudo_metric_log": batch.get("pseudo_metric_log") if "pseudo_metric" in cfg.guidance else None}


@torch.no_grad()
def predict_set(head: EchoRescaleHead, dataset: FrozenFeatureSet, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """The head's metric depth, scale and shift maps over a FrozenFeatureSet (unflipped views), in eval mode."""
    was = head.training
    head.eval()
    outs: dict[str, list[torch.Tensor]] = {}
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            out = head(**head_inputs(head, batch))
            for key in ("metric_depth", "scale_map", "shift_map"):
                outs.setdefault(key, []).append(out[key])
    finally:
        head.train(was)
    return {k: torch.cat(v) for k, v in outs.items()}


class PixelwiseRescaler:
    """A head and the frozen networks that feed it. apply(x, echo, relative, pseudo, scale) -> metric depth (B,1,H,W)."""

    def __init__(self, head: EchoRescaleHead, frontend: RescaleFrontend) -> None:
        self.head, self.frontend = head.eval(), frontend
        cfg, fe = head.cfg, frontend
        if fe.image_channels != cfg.image_channels:
            raise ValueError(f"rescale head: expects {cfg.image_channels}-channel image features, the features network "
                             f"gives {fe.image_channels} at {fe.cfg.feature_layer}")
        if cfg.use_echo and fe.echo_net is None:
            raise ValueError("rescale head: built with echoes, but no RGB-Echoes AVS-Net feeds it")

    @classmethod
    def from_checkpoint(cls, path: str | Path, echo_net: Any, relative_module: Any | None,
                        device: str | torch.device = "cpu") -> PixelwiseRescaler:
        """The head at `path`; the image features from `relative_module` when the head was trained on an Only-RGB AVS-Net's
        own features (else from its stored features checkpoint), the echo tokens from `echo_net` (the pipeline's AVS-Net)."""
        head, stored = EchoRescaleHead.from_checkpoint(path, device)
        fcfg = FrontendConfig.from_dict(stored, where=f"{path} frontend")
        features = relative_module if (fcfg.relative == "avsnet_rgb" and not fcfg.features_checkpoint) else None
        if features is None or not hasattr(features, "visual"):
            from avs_depth_core.models.avsnet import AVSNet

            source = fcfg.features_checkpoint or fcfg.relative_checkpoint
            if not source or not Path(source).with_suffix(".json").is_file():
                raise FileNotFoundError(f"{path}: the head's image features come from {source or '(none)'}, which is not "
                                        "there; use the relative model it was trained with (relative_model avsnet_rgb)")
            features = AVSNet.from_checkpoint(source, device)
        frontend = RescaleFrontend.from_modules(fcfg, None, features, echo_net if head.cfg.use_echo else None)
        return cls(head.to(device), frontend)

    @torch.no_grad()
    def apply(self, x: torch.Tensor, echo: torch.Tensor | None, relative: torch.Tensor, pseudo: torch.Tensor | None,
              scale: ScaleResult, min_output: float = 1e-3) -> torch.Tensor:
        """x (1,3,H,W) in [0,1], echo (1,C,He,We) or None (no fresh echo), relative R (1,1,H,W) depth, pseudo Mp or None,
        scale the tracker's result for this frame. A fresh echo -> the head; otherwise the global (held or NaN) scale."""
        if echo is None or pseudo is None or scale.held or not scale.ok or scale.fallback is not None:
            return apply_scale(relative, scale, min_output=min_output)
        cfg = self.head.cfg
        r = normalised_disparity(relative, "depth")
        inverse = 1.0 / relative.clamp_min(1e-6)
        ok = torch.isfinite(inverse) & (relative > 0)
        # 1 / (k r) = s R: the median scale as the head's anchor (its training computed the same from Mp)
        k = torch.stack([inverse[i][ok[i]].median() for i in range(relative.shape[0])]) / scale.scale
        feats = self.frontend.image_features(x)
        tokens = self.frontend.echo_tokens(echo) if cfg.use_echo else None
        guide = torch.log(pseudo.clamp_min(1e-6) * k.view(-1, 1, 1, 1) * r) if "pseudo_metric" in cfg.guidance else None
        out = self.head(feats, tokens, r, k if cfg.anchor == "global" else None, guide)
        return out["metric_depth"].clamp_min(min_output)
