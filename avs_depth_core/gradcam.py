"""Grad-CAM: where AVS-Net looks in the echo spectrogram and in the image (AVS-Net paper's Fig. 6); `avs-depth gradcam`.

Grad-CAM (Selvaraju et al., ICCV 2017): for a feature map A (C, h, w) and a scalar target y, the channel weights are the
spatially averaged gradients a_c = mean_hw dy/dA_c and the map is ReLU(sum_c a_c A_c), upsampled to the input and scaled
to [0, 1]. Here y is the mean predicted metric depth over a region of the image (default the whole image) and A is
  - the audio encoder's last stage (ResNet layer4, 1/32 of the echo spectrogram), and
  - the visual bottleneck (MiDaS scratch.layer4_rn, 1/32 of the image; the map the echo tokens are fused into).
The spectrogram's time axis is labelled in metres: an echo arriving t seconds after emission comes from t * c / 2 away
(the echo window starts at emission and spans the round trip to max_depth).

    avs-depth gradcam --checkpoint CKPT --bag bv2/ --split test --index 3 --out fig.png
    avs-depth gradcam --checkpoint CKPT --image camera_47.jpeg --echo audio_47.wav --out fig.png [--region 0.25 0.25 0.75 0.75]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avs_depth_core.files import save_figure


class _Capture:
    """Forward hook keeping a module's output and, through a tensor hook, the gradient flowing back into it."""

    def __init__(self, module: nn.Module) -> None:
        self.activation: torch.Tensor | None = None
        self.gradient: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        self.activation = output
        output.register_hook(self._keep_gradient)

    def _keep_gradient(self, grad: torch.Tensor) -> None:
        self.gradient = grad

    def cam(self, size: tuple[int, int]) -> np.ndarray:
        """(H, W) Grad-CAM in [0, 1] (all zeros when no location raises the target)."""
        if self.activation is None or self.gradient is None:
            raise RuntimeError("Grad-CAM: the hooked layer saw no forward or backward pass")
        weights = self.gradient.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * self.activation).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[0, 0]
        peak = cam.max()
        return (cam / peak if peak > 0 else cam).detach().cpu().numpy()


