"""Why a self-supervised Monodepth2 learns shape on the synthetic world or not: cheap checks on frames taken straight from
the simulator (SimWorld.render, SimSequence.pose), no bag and no echo.

    .venv/bin/python benchmarks/monodepth2_diagnostics.py warp --preset bv2 --seed 101 [--supersample 4]
    .venv/bin/python benchmarks/monodepth2_diagnostics.py gradient --preset bv2 --seed 101
    .venv/bin/python benchmarks/monodepth2_diagnostics.py train --preset bv2 --seed 101 --pose posenet|gt|gt-rotation \\
        [--steps 400] [--v1-multiscale] [--out curve.json]

warp: per frame pair (t, t +/- 1) the photometric error (0.85 SSIM + 0.15 L1) of the target synthesised with the true
depth and pose, a constant depth, the inverted pose and no warp; pixel flow, parallax (flow minus the flow of the same
motion at infinite depth), rotation per pair. gradient: at zero rotation (true depth and translation) the share of
pairs whose loss gradient points toward the true rotation, by the true rotation's size. train: DepthNet with PoseNet, the
true relative poses or the true rotation with PoseNet's translation, the quick setting of benchmarks/scaling_ablation.py
(64x128, 2 Hz, quarter width, batch 12, Adam 3e-4, depth [0.01, 10], no flip); held-out delta1 after GT-median scaling
against a constant map's, and PoseNet's rotation error against the true rotation.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avs_depth_core.geometry import (
    BackprojectDepth,
    Project3D,
    as_homogeneous_intrinsics,
    transformation_from_parameters,
    warp_image,
)
from avs_depth_core.losses.photometric import SSIM, Monodepth2Loss, reprojection_loss
from avs_depth_core.models.monodepth2 import Monodepth2Config, disp_to_depth, predict_poses
from avs_depth_core.sim.world import SimWorld
from avs_depth_core.train.monodepth2 import Monodepth2Model, augment

H, W = 64, 128


def simulate(preset: str, seed: int, sequences: int, frames: int, rate_hz: float, supersample: int = 1) -> dict:
    """rgb (S, F, 3, H, W) float in [0, 1], depth (S, F, H, W) (far where invalid), pose (S, F, 4, 4), K (3, 3).
    supersample > 1: the simulator's anti-aliased colour (SimWorld(supersample=N), as `simulate --supersample N`)."""
    world = SimWorld(preset, seed=seed, height=H, width=W, scale_ambiguous=True, rate_hz=rate_hz, supersample=supersample)
    rgb, depth, pose = [], [], []
    for s in range(sequences):
        seq = world.sequence(s)
        for i in range(frames):
            image, d = seq.render(i)
            rgb.append(image.astype(np.float32) / 255)
            depth.append(np.nan_to_num(d, nan=world.max_depth * seq.scale))
            pose.append(seq.pose(i))
    return {"rgb": torch.tensor(np.array(rgb)).view(sequences, frames, H, W, 3).permute(0, 1, 4, 2, 3).float(),
            "depth": torch.tensor(np.array(depth)).view(sequences, frames, H, W).float(),
            "pose": torch.tensor(np.array(pose)).view(sequences, frames, 4, 4).float(),
            "K": torch.tensor(world.K).float()}


def relative_pose(pose: torch.Tensor, s: int, t: int, o: int) -> torch.Tensor:
    """Target t -> source t + o of sequence s (camera-to-world poses): what Monodepth2's Project3D applies."""
    return torch.linalg.inv(pose[s, t + o]) @ pose[s, t]


