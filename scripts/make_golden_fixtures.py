#!/usr/bin/env python3
"""Golden fixtures from the upstream code, for the tests in test/golden/.

    python scripts/make_golden_fixtures.py --zoedepth ~/src/ZoeDepth --monodepth2 ~/src/monodepth2 [--out test/golden/fixtures]

The two paths are local git clones of isl-org/ZoeDepth and nianticlabs/monodepth2. Their code is imported from there and run
on fixed weights and inputs (CPU, float32); nothing of it is copied into this repository, and this script does not import
avs_depth_core, so the fixtures are the upstream code's outputs alone. Written per upstream repository: <name>.safetensors
(inputs and outputs) and <name>.json (repository, commit, torch version, what every tensor is, each case's settings).

Weights are not stored: every parameter is numpy.random.RandomState(seed).uniform(-bound, bound, shape) in float32, with
bound = 1/sqrt(fan_in) as torch's default init; seed, bound and shape are recorded per tensor, so a test rebuilds the same
weights (RandomState's stream is frozen by NumPy's compatibility policy, NEP 19).

Stubs: the compared functions need torch and numpy only, but the upstream modules import more at the top. Installed in
sys.modules here and nowhere else, each an empty module whose attributes raise when used:
  torchvision (+ .transforms, .models): ZoeDepth depth_model/midas/misc import transforms; nothing compared calls them.
  requests: ZoeDepth utils/misc.py (URL downloads). six (+ six.moves): Monodepth2 utils.py (model downloads).
  tensorboardX, IPython: Monodepth2 trainer.py (logging, debugging).
  datasets, networks: Monodepth2 trainer.py's own packages (KITTI loaders need skimage; networks/__init__ needs a
  torchvision ResNet); the decoders are loaded from their files (networks/depth_decoder.py, pose_decoder.py) instead.
The Trainer methods generate_images_pred and compute_losses run unchanged on a namespace holding the options and layers
they read (Trainer.__init__ would build datasets and a torchvision encoder).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import json
import math
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

ZOEDEPTH_URL = "https://github.com/isl-org/ZoeDepth"
MONODEPTH2_URL = "https://github.com/nianticlabs/monodepth2"
WEIGHTS_RECIPE = "numpy.random.RandomState(seed).uniform(-bound, bound, shape).astype(float32), per tensor [seed, bound, shape]"

# ZoeD_N's head settings (zoedepth/models/zoedepth/config_zoedepth.json) with the package's defaults for the range and the
# bins (normed, 0.001-30 m, AVSNetConfig); attractor_alpha 1000 as that JSON gives it (ZoeDepth's layers never apply it).
HEAD_KWARGS = dict(n_bins=64, bin_centers_type="normed", bin_embedding_dim=128, min_depth=1e-3, max_depth=30.0,
                   n_attractors=[16, 8, 4, 1], attractor_alpha=1000.0, attractor_gamma=2, attractor_kind="mean",
                   attractor_type="inv", min_temp=0.0212, max_temp=50.0, inverse_midas=False)
HEAD_CASES = {  # name: (kwargs overrides, attractor function called with the layer's alpha and gamma, tensors stored)
    "normed": ({}, False, ("metric_depth", "bin_centers", "probs")),
    "softplus": ({"bin_centers_type": "softplus"}, False, ("metric_depth", "bin_centers")),
    "normed_alpha_applied": ({}, True, ("metric_depth",)),
    "hybrid1": ({"bin_centers_type": "hybrid1"}, False, ("metric_depth",)),
    "hybrid2": ({"bin_centers_type": "hybrid2"}, False, ("metric_depth",)),
    "normed_exp_sum_inverse_midas": ({"attractor_kind": "sum", "attractor_type": "exp", "inverse_midas": True}, False,
                                     ("metric_depth",)),
}
# Head inputs, as MidasCore returns them: out_conv (32 channels, ZoeDepth's N_MIDAS_OUT), bottleneck, r4..r1; odd sizes so
# every bilinear resize in the head does work.
HEAD_SHAPES = {"out_conv": (2, 32, 16, 20), "bottleneck": (2, 48, 2, 3), "r4": (2, 40, 3, 4), "r3": (2, 32, 5, 6),
               "r2": (2, 24, 8, 10), "r1": (2, 16, 12, 15)}
# Default-init weights give temperatures near max_temp / 2, so almost flat bin distributions that would hide errors in the
# log-binomial; a larger last layer gives temperatures from below 1 to 50.
HEAD_GAINS = {"conditional_log_binomial.mlp.2.weight": 20.0}
MD2_SIZE = (48, 64)  # (H, W) of the loss case
MD2_NUM_CH_ENC = [8, 8, 16, 16, 32]


# ------------------------------------------------------------------------------------------------------------ helpers
def seeded_tensor(seed: int, bound: float, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(seed).uniform(-bound, bound, size=shape).astype(np.float32))


def fill_seeded(module: nn.Module, base_seed: int, gains: dict[str, float] | None = None) -> dict[str, list]:
    """Overwrite every parameter with the seeded recipe; return {name: [seed, bound, shape]} for the JSON.
    gains: bound multipliers for named tensors."""
    spec, fan_in = {}, 1
    for i, (name, p) in enumerate(module.named_parameters()):
        if p.dim() > 1:
            fan_in = p[0].numel()  # a bias takes the bound of the weight before it, as torch's default init
        seed, bound = base_seed + i, (gains or {}).get(name, 1.0) / math.sqrt(fan_in)
        with torch.no_grad():
            p.copy_(seeded_tensor(seed, bound, tuple(p.shape)))
        spec[name] = [seed, bound, list(p.shape)]
    return spec


def smooth_field(rng: np.random.RandomState, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    """(B, C, H, W) values in [low, high]: uniform noise at 1/4 resolution, upsampled bilinearly."""
    b, c, h, w = shape
    coarse = torch.from_numpy(rng.uniform(low, high, size=(b, c, max(h // 4, 2), max(w // 4, 2))).astype(np.float32))
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def upstream_commit(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        raise SystemExit(f"{root}: not a git clone ({err}); the fixtures must record the upstream commit") from None
    modified = [line[3:] for line in git("status", "--porcelain", "--", "*.py").splitlines()]
    if modified:
        raise SystemExit(f"{root}: modified Python files {modified}; run the upstream code as committed")
    return {"commit": commit, "modified_py_files": modified}


class _Stub(types.ModuleType):
    """A module that only exists so an import succeeds; any attribute it hands out raises when called."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError(f"{self.__name__}.{name} is a stub in make_golden_fixtures.py; the compared code must not use it")
        return type(name, (), {"__init__": unavailable, "__call__": unavailable})