def region_mask(size: tuple[int, int], region: Sequence[float] | None) -> torch.Tensor:
    """(1,1,H,W) bool mask of the region (x0, y0, x1, y1) given as fractions of the image width/height; None = all."""
    h, w = size
    mask = torch.zeros(1, 1, h, w, dtype=torch.bool)
    if region is None:
        mask[:] = True
        return mask
    x0, y0, x1, y1 = (float(v) for v in region)
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ValueError(f"--region {x0} {y0} {x1} {y1}: expected fractions 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    r0, r1 = int(y0 * h), max(int(y0 * h) + 1, int(round(y1 * h)))
    c0, c1 = int(x0 * w), max(int(x0 * w) + 1, int(round(x1 * w)))
    mask[..., r0:r1, c0:c1] = True
    return mask


def gradcam(model: nn.Module, rgb: torch.Tensor, echo: torch.Tensor | None,
            region: Sequence[float] | None = None) -> dict[str, np.ndarray | float | None]:
    """rgb (1,3,H,W) in [0,1] and echo (1,2,He,We) network inputs -> {"depth" (H,W), "visual_cam" (H,W), "audio_cam"
    (He,We) or None for an Only-RGB model, "target" (the mean depth in the region, metres)}."""
    if rgb.ndim != 4 or rgb.shape[0] != 1:
        raise ValueError(f"gradcam: expected one image (1, 3, H, W), got {tuple(rgb.shape)}")
    model.eval()
    device = next(model.parameters()).device
    visual = _Capture(model.visual.scratch.layer4_rn)
    audio = _Capture(model.audio.encoder.layer4) if model.audio is not None else None
    try:
        with torch.enable_grad():
            rgb = rgb.to(device)
            echo = echo.to(device) if (echo is not None and model.cfg.use_echo) else None
            depth = model(rgb, echo)["metric_depth"]
            mask = region_mask(tuple(depth.shape[-2:]), region).to(device)
            target = depth[mask].mean()
            model.zero_grad(set_to_none=True)
            target.backward()
        result = {"depth": depth[0, 0].detach().cpu().numpy(), "visual_cam": visual.cam(tuple(rgb.shape[-2:])),
                  "audio_cam": audio.cam(tuple(echo.shape[-2:])) if audio is not None else None,
                  "target": float(target.item())}
    finally:
        visual.handle.remove()
        if audio is not None:
            audio.handle.remove()
        model.zero_grad(set_to_none=True)
    return result


def save_gradcam_figure(path: str | Path, rgb: torch.Tensor, echo: torch.Tensor | None, result: dict[str, Any],
                        cfg: Any, region: Sequence[float] | None = None, title: str = "") -> Path:
    """Top: RGB, RGB with its CAM, predicted depth. Bottom (echo models): the log spectrogram (mean of both ears), with the
    audio CAM, and the CAM's profile over distance. Time axes in metres (t * c / 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avs_depth_core.visualise import DEPTH_CMAP, to_numpy_image

    img = to_numpy_image(rgb[0])
    has_audio = result["audio_cam"] is not None
    fig, axes = plt.subplots(2 if has_audio else 1, 3, figsize=(15, 7.5 if has_audio else 3.6), squeeze=False)
    axes[0, 0].imshow(img)
    axes[0, 0].set_title("RGB")
    axes[0, 1].imshow(img)
    axes[0, 1].imshow(result["visual_cam"], cmap="jet", alpha=0.45, vmin=0, vmax=1)
    axes[0, 1].set_title("Grad-CAM, visual bottleneck")
    im = axes[0, 2].imshow(result["depth"], cmap=DEPTH_CMAP)
    axes[0, 2].set_title(f"predicted depth (target: mean {result['target']:.2f} m)")
    fig.colorbar(im, ax=axes[0, 2], fraction=0.046, label="m")
    if region is not None:
        h, w = result["depth"].shape
        x0, y0, x1, y1 = region
        for ax in axes[0]:
            ax.add_patch(plt.Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, ec="white", lw=1.5))
    for ax in axes[0]:
        ax.set_axis_off()
    if has_audio:
        spec = echo[0].detach().cpu().float().mean(0).numpy()
        window_s = cfg.echo_samples / cfg.sample_rate
        max_range = window_s * cfg.speed_of_sound / 2.0  # = max_depth: the window is the round trip to it
        extent = (0.0, max_range, 0.0, cfg.sample_rate / 2000.0)
        log_spec = np.log10(spec + 1e-6 * max(float(spec.max()), 1e-12))
        for ax in axes[1, :2]:
            ax.imshow(log_spec, origin="lower", aspect="auto", extent=extent, cmap="gray")
            ax.set(xlabel="distance t·c/2 (m)", ylabel="frequency (kHz)")
        axes[1, 0].set_title("echo spectrogram (log magnitude, mean of ears)")
        axes[1, 1].imshow(result["audio_cam"], origin="lower", aspect="auto", extent=extent, cmap="jet", alpha=0.45,
                          vmin=0, vmax=1)
        axes[1, 1].set_title("Grad-CAM, audio encoder (ResNet layer4)")
        profile = result["audio_cam"].mean(axis=0)
        axes[1, 2].plot(np.linspace(0.0, max_range, profile.size), profile)
        axes[1, 2].set(xlabel="distance t·c/2 (m)", ylabel="mean CAM over frequency", xlim=(0, max_range), ylim=(0, None),
                       title="where in time the network listens")
        axes[1, 2].grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)


def load_inputs(model: nn.Module, *, bag: Path | None = None, split: str = "test", index: int = 0,
                cache_dir: Path | None = None, image: Path | None = None, echo: Path | None = None,
                emission_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """The network inputs (1,3,H,W), (1,2,He,We) or None, and a title: sample `index` of a bag's split, or an image file
    with its echo recording (.wav, emission at sample `emission_offset`)."""
    cfg = model.cfg
    if (bag is None) == (image is None):
        raise ValueError("give either --bag DIR (with --index) or --image FILE (with --echo FILE)")
    if bag is not None:
        from avs_depth_core.data.datasets import SupervisedBagDataset

        ds = SupervisedBagDataset.for_model(bag, split, cfg, cache_dir=cache_dir)
        if not 0 <= index < len(ds):
            raise ValueError(f"--index {index}: {bag} split {split!r} has {len(ds)} samples")
        item = ds[index]
        echo_input = item["echo"][None] if cfg.use_echo else None
        return item["rgb"][None], echo_input, f"{bag.name} [{split}] #{index} (stamp {item['stamp_ns']})"
    from avs_depth_core.inference import load_echo, load_rgb

    rgb, _ = model.image_input(load_rgb(image))
    echo_input = None
    if cfg.use_echo:
        if echo is None:
            raise ValueError("this model fuses the echo; pass --echo RECORDING.wav")
        samples = load_echo(echo, cfg.sample_rate, cfg.echo_samples, emission_offset)
        echo_input = model.echo_input(samples, cfg.sample_rate, emission_offset)
    return rgb, echo_input, f"{image.name}" + (f" + {echo.name}" if echo_input is not None else "")
