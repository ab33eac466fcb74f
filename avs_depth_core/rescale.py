"""Scaling method "pixelwise" for live use and evaluation: a trained EchoRescaleHead (models/rescale_head.py) on the
networks the depth pipeline already runs (the RGB-Echoes AVS-Net and the relative model).

With a fresh echo: the head's maps A and B from the image features and the echo tokens, anchored at this frame's median
scale s (scaling.recover_scale "pixelwise" returns it), give M = 1 / (A r + B) (or the depth form). Without one: the
scale the tracker holds (the same hold and NaN rules as "median") scales R globally, because the head's inputs (echo
tokens, Mp) belong to the frame they came with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from avs_depth_core.models.rescale_frontend import FrontendConfig, RescaleFrontend
from avs_depth_core.models.rescale_head import EchoRescaleHead, normalised_disparity
from avs_depth_core.scaling import ScaleResult, apply_scale


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
