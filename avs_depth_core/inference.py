"""Metric depth for one image and its echo recording (the library of `avs-depth infer`, cli/infer.py).

    avs-depth infer --checkpoint runs/bv2/checkpoints/best --image camera_47.jpeg --echo audio_47.wav --out depth.npy
    avs-depth infer ... --out depth.png          # colourised; .npy holds float32 metres at the image's resolution

The image is read with Pillow (RGB), the wav with avs_depth_core.audio.read_wav (integer PCM scaled to [-1, 1]); the echo
window starts at sample --emission-offset (0 for BatVision recordings, which start at the chirp) and is turned into the
network input by the same echo_features path as training and the live node. Runs under torch.inference_mode(); --half uses
fp16 autocast on CUDA.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avs_depth_core.audio import read_wav
from avs_depth_core.data.messages import echo_input_problem


def load_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 from an RGB image file; other modes (grey, RGBA, palette, 16-bit) are errors saying what was found."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode != "RGB":
                raise ValueError(f"{path}: image mode {mode} ({len(img.getbands())} channel(s)); expected a 3-channel RGB "
                                 "image (convert it first, e.g. with Pillow's Image.convert('RGB'))")
            return np.asarray(img, dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError) as err:  # Pillow: "image file is truncated", broken data streams
        raise ValueError(f"{path}: image cannot be decoded ({err}); the file is truncated or damaged") from None


def load_echo(path: str | Path, expected_rate: int, window_samples: int = 0, emission_offset: int = 0) -> np.ndarray:
    """(2, n) float32 binaural samples, checked by the echo rule the node and the datasets apply
    (messages.echo_input_problem: rate, channels, length after the emission, NaN, silence, clipping); an unusable echo
    is an error naming the file, never a confident depth map."""
    samples, rate = read_wav(path)
    if rate != expected_rate:
        raise ValueError(f"{path}: sample rate {rate} Hz; the model expects {expected_rate} Hz (resample the recording)")
    problem = echo_input_problem(samples, rate, emission_offset, expected_rate=expected_rate, window_samples=window_samples)
    if problem:
        raise ValueError(f"{path}: echo not usable: {problem}")
    return samples


def infer_depth(model, rgb: np.ndarray, echo: np.ndarray | None, sample_rate: int | None = None, emission_offset: int = 0,
                half: bool = False) -> np.ndarray:
    """(H, W) float32 metric depth in metres at the image's resolution (AVSNet.predict under inference_mode)."""
    if not model.cfg.use_echo:
        echo, sample_rate = None, None
    out = model.predict(rgb, echo, sample_rate, emission_offset=emission_offset, fp16=half)
    depth = out["metric_depth"][0, 0].float().cpu().numpy()
    if not np.isfinite(depth).all():
        raise ValueError("the network produced NaN or inf depth; the checkpoint is damaged or the input is far outside "
                         "what it was trained on")
    return depth