def install_stubs(names: list[str]) -> None:
    for name in names:
        if name in sys.modules:
            continue
        module = _Stub(name)
        module.__path__ = []  # a package, so `from torchvision import transforms` finds the submodule stub
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def load_file_module(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------------------- ZoeDepth
class FeatureCore(nn.Module):
    """Stands in for ZoeDepth's MidasCore: returns fixed features, so ZoeDepth.forward runs its head on them unchanged."""

    def __init__(self, rel_depth: torch.Tensor, features: list[torch.Tensor]) -> None:
        super().__init__()
        self.rel_depth, self.features, self.dtype = rel_depth, features, torch.float32
        self.output_channels = [f.shape[1] for f in features[1:]]

    def forward(self, x: torch.Tensor, denorm: bool = False, return_rel_depth: bool = False) -> Any:
        return self.rel_depth.to(self.dtype), [f.to(self.dtype) for f in self.features]

    def to_float64(self) -> None:
        self.dtype = torch.float64

    def to_float32(self) -> None:
        self.dtype = torch.float32


def zoedepth_head(tensors: dict[str, torch.Tensor], cases: dict[str, Any]) -> None:
    from zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
    attractor_module = importlib.import_module("zoedepth.models.layers.attractor")
    rng = np.random.RandomState(17)
    features = {k: torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for k, s in HEAD_SHAPES.items()}
    # magnitudes that spread the seed bins, the attractors and the temperatures (default-init weights squeeze them)
    features["out_conv"] = features["out_conv"].abs() * 8.0  # a ReLU output in MiDaS
    features["bottleneck"] *= 4.0
    for k in ("r4", "r3", "r2", "r1"):
        features[k] *= 3.0
    rel_depth = torch.from_numpy(rng.uniform(0, 1, size=(2, 32, 40)).astype(np.float32))
    tensors["head/in/rel_depth"] = rel_depth.unsqueeze(1)
    for k, v in features.items():
        tensors[f"head/in/{k}"] = v
    core = FeatureCore(rel_depth, [features[k] for k in ("out_conv", "bottleneck", "r4", "r3", "r2", "r1")])
    for n, (name, (overrides, alpha_applied, stored)) in enumerate(HEAD_CASES.items()):
        kwargs = dict(HEAD_KWARGS, **overrides)
        torch.manual_seed(0)
        model = ZoeDepth(core, **kwargs).eval()
        spec = fill_seeded(model, 1000 * (n + 1), HEAD_GAINS)
        originals = {k: getattr(attractor_module, k) for k in ("inv_attractor", "exp_attractor")}
        if alpha_applied:  # what the layers would do if they passed their alpha and gamma on
            for k, fn in originals.items():
                setattr(attractor_module, k, functools.partial(fn, alpha=float(kwargs["attractor_alpha"]),
                                                               gamma=int(kwargs["attractor_gamma"])))
        try:
            with torch.no_grad():
                out = model(torch.zeros(2, 3, 32, 40), return_final_centers=True, return_probs=True)
                core.to_float64()
                torch.set_default_dtype(torch.float64)  # LogBinomial adds 1e-7 to an integer tensor: float64 there too
                out64 = model.double()(torch.zeros(2, 3, 32, 40))
        finally:
            torch.set_default_dtype(torch.float32)
            core.to_float32()
            for k, fn in originals.items():
                setattr(attractor_module, k, fn)
        for key in stored:
            tensors[f"head/{name}/{key}"] = out[key].contiguous()
        tensors[f"head/{name}/metric_depth_float64"] = out64["metric_depth"].contiguous()
        cases[f"head/{name}"] = {
            "upstream": "zoedepth/models/zoedepth/zoedepth_v1.py ZoeDepth(FeatureCore, **kwargs).forward(x, "
                        "return_final_centers=True, return_probs=True); FeatureCore returns head/in/*; in float32, and "
                        "metric_depth_float64 with the model and features in float64",
            "kwargs": kwargs, "attractor_called_with_alpha_gamma": alpha_applied,
            "note": "upstream layers patched to pass their alpha and gamma to the attractor function" if alpha_applied
            else "as released: the attractor function runs with its defaults (alpha 300, gamma 2)",
            "weights": spec}
    diff = (tensors["head/normed_alpha_applied/metric_depth"] - tensors["head/normed/metric_depth"]).abs()
    rel = diff / tensors["head/normed/metric_depth"]
    cases["head/normed_alpha_applied"]["difference_to_normed"] = {
        "abs_mean_m": float(diff.mean()), "abs_max_m": float(diff.max()), "relative_median": float(rel.median())}


def zoedepth_silog(tensors: dict[str, torch.Tensor], cases: dict[str, Any]) -> None:
    from zoedepth.trainers.loss import SILogLoss
    rng = np.random.RandomState(18)
    pred = torch.from_numpy(rng.uniform(0.5, 10.0, size=(2, 1, 12, 16)).astype(np.float32))
    target = torch.from_numpy(rng.uniform(0.5, 10.0, size=(2, 1, 24, 32)).astype(np.float32))
    target[torch.from_numpy(rng.uniform(size=target.shape) < 0.2)] = 0.0  # invalid pixels
    full = torch.from_numpy(rng.uniform(0.5, 10.0, size=(2, 1, 24, 32)).astype(np.float32))
    tensors.update({"silog/in/pred": pred, "silog/in/target": target, "silog/in/target_all_valid": full})
    loss = SILogLoss(beta=0.15)  # AVS-Net: lambda 0.85 = 1 - beta; alpha 10 is ZoeDepth's constant
    with torch.no_grad():
        runs = {"masked": loss(pred, target, mask=target > 0, interpolate=True),
                "all_valid_no_mask": loss(pred, full, interpolate=True),
                "zeros_no_mask": loss(pred, target, interpolate=True)}
    for name, value in runs.items():
        tensors[f"silog/{name}"] = value.reshape(1).float()
    cases["silog"] = {"upstream": "zoedepth/trainers/loss.py SILogLoss(beta=0.15)(pred, target, mask, interpolate=True)",
                      "masked": "mask = target > 0 (ZoeDepth's trainer passes the dataset's valid mask)",
                      "all_valid_no_mask": "target_all_valid, no mask", "zeros_no_mask": "target with zeros, no mask: "
                      "ZoeDepth then takes log(0 + 1e-7) at the invalid pixels (the package masks target > 0 by default)"}


def zoedepth_metrics(tensors: dict[str, torch.Tensor], cases: dict[str, Any]) -> None:
    from zoedepth.utils.misc import compute_errors, compute_metrics
    rng = np.random.RandomState(19)
    min_depth, max_depth, (h, w) = 1e-3, 30.0, (24, 32)
    gt = rng.uniform(0.3, 34.0, size=(3, 1, h, w)).astype(np.float32)  # some beyond max_depth: invalid
    gt[rng.uniform(size=gt.shape) < 0.1] = 0.0
    # ZoeDepth's compute_metrics needs a crop (without one it reads an unset eval_mask); with the KITTI Eigen crop fractions
    # the ground truth is made zero outside the crop here, so the crop changes nothing and the package (no crop) compares.
    crop = np.zeros((h, w), bool)
    crop[int(0.3324324 * h):int(0.91351351 * h), int(0.0359477 * w):int(0.96405229 * w)] = True
    gt[:, :, ~crop] = 0.0
    gt[0, 0, 12, 4:8] = np.nan  # never valid
    pred = (gt * rng.uniform(0.7, 1.4, size=gt.shape) + rng.uniform(0, 1, size=gt.shape)).astype(np.float32)
    pred = np.where(np.isfinite(pred) & (pred > 0), pred, rng.uniform(0.5, 35.0, size=gt.shape)).astype(np.float32)
    pred[1, 0, 5, 5] = 45.0  # above max_depth: clamped
    small = torch.from_numpy(rng.uniform(0.5, 30.0, size=(3, 1, 12, 16)).astype(np.float32))
    gt_t, pred_t = torch.from_numpy(gt), torch.from_numpy(pred)
    tensors.update({"metrics/in/gt": gt_t, "metrics/in/pred": pred_t, "metrics/in/pred_small": small})
    keys = ["abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "log_10", "silog"]
    settings = dict(garg_crop=False, eigen_crop=True, dataset="kitti", min_depth_eval=min_depth, max_depth_eval=max_depth)

    def per_image(p: torch.Tensor) -> torch.Tensor:
        rows = [compute_metrics(gt_t[i:i + 1].clone(), p[i:i + 1].clone(), interpolate=True, **settings) for i in range(3)]
        return torch.tensor([[float(r[k]) for k in keys] for r in rows], dtype=torch.float64)

    tensors["metrics/same_size"] = per_image(pred_t)
    tensors["metrics/resized_align_corners_true"] = per_image(small)  # compute_metrics' own resize (align_corners=True)
    resized = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)  # Monodepth2 trainer's resize
    tensors["metrics/resized_align_corners_false"] = per_image(resized)
    valid = (gt > min_depth) & (gt < max_depth)
    pooled = compute_errors(gt[valid], np.clip(pred, min_depth, max_depth)[valid])
    tensors["metrics/pooled"] = torch.tensor([[float(pooled[k]) for k in keys]], dtype=torch.float64)
    cases["metrics"] = {
        "upstream": "zoedepth/utils/misc.py compute_metrics(gt, pred, interpolate=True, **settings) per image; pooled: "
                    "compute_errors over the valid pixels of all images, pred clipped to the range as compute_metrics does",
        "settings": settings, "columns": keys,
        "resized_align_corners_true": "pred_small through compute_metrics' resize (bilinear, align_corners=True)",
        "resized_align_corners_false": "pred_small resized here with F.interpolate(bilinear, align_corners=False), as "
                                       "monodepth2/trainer.py compute_depth_losses resizes, then compute_metrics"}


def make_zoedepth(root: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    install_stubs(["torchvision", "torchvision.transforms", "requests"])
    sys.path.insert(0, str(root))
    tensors: dict[str, torch.Tensor] = {}
    cases: dict[str, Any] = {}
    zoedepth_head(tensors, cases)
    zoedepth_silog(tensors, cases)
    zoedepth_metrics(tensors, cases)
    return tensors, {"repository": ZOEDEPTH_URL, **upstream_commit(root), "cases": cases,
                     "stubs": ["torchvision", "torchvision.transforms", "requests"]}


# --------------------------------------------------------------------------------------------------------- Monodepth2
def md2_geometry(layers: types.ModuleType, tensors: dict[str, torch.Tensor], cases: dict[str, Any]) -> None:
    rng = np.random.RandomState(20)
    disp = torch.from_numpy(rng.uniform(0, 1, size=(2, 1, 6, 8)).astype(np.float32))
    scaled, depth = layers.disp_to_depth(disp, 0.1, 100.0)
    axisangle = torch.from_numpy(rng.uniform(-0.3, 0.3, size=(4, 1, 3)).astype(np.float32))
    axisangle[3] = 0.0  # the identity rotation (axis = v / (|v| + 1e-7))
    translation = torch.from_numpy(rng.uniform(-1, 1, size=(4, 1, 3)).astype(np.float32))
    h, w = 6, 8
    K = torch.tensor([[0.58 * w, 0, 0.5 * w, 0], [0, 1.92 * h, 0.5 * h, 0], [0, 0, 1, 0], [0, 0, 0, 1]]).repeat(2, 1, 1)
    inv_K = torch.linalg.pinv(K)
    point_depth = torch.from_numpy(rng.uniform(0.5, 20.0, size=(2, 1, h, w)).astype(np.float32))
    T = layers.transformation_from_parameters(axisangle[:2], translation[:2])
    points = layers.BackprojectDepth(2, h, w)(point_depth, inv_K)
    tensors.update({
        "geometry/in/disp": disp, "geometry/disp_to_depth/scaled": scaled, "geometry/disp_to_depth/depth": depth,
        "geometry/in/axisangle": axisangle, "geometry/in/translation": translation,
        "geometry/transformation": layers.transformation_from_parameters(axisangle, translation),
        "geometry/transformation_inverted": layers.transformation_from_parameters(axisangle, translation, invert=True),
        "geometry/in/K": K, "geometry/in/inv_K": inv_K, "geometry/in/depth": point_depth,
        "geometry/backproject": points, "geometry/project": layers.Project3D(2, h, w)(points, K, T)})
    cases["geometry"] = {"upstream": "layers.py disp_to_depth(disp, 0.1, 100), transformation_from_parameters(axisangle, "
                                     "translation[, invert=True]), BackprojectDepth(2, 6, 8)(depth, inv_K), Project3D(2, 6, 8)"
                                     "(points, K, T) with T = transformation_from_parameters of the first two poses"}


def md2_decoders(root: Path, tensors: dict[str, torch.Tensor], cases: dict[str, Any]) -> None:
    depth_decoder = load_file_module("md2_depth_decoder", root / "networks" / "depth_decoder.py")
    pose_decoder = load_file_module("md2_pose_decoder", root / "networks" / "pose_decoder.py")
    rng = np.random.RandomState(21)
    features = [torch.from_numpy(rng.standard_normal((2, c, 32 // 2**i, 32 // 2**i)).astype(np.float32)).relu()
                for i, c in enumerate(MD2_NUM_CH_ENC)]
    decoder = depth_decoder.DepthDecoder(np.array(MD2_NUM_CH_ENC), scales=range(4)).eval()
    spec = fill_seeded(decoder, 5000)
    with torch.no_grad():
        disps = decoder(features)
    for i, f in enumerate(features):
        tensors[f"depth_decoder/in/feature{i}"] = f
    for s in range(4):
        tensors[f"depth_decoder/disp{s}"] = disps[("disp", s)]
    cases["depth_decoder"] = {"upstream": "networks/depth_decoder.py DepthDecoder(num_ch_enc, scales=range(4))(features)",
                              "num_ch_enc": MD2_NUM_CH_ENC, "weights": spec}
    pose = pose_decoder.PoseDecoder(np.array(MD2_NUM_CH_ENC), num_input_features=1, num_frames_to_predict_for=2).eval()
    spec = fill_seeded(pose, 6000)
    last = torch.from_numpy(rng.standard_normal((2, MD2_NUM_CH_ENC[-1], 2, 3)).astype(np.float32)).relu()
    with torch.no_grad():
        axisangle, translation = pose([[last]])
    tensors.update({"pose_decoder/in/feature": last, "pose_decoder/axisangle": axisangle,
                    "pose_decoder/translation": translation})
    cases["pose_decoder"] = {"upstream": "networks/pose_decoder.py PoseDecoder(num_ch_enc, num_input_features=1, "
                                         "num_frames_to_predict_for=2)([[feature]]), as trainer.py builds it for "
                                         "separate_resnet", "num_ch_enc": MD2_NUM_CH_ENC, "weights": spec}


def md2_loss_inputs(layers: types.ModuleType) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    rng = np.random.RandomState(22)
    (h, w), b = MD2_SIZE, 2
    base = smooth_field(rng, (b, 3, h + 8, w + 8), 0.0, 1.0)
    noise = [torch.from_numpy(rng.uniform(-0.03, 0.03, size=(b, 3, h, w)).astype(np.float32)) for _ in range(3)]
    # the sources see the target's texture shifted by 2 px each way, so the warps and the automask have work to do
    frames = {0: base[..., 4:4 + h, 4:4 + w], -1: base[..., 4:4 + h, 2:2 + w], 1: base[..., 4:4 + h, 6:6 + w]}
    frames = {f: ((x + n).clamp(0, 1) * 255).round().to(torch.uint8) for (f, x), n in zip(frames.items(), noise, strict=True)}
    colour = {f: x.float() / 255 for f, x in frames.items()}
    K = torch.tensor([[0.58 * w, 0, 0.5 * w, 0], [0, 1.92 * h, 0.5 * h, 0], [0, 0, 1, 0], [0, 0, 0, 1]]).repeat(b, 1, 1)
    inputs = {("color", f, 0): x for f, x in colour.items()}
    for s in range(1, 4):  # the data loader's per-scale target colour, here an area resize
        inputs[("color", 0, s)] = F.interpolate(colour[0], size=(h // 2**s, w // 2**s), mode="area")
    inputs[("K", 0)], inputs[("inv_K", 0)] = K, torch.linalg.pinv(K)
    # depths of 1.2-1.9 m and a sideways step of 8 cm move the texture by about the 2 px the sources are shifted by, so the
    # warps beat the unwarped sources at most pixels but not all
    outputs = {("disp", s): smooth_field(rng, (b, 1, h // 2**s, w // 2**s), 0.05, 0.085) for s in range(4)}
    axisangle = torch.from_numpy(rng.uniform(-0.02, 0.02, size=(b, 1, 3)).astype(np.float32))
    translation = torch.from_numpy(rng.uniform(-0.01, 0.01, size=(b, 1, 3)).astype(np.float32)) + torch.tensor([-0.08, 0, 0])
    for f in (-1, 1):  # one motion per frame step, as PoseNet predicts it for (-1, 0) and (0, +1)
        outputs[("cam_T_cam", 0, f)] = layers.transformation_from_parameters(axisangle, translation, invert=f < 0)
    stored = {f"loss/in/frame{f:+d}": x for f, x in frames.items()}
    stored.update({f"loss/in/disp{s}": outputs[("disp", s)] for s in range(4)})
    stored.update({"loss/in/K": K, "loss/in/inv_K": inputs[("inv_K", 0)]})
    stored.update({f"loss/in/T{f:+d}": outputs[("cam_T_cam", 0, f)] for f in (-1, 1)})
    return inputs, outputs, stored


def md2_loss(root: Path, layers: types.ModuleType, tensors: dict[str, torch.Tensor], cases: dict[str, Any]) -> None:
    install_stubs(["six", "six.moves", "tensorboardX", "IPython", "datasets", "networks"])
    sys.modules["six.moves"].urllib = _Stub("six.moves.urllib")
    trainer = load_file_module("md2_trainer", root / "trainer.py")
    inputs, fixed_outputs, stored = md2_loss_inputs(layers)
    tensors.update(stored)
    (h, w), b = MD2_SIZE, 2
    opt = types.SimpleNamespace(scales=[0, 1, 2, 3], frame_ids=[0, -1, 1], height=h, width=w, min_depth=0.1, max_depth=100.0,
                                disparity_smoothness=1e-3, no_ssim=False, avg_reprojection=False, disable_automasking=False,
                                predictive_mask=False, v1_multiscale=False, pose_model_type="separate_resnet")
    state = types.SimpleNamespace(opt=opt, device=torch.device("cpu"), num_scales=4, ssim=layers.SSIM(),
                                  backproject_depth={0: layers.BackprojectDepth(b, h, w)},
                                  project_3d={0: layers.Project3D(b, h, w)})
    state.compute_reprojection_loss = types.MethodType(trainer.Trainer.compute_reprojection_loss, state)
    functional_align = types.ModuleType("F_align_corners_true")
    functional_align.__dict__.update(F.__dict__)
    functional_align.grid_sample = functools.partial(F.grid_sample, align_corners=True)
    for name, functional in (("align_corners_false", F), ("align_corners_true", functional_align)):
        outputs = dict(fixed_outputs)
        trainer.F = functional
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # grid_sample's "default align_corners changed in 1.3" notice
            trainer.Trainer.generate_images_pred(state, inputs, outputs)
            torch.manual_seed(17)  # the automask tie-breaking noise
            losses = trainer.Trainer.compute_losses(state, inputs, outputs)
        trainer.F = F
        tensors[f"loss/{name}/total"] = losses["loss"].reshape(1)
        tensors[f"loss/{name}/per_scale"] = torch.stack([losses[f"loss/{s}"] for s in range(4)])
        tensors[f"loss/{name}/warp_selected"] = outputs["identity_selection/0"].to(torch.uint8)
        tensors[f"loss/{name}/warped-1_scale0"] = outputs[("color", -1, 0)].contiguous()
    cases["loss"] = {
        "upstream": "trainer.py Trainer.generate_images_pred then Trainer.compute_losses (torch.manual_seed(17) first) on "
                    "a namespace with opt, ssim, backproject_depth[0], project_3d[0]",
        "opt": vars(opt), "frames": "loss/in/frame*: uint8, colour = value / 255; colour at scales 1-3: area resize of frame+0",
        "align_corners_false": f"grid_sample as the released code calls it on torch {torch.__version__} (default False)",
        "align_corners_true": "grid_sample(..., align_corners=True): torch 0.4.1's behaviour, which the code was written for",
        "warp_selected": "identity_selection/0: 1 where a warped source beat every unwarped one"}


def md2_metrics(layers: types.ModuleType, tensors: dict[str, torch.Tensor], cases: dict[str, Any]) -> None:
    rng = np.random.RandomState(23)
    min_depth, max_depth = 1e-3, 80.0
    gt = torch.from_numpy(rng.uniform(0.5, 90.0, size=(3, 1, 16, 24)).astype(np.float32))
    gt[torch.from_numpy(rng.uniform(size=gt.shape) < 0.15)] = 0.0
    pred = torch.from_numpy((gt.numpy() * rng.uniform(0.6, 1.5, size=gt.shape) + 0.5).astype(np.float32))
    rows = []
    for i in range(3):
        valid = (gt[i] > min_depth) & (gt[i] < max_depth)
        rows.append(torch.stack(layers.compute_depth_errors(gt[i][valid], pred[i].clamp(min_depth, max_depth)[valid])))
    tensors.update({"metrics/in/gt": gt, "metrics/in/pred": pred, "metrics/per_image": torch.stack(rows).double()})
    cases["metrics"] = {"upstream": "layers.py compute_depth_errors(gt[valid], pred.clamp(min, max)[valid]) per image, "
                                    "valid = min < gt < max (the masking of trainer.compute_depth_losses without its KITTI "
                                    "crop and median scaling)", "min_depth": min_depth, "max_depth": max_depth,
                        "columns": ["abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"]}


def make_monodepth2(root: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sys.path.insert(0, str(root))
    layers = importlib.import_module("layers")
    tensors: dict[str, torch.Tensor] = {}
    cases: dict[str, Any] = {}
    md2_geometry(layers, tensors, cases)
    md2_decoders(root, tensors, cases)
    md2_loss(root, layers, tensors, cases)
    md2_metrics(layers, tensors, cases)
    return tensors, {"repository": MONODEPTH2_URL, **upstream_commit(root), "cases": cases,
                     "stubs": ["six", "six.moves", "tensorboardX", "IPython", "datasets", "networks"]}


# --------------------------------------------------------------------------------------------------------------- main
def write(out: Path, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in sorted(tensors.items())}
    save_file(tensors, out / f"{name}.safetensors")
    meta = {**meta, "generated_by": "scripts/make_golden_fixtures.py", "torch": torch.__version__, "numpy": np.__version__,
            "weights_recipe": WEIGHTS_RECIPE,
            "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in tensors.items()}}
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    size = (out / f"{name}.safetensors").stat().st_size
    print(f"{out / name}.safetensors: {len(tensors)} tensors, {size / 1e6:.2f} MB; upstream {meta['repository']} "
          f"@ {meta['commit'][:12]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoedepth", type=Path, required=True, help="local git clone of isl-org/ZoeDepth")
    parser.add_argument("--monodepth2", type=Path, required=True, help="local git clone of nianticlabs/monodepth2")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "test" / "golden" / "fixtures")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name, root, make in (("zoedepth", args.zoedepth, make_zoedepth), ("monodepth2", args.monodepth2, make_monodepth2)):
        if not root.is_dir():
            raise SystemExit(f"--{name}: {root} is not a directory")
        tensors, meta = make(root.resolve())
        write(args.out, name, tensors, meta)
    diff = json.loads((args.out / "zoedepth.json").read_text())["cases"]["head/normed_alpha_applied"]["difference_to_normed"]
    print("ZoeDepth head, normed bins 0.001-30 m, alpha 1000 applied vs as released: depth differs by "
          f"{diff['abs_mean_m']:.3f} m on average, {diff['abs_max_m']:.3f} m at most, median relative difference "
          f"{diff['relative_median']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