def angle_deg(T: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.arccos(((T[..., :3, :3].diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)))


def warp_stats(data: dict) -> None:
    K = as_homogeneous_intrinsics(data["K"])
    inv_K = torch.linalg.inv(K)
    backproject, project, ssim = BackprojectDepth(H, W), Project3D(H, W), SSIM()
    base = torch.stack(torch.meshgrid(torch.arange(W).float(), torch.arange(H).float(), indexing="xy"), -1)
    size = torch.tensor([W - 1, H - 1])
    rows = []
    for s in range(data["rgb"].shape[0]):
        for t in range(1, data["rgb"].shape[1] - 1):
            for o in (-1, 1):
                target, source = data["rgb"][s, t][None], data["rgb"][s, t + o][None]
                depth, T = data["depth"][s, t][None, None], relative_pose(data["pose"], s, t, o)[None]

                def error(d: torch.Tensor, pose: torch.Tensor, source: torch.Tensor = source,
                          target: torch.Tensor = target) -> tuple[float, torch.Tensor]:
                    grid = project(backproject(d, inv_K), K, pose)
                    return float(reprojection_loss(warp_image(source, grid), target, ssim).mean()), grid

                truth, grid = error(depth, T)
                flow = (grid[0] + 1) / 2 * size - base
                far = (error(torch.full_like(depth, 1e6), T)[1][0] + 1) / 2 * size - base
                rows.append([truth, error(torch.full_like(depth, float(depth.median())), T)[0],
                             error(depth, torch.linalg.inv(T))[0], float(reprojection_loss(source, target, ssim).mean()),
                             float(flow.norm(dim=-1).median()), float((flow - far).norm(dim=-1).median()),
                             float(angle_deg(T[0]))])
    r = np.array(rows)
    names = ["error, true depth and pose", "error, constant depth", "error, inverted pose", "error, no warp",
             "flow (px)", "parallax (px)", "rotation per pair (deg)"]
    for name, column in zip(names, r.T, strict=True):
        print(f"{name:28s} median {np.median(column):.4f}  p10 {np.percentile(column, 10):.4f}  "
              f"p90 {np.percentile(column, 90):.4f}")
    print(f"pairs where the truth beats: no warp {np.mean(r[:, 0] < r[:, 3]):.3f}, the inverted pose "
          f"{np.mean(r[:, 0] < r[:, 2]):.3f}, a constant depth {np.mean(r[:, 0] < r[:, 1]):.3f}")


def rotation_gradient(data: dict) -> None:
    K = as_homogeneous_intrinsics(data["K"])
    inv_K = torch.linalg.inv(K)
    from scipy.spatial.transform import Rotation

    torch.manual_seed(0)
    for name, v1, key in (("Monodepth2 (every scale at full resolution)", False, None),
                          ("v1_multiscale, all scales", True, None), ("v1_multiscale, scale 3 alone", True, 3)):
        loss_fn = Monodepth2Loss(H, W, min_depth=0.1, max_depth=100.0, automask=False, v1_multiscale=v1)
        cosines, angles = [], []
        for s in range(data["rgb"].shape[0]):
            for t in range(1, data["rgb"].shape[1] - 1):
                disp = (1 / data["depth"][s, t] - 0.01) / (10 - 0.01)
                disps = {("disp", k): F.interpolate(disp[None, None], scale_factor=0.5**k, mode="area") for k in range(4)}
                T = relative_pose(data["pose"], s, t, 1)
                truth = torch.tensor(Rotation.from_matrix(T[:3, :3].double().numpy()).as_rotvec()).float()
                axisangle = (torch.randn(1, 1, 3) * 1e-3).requires_grad_()  # 0 exactly has no gradient (Rodrigues)
                pose = transformation_from_parameters(axisangle, T[:3, 3][None, None])
                result = loss_fn(data["rgb"][s, t][None], {1: data["rgb"][s, t + 1][None]}, disps, {1: pose}, K, inv_K)
                (result.loss if key is None else result.per_scale[key]).backward()
                cosines.append(float(F.cosine_similarity(-axisangle.grad.flatten(), truth, dim=0)))
                angles.append(math.degrees(float(truth.norm())))
        c, a = np.array(cosines), np.array(angles)
        bins = {"< 1.5 deg": a < 1.5, "1.5-4 deg": (a >= 1.5) & (a < 4), ">= 4 deg": a >= 4}
        print(f"{name}: descent toward the true rotation (cosine > 0.5) in {np.mean(c > 0.5):.2f} of pairs; " +
              ", ".join(f"{k} {np.mean(c[m] > 0.5):.2f} (n={int(m.sum())})" for k, m in bins.items()))


def train(data: dict, test: dict, args: argparse.Namespace) -> list[list[float]]:
    torch.manual_seed(args.seed)
    width = 16
    cfg = Monodepth2Config.from_dict({"height": H, "width": W, "encoder_width": width,
                                      "decoder_channels": [max(4, c * width // 64) for c in (16, 32, 64, 128, 256)],
                                      "min_depth": 0.01, "max_depth": 10.0, "learning_rate": 3e-4, "hflip_prob": 0.0,
                                      "frame_interval": 1, "v1_multiscale": args.v1_multiscale})
    model = Monodepth2Model(cfg)
    params = list(model.depth.parameters()) + (list(model.pose.parameters()) if args.pose != "gt" else [])
    optimiser = torch.optim.Adam(params, lr=cfg.learning_rate)
    loss_fn = Monodepth2Loss.from_config(cfg)
    K = as_homogeneous_intrinsics(data["K"])
    inv_K = torch.linalg.inv(K)
    S, n = data["rgb"].shape[:2]
    triples = [(s, t) for s in range(S) for t in range(1, n - 1)]
    generator = torch.Generator().manual_seed(args.seed)
    curve = []
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(triples), (12,), generator=generator).tolist()
        frames = torch.stack([data["rgb"][s, t - 1:t + 2] for s, t in (triples[i] for i in idx)])
        frames, inputs, _ = augment(frames, data["K"].expand(12, 3, 3), cfg)
        truth = {o: torch.stack([relative_pose(data["pose"], s, t, o) for s, t in (triples[i] for i in idx)])
                 for o in (-1, 1)}
        poses = predict_poses(model.pose, inputs[:, 1], {-1: inputs[:, 0], 1: inputs[:, 2]})
        rotation_error = float(angle_deg(truth[1][:, :3, :3].transpose(1, 2) @ poses[1][:, :3, :3].detach()).mean())
        if args.pose == "gt":  # translations in depth units: the scene's metres over --translation-unit
            poses = {o: torch.cat([torch.cat([T[:, :3, :3], T[:, :3, 3:] / args.translation_unit], 2), T[:, 3:]], 1)
                     for o, T in truth.items()}
        elif args.pose == "gt-rotation":
            poses = {o: torch.cat([torch.cat([truth[o][:, :3, :3], P[:, :3, 3:]], 2), P[:, 3:]], 1)
                     for o, P in poses.items()}
        result = loss_fn(frames[:, 1], {-1: frames[:, 0], 1: frames[:, 2]}, model.depth(inputs[:, 1]), poses, K, inv_K)
        optimiser.zero_grad()
        result.loss.backward()
        optimiser.step()
        if step % args.eval_every == 0 or step == args.steps:
            shape, constant = evaluate(model, test, cfg)
            curve.append([step, float(result.loss), shape, constant, rotation_error,
                          float(angle_deg(truth[1]).mean())])
            print(f"step {step}: loss {float(result.loss):.4f}, held-out delta1 GT-median scaled {shape:.3f} (constant "
                  f"map {constant:.3f}); PoseNet rotation error {rotation_error:.2f} deg for {curve[-1][-1]:.2f} deg of "
                  f"true rotation", flush=True)
    return curve


@torch.no_grad()
def evaluate(model: Monodepth2Model, test: dict, cfg: Monodepth2Config) -> tuple[float, float]:
    model.eval()
    shape, constant = [], []
    images, gts = test["rgb"][:, 1:-1].reshape(-1, 3, H, W), test["depth"][:, 1:-1].reshape(-1, H, W)
    for i in range(0, len(images), 64):
        _, depth = disp_to_depth(model.depth(images[i:i + 64])[("disp", 0)][:, 0], cfg.min_depth, cfg.max_depth)
        for pred, gt in zip(depth, gts[i:i + 64], strict=True):
            valid = gt < gt.max()  # the far fill of invalid pixels is the largest value
            pred, gt = pred[valid], gt[valid]
            for out, p in ((shape, pred * gt.median() / pred.median()), (constant, torch.full_like(gt, float(gt.median())))):
                out.append(float((torch.maximum(p / gt, gt / p) < 1.25).float().mean()))
    model.train()
    return float(np.mean(shape)), float(np.mean(constant))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("check", choices=["warp", "gradient", "train"])
    p.add_argument("--preset", default="bv2")
    p.add_argument("--seed", type=int, default=101)
    p.add_argument("--sequences", type=int, default=None, help="default 16 (warp, gradient) or 60 (train: 45 + 15 held out)")
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--rate", type=float, default=2.0, help="camera rate, Hz (the quick setting's 2)")
    p.add_argument("--supersample", type=int, default=1, help="render at this factor and average down")
    p.add_argument("--pose", choices=["posenet", "gt", "gt-rotation"], default="posenet")
    p.add_argument("--translation-unit", type=float, default=300.0,
                   help="--pose gt: metres per depth unit (300 puts the initial depth, 0.02 units, at about 6 m)")
    p.add_argument("--v1-multiscale", action="store_true")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--out", type=Path, default=None, help="train: write the curve as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sequences = args.sequences or (60 if args.check == "train" else 16)
    data = simulate(args.preset, args.seed, sequences, args.frames, args.rate, args.supersample)
    if args.check == "warp":
        warp_stats(data)
    elif args.check == "gradient":
        rotation_gradient(data)
    else:
        held_out = max(1, sequences // 4)
        train_part = {k: v[:-held_out] if k != "K" else v for k, v in data.items()}
        test_part = {k: v[-held_out:] if k != "K" else v for k, v in data.items()}
        curve = train(train_part, test_part, args)
        if args.out is not None:
            args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "curve": curve}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
