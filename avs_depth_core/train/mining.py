"""Mining dynamic-region pseudo labels with the echo aligning object scale (`avs-depth mine-labels`): the stages between
the stage-1 Monodepth2 and its retraining in Nguyen et al. ("Mining Supervision for Dynamic Regions", CVPR 2024), in the
echo version E2 of ../shared/reference/rescale_maps_and_dynamic_regions.md (B.10), CPU-sized (B.11).

Per centre frame of the bag's triples (one split):
1. Stage-1 networks: scene depth R (scale 0) and the poses to the frames at -/+1 interval.
2. Residual flow (their RAFT on the forward-warped reference, B.3; here `flow: matching`, a non-learned stand-in): the
   sources are warped rigidly with R and the pose; block matching (SAD over a match_window box, displacements up to
   match_radius px) finds the shift that still brings each source patch onto the target; kept only where it lowers the
   cost below the zero shift's and its L1 norm is at least the image's mean (their "at least 50 % static"), and zeroed
   where either direction has none (their post-processing). Motion magnitude = (|f_-1|_1 + |f_+1|_1) / 2.
3. Dynamic regions (`regions`):
     instances  the bag's instance maps, classified by the paper's rules (mined_labels.classify_instances: share of the
                mask with motion >= flow_threshold at least is_dynamic_threshold, or touching the central strip);
     oracle     the bag's instance maps and ground-truth moving flags (separates mask errors from alignment errors);
     motion     no instance maps (BatVision): connected components of the motion mask split at depth jumps
                (mined_labels.motion_components), a documented weaker substitute for their slot-attention path.
4. Object depth (`object_depth`): `scene` = R's shape over the object (their object network under rigid motion is not
   built: stage 2 is replaced by the stage-1 shape), `pseudo_metric` = the echo map Mp itself, `ground_truth` = an
   oracle for diagnosis (simulated bags only): the ground truth inside the objects and R at the ground truth's median
   scale outside (no echo, no gate), so a retraining on these labels shows what perfect labels can do.
5. Object scale (`object_scale`): `echo` (default) = beta_echo = median(Mp over the object) / median(object depth over
   it) (mined_labels.echo_object_scale), Mp from a frozen RGB-Echoes AVS-Net on the frame and its echo; `dsa` = the
   paper's learned Depth Scale Alignment (train/scale_alignment.py), trained here on the split's STATIC instances and
   then applied to the dynamic ones (needs instance maps). The agreement gate (`gate`): `ground` compares the chosen
   scale with a non-learned ground-contact scale: the scene depth s_t R of the pixels just below the object's lowest row
   in each column (floor_rows rows, not inside any object) against the object depth along that lowest row, DSA's
   road-context cue without learning (our choice); objects without such floor pixels follow gate_missing (keep: the
   chosen scale alone decides). `echo_dsa` compares beta_echo with the DSA's (B.10 E4). `none` keeps every object.
   Objects whose scales disagree by more than gate_log_ratio get no label. `measure_dsa` trains the DSA only to record
   its scale and error per object beside the echo's (the labels stay those of object_scale and gate).
   `label_objects`: `dynamic` (theirs) labels the dynamic objects of step 3 only; `all` (ours, instance maps only)
   labels every instance of at least object_size_threshold the same way, the static ones too: the retrained DepthNet
   then sees every object with an echo-scaled depth, not only the moving ones (more objects to generalise from; on bv1
   the test objects' gain, not the labels, was the limit: README, session 13).
6. Pseudo label (mined_labels.pseudo_label, metres): s_t R outside the accepted dynamic objects, with
   s_t = median(Mp) / median(R) over the frame; beta x object depth inside; the nearest object where they overlap.
   `rejected_label`: a dynamic object the gate rejects gets no label (`none`, default since session 13: theirs label
   nothing outside the dynamic mask, and the retraining's static term, which holds every labelled pixel outside it at
   stage 1's depth, would hold the rejected object where motion misled stage 1) or s_t R (`scene`, before).
Diagnostics with ground truth (simulated bags): per object the oracle scale (mined_labels.oracle_object_scale, B.10) and
|log| errors of beta_echo / s_t against it, and the labels' Abs Rel on the dynamic region against R's, both median-scaled
per image with one ratio.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from avs_depth_core.data.instances import read_instances, resize_labels
from avs_depth_core.geometry import BackprojectDepth, Project3D, warp_image
from avs_depth_core.models.monodepth2 import disp_to_depth, load_monodepth2, predict_poses
from avs_depth_core.train.dynamic_labels import save_labels
from avs_depth_core.train.echo_supervision import PseudoMetricTeacher
from avs_depth_core.train.mined_labels import (
    MinedLabelsConfig,
    classify_instances,
    echo_object_scale,
    motion_components,
    oracle_object_scale,
    pseudo_label,
    scales_agree,
)
from avs_depth_core.train.monodepth2 import imu_pair_rotations
from avs_depth_core.train.scale_alignment import (
    AlignmentFrame,
    ScaleAligner,
    ScaleAlignmentConfig,
    train_scale_alignment,
)

REGIONS = ("instances", "oracle", "motion")
FLOWS = ("matching",)
OBJECT_DEPTHS = ("scene", "pseudo_metric", "ground_truth")
GATES = ("ground", "echo_dsa", "none")
OBJECT_SCALES = ("echo", "dsa")
GATE_MISSING = ("keep", "drop")
LABEL_OBJECTS = ("dynamic", "all")
REJECTED_LABELS = ("none", "scene")


@dataclass
class MiningConfig:
    """`avs-depth mine-labels` settings (module docstring); `thresholds` holds the paper's (MinedLabelsConfig)."""

    regions: str = "instances"
    flow: str = "matching"
    match_radius: int = 4  # px searched by block matching (our choice: 64x128 frames 0.5 s apart)
    match_window: int = 5  # SAD box (our choice)
    object_depth: str = "scene"
    object_scale: str = "echo"
    measure_dsa: bool = False  # train the DSA for its per-object errors only (diagnostics)
    gate: str = "ground"
    gate_missing: str = "keep"
    label_objects: str = "dynamic"  # "all": static instances labelled too (not theirs; module docstring, step 5)
    rejected_label: str = "none"  # "scene": a rejected object keeps s_t R (before session 13; module docstring, step 6)
    floor_rows: int = 3  # rows below an object's lowest pixel that count as its ground contact (our choice)
    min_floor_pixels: int = 5  # fewer: no ground scale (our choice)
    split: str = "train"
    batch_size: int = 8
    thresholds: MinedLabelsConfig = field(default_factory=MinedLabelsConfig)
    dsa: ScaleAlignmentConfig = field(default_factory=ScaleAlignmentConfig)  # --set dsa.KEY=VALUE

    @property
    def uses_dsa(self) -> bool:
        """The labels depend on the learned DSA."""
        return self.object_scale == "dsa" or self.gate == "echo_dsa"

    @property
    def needs_dsa(self) -> bool:
        """The DSA is trained (for the labels, or only measured)."""
        return self.uses_dsa or self.measure_dsa

    def check(self) -> None:
        for key, allowed in (("regions", REGIONS), ("flow", FLOWS), ("object_depth", OBJECT_DEPTHS), ("gate", GATES),
                             ("gate_missing", GATE_MISSING), ("object_scale", OBJECT_SCALES),
                             ("label_objects", LABEL_OBJECTS), ("rejected_label", REJECTED_LABELS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"mining: {key} {getattr(self, key)!r}: choose from {list(allowed)}")
        for key in ("match_radius", "match_window", "floor_rows", "min_floor_pixels", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"mining: {key} must be >= 1, got {getattr(self, key)}")
        if self.label_objects == "all" and self.regions == "motion":
            raise ValueError("mining: label_objects all labels every instance, and regions motion has no instance maps; "
                             "use regions instances or oracle, or label_objects dynamic")
        if self.uses_dsa and self.regions == "motion":
            raise ValueError("mining: the learned DSA (object_scale dsa, gate echo_dsa) trains on static instances, and "
                             "regions motion has none; use regions instances or oracle")
        if self.uses_dsa and self.object_depth == "ground_truth":
            raise ValueError("mining: object_depth ground_truth is an oracle without object scale; it takes no DSA")
        self.dsa.check()

    @classmethod
    def from_assignments(cls, assignments: list[str]) -> MiningConfig:
        """KEY=VALUE strings (thresholds by their own names, e.g. flow_threshold=1.5; the DSA's as dsa.KEY), values typed
        like the defaults."""
        import yaml

        top, inner, dsa = {}, {}, {}
        names = set(MinedLabelsConfig.__dataclass_fields__)
        dsa_names = set(ScaleAlignmentConfig.__dataclass_fields__)
        for text in assignments:
            key, sep, value = text.partition("=")
            if not sep:
                raise ValueError(f"--set {text!r}: expected KEY=VALUE")
            parsed = yaml.safe_load(value)
            if key in names:
                inner[key] = parsed
            elif key.startswith("dsa.") and key[4:] in dsa_names:
                dsa[key[4:]] = parsed
            elif key in cls.__dataclass_fields__ and key not in ("thresholds", "dsa"):
                top[key] = parsed
            else:
                known = sorted(set(cls.__dataclass_fields__) - {"thresholds", "dsa"} | names
                               | {f"dsa.{k}" for k in dsa_names})
                raise ValueError(f"--set {key}: unknown key; choose from {known}")
        cfg = cls(**top, thresholds=MinedLabelsConfig(**inner), dsa=ScaleAlignmentConfig(**dsa))
        cfg.check()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------------
# residual flow


def _shift_grid(grid: torch.Tensor, dx: int, dy: int, size: tuple[int, int]) -> torch.Tensor:
    h, w = size
    offset = torch.tensor([2.0 * dx / (w - 1), 2.0 * dy / (h - 1)], dtype=grid.dtype, device=grid.device)
    return grid + offset


def matched_residual_flow(target: torch.Tensor, source: torch.Tensor, grid: torch.Tensor, radius: int,
                          window: int) -> torch.Tensor:
    """(B, 2, H, W) px: per target pixel the shift of the rigid sampling grid (B, H, W, 2) that best matches the source
    patch to the target patch (SAD over window x window); 0 where no shift beats the rigid one."""
    size = tuple(target.shape[-2:])
    pad = window // 2

    def cost(g: torch.Tensor) -> torch.Tensor:
        diff = (warp_image(source, g) - target).abs().mean(1, keepdim=True)
        return F.avg_pool2d(F.pad(diff, (pad, pad, pad, pad), mode="replicate"), window, stride=1)

    best = cost(grid)
    zero = best.clone()
    flow = torch.zeros(target.shape[0], 2, *size, device=target.device)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx == 0 and dy == 0:
                continue
            c = cost(_shift_grid(grid, dx, dy, size))
            better = c < best
            best = torch.where(better, c, best)
            flow[:, 0:1] = torch.where(better, torch.full_like(c, dx), flow[:, 0:1])
            flow[:, 1:2] = torch.where(better, torch.full_like(c, dy), flow[:, 1:2])
    flow = torch.where(best < zero, flow, torch.zeros_like(flow))
    return flow


def motion_magnitude(flows: list[torch.Tensor]) -> torch.Tensor:
    """Their post-processing of the residual flows to t-1 and t+1 ((B, 2, H, W) each) -> (B, H, W) motion magnitude:
    each kept where its L1 norm is at least the image's mean norm, both zeroed where either is zero, then the mean."""
    norms = []
    for f in flows:
        n = f.abs().sum(1)
        mean = n.flatten(1).mean(1).view(-1, 1, 1)
        norms.append(torch.where(n >= mean, n, torch.zeros_like(n)))
    both = torch.stack(norms).gt(0).all(0)
    return torch.where(both, torch.stack(norms).mean(0), torch.zeros_like(norms[0]))


# ---------------------------------------------------------------------------------------------------------------------
# per-frame labels


def ground_contact_scale(scene_metric: np.ndarray, object_depth: np.ndarray, mask: np.ndarray, occupied: np.ndarray,
                         rows: int, min_pixels: int) -> float:
    """Object scale from its ground contact: median of the scene depth (metres) in the `rows` pixels below the object's
    lowest pixel of each column (not in any object) over the median object depth on those lowest pixels; NaN with
    fewer than min_pixels floor pixels."""
    height = mask.shape[0]
    cols = np.flatnonzero(mask.any(0))
    floor, base = [], []
    for c in cols:
        bottom = int(np.flatnonzero(mask[:, c]).max())
        below = np.arange(bottom + 1, min(height, bottom + 1 + rows))
        below = below[~occupied[below, c]]
        if below.size:
            floor.extend(scene_metric[below, c].tolist())
            base.append(object_depth[bottom, c])
    if len(floor) < min_pixels or not base:
        return math.nan
    return float(np.median(floor)) / max(float(np.median(base)), 1e-12)


def large_instance_ids(instances: np.ndarray, t: MinedLabelsConfig) -> list[int]:
    """The instance ids covering at least object_size_threshold of the image (their size rule)."""
    ids, counts = np.unique(instances[instances > 0], return_counts=True)
    least = t.object_size_threshold * instances.size
    return [int(k) for k, n in zip(ids, counts, strict=True) if n >= least]


def _frame_regions(cfg: MiningConfig, instances: np.ndarray | None, moving_ids: set[int], motion: np.ndarray,
                   scene: np.ndarray) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """({object id: mask} of the objects to label (the dynamic ones, or all with label_objects all), every object's
    pixels) for one frame."""
    t = cfg.thresholds
    if cfg.regions == "motion":
        comps = motion_components(motion >= t.flow_threshold, scene, t)
        return {int(k): comps == k for k in np.unique(comps) if k}, comps > 0
    if instances is None:
        return {}, np.zeros(scene.shape, bool)
    if cfg.label_objects == "all":
        ids = large_instance_ids(instances, t)
    elif cfg.regions == "oracle":
        ids = [k for k in large_instance_ids(instances, t) if k in moving_ids]
    else:
        ids = [k for k, dyn in classify_instances(instances, motion, t).items() if dyn]
    return {int(k): instances == k for k in ids}, instances > 0


def frame_labels(cfg: MiningConfig, scene: np.ndarray, mp: np.ndarray, motion: np.ndarray, instances: np.ndarray | None,
                 moving_ids: set[int], gt: np.ndarray | None = None, describe: dict[int, dict[str, Any]] | None = None,
                 aligner: ScaleAligner | None = None,
                 rgb: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """One frame: scene depth R, Mp (metres), motion magnitude (px), instances (or None) at one size -> (label metres,
    dynamic mask, per-object records). aligner and rgb (3, H, W): the trained DSA, for cfg.needs_dsa."""
    if cfg.uses_dsa and (aligner is None or rgb is None):
        raise ValueError(f"mining: object_scale {cfg.object_scale!r} / gate {cfg.gate!r} need the trained DSA and the "
                         f"frame's rgb")
    masks, occupied = _frame_regions(cfg, instances, moving_ids, motion, scene)
    if cfg.object_depth == "ground_truth":
        return _oracle_labels(scene, gt, masks, occupied, moving_ids)
    ok = np.isfinite(mp) & (mp > 0)
    s_t = float(np.median(mp[ok]) / max(np.median(scene[ok]), 1e-12)) if ok.any() else math.nan
    scene_metric = scene * s_t
    depth = {k: (scene if cfg.object_depth == "scene" else mp) for k in masks}
    records, betas = [], {}
    valid_gt = None if gt is None else np.isfinite(gt) & (gt > 0)
    static = None if gt is None else valid_gt & ~occupied  # the scene without any object
    for k, mask in masks.items():
        beta_echo = echo_object_scale(mp, depth[k], mask)
        beta_dsa = math.nan
        if aligner is not None and rgb is not None:
            # The DSA scales the mean-normalised object depth in R's units; s_t / mean brings it to the object depth's.
            mean = float(depth[k][mask].mean())
            beta_dsa = s_t * aligner.scale(AlignmentFrame(rgb, scene, depth[k], occupied), mask) / mean \
                if mean > 0 else math.nan
        beta = beta_dsa if cfg.object_scale == "dsa" else beta_echo
        ground = ground_contact_scale(scene_metric, depth[k], mask, occupied, cfg.floor_rows, cfg.min_floor_pixels) \
            if cfg.gate == "ground" else math.nan
        if cfg.gate == "none":
            accepted = math.isfinite(beta)
        elif cfg.gate == "echo_dsa":
            accepted = math.isfinite(beta_echo) and math.isfinite(beta_dsa) and scales_agree(beta_echo, beta_dsa,
                                                                                             cfg.thresholds)
        elif math.isfinite(ground):
            accepted = math.isfinite(beta) and scales_agree(beta, ground, cfg.thresholds)
        else:
            accepted = math.isfinite(beta) and cfg.gate_missing == "keep"
        if accepted:
            betas[k] = beta
        rec = {"id": k, "pixels": int(mask.sum()), "moving": k in moving_ids, **(describe or {}).get(k, {}),
               "beta_echo": beta_echo, "beta_dsa": beta_dsa, "beta_ground": ground, "accepted": bool(accepted)}
        if gt is not None and math.isfinite(s_t) and static.any():
            # B.10: beta* = median(gt[o] / s_hat) / median(D[o]) in R's units (s_hat from the static ground truth).
            oracle = oracle_object_scale(gt, scene, depth[k] / s_t if cfg.object_depth == "pseudo_metric" else depth[k],
                                         mask, static)
            rel = {name: b / s_t if cfg.object_depth == "scene" else b
                   for name, b in (("echo", beta_echo), ("dsa", beta_dsa), ("ground", ground))}
            rec["beta_oracle"] = oracle
            rec.update({f"{name}_log_error": abs(math.log(r / oracle)) if r > 0 and oracle > 0 else math.nan
                        for name, r in rel.items()})
        records.append(rec)
    label, dynamic = pseudo_label(scene_metric, {k: depth[k] for k in betas}, {k: masks[k] for k in betas}, betas)
    label = np.where(np.isfinite(label) & (label > 0), label, 0.0)
    if cfg.rejected_label == "none":
        for k, mask in masks.items():
            if k not in betas:
                label[mask & ~dynamic] = 0.0
    return label.astype(np.float32), dynamic & (label > 0), records


def _oracle_labels(scene: np.ndarray, gt: np.ndarray | None, masks: dict[int, np.ndarray], occupied: np.ndarray,
                   moving_ids: set[int]) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """object_depth ground_truth: the ground truth inside the dynamic objects, R scaled by the ground truth's median over
    the static scene elsewhere (so both parts share one scale, as the per-image ratio of the loss expects)."""
    if gt is None:
        raise ValueError("mining: object_depth ground_truth needs a bag with ground-truth depth")
    valid = np.isfinite(gt) & (gt > 0)
    static = valid & ~occupied
    ref = static if static.any() else valid
    if not ref.any():
        return np.zeros(scene.shape, np.float32), np.zeros(scene.shape, bool), []
    s_gt = float(np.median(gt[ref]) / max(np.median(scene[ref]), 1e-12))
    truth = np.where(valid, gt, np.nan)
    label, dynamic = pseudo_label(scene * s_gt, {k: truth for k in masks}, masks, {k: 1.0 for k in masks})
    label = np.where(np.isfinite(label) & (label > 0), label, 0.0)
    records = [{"id": k, "pixels": int(m.sum()), "moving": k in moving_ids, "beta_echo": math.nan,
                "beta_ground": math.nan, "accepted": True} for k, m in masks.items()]
    return label.astype(np.float32), dynamic & (label > 0), records


def _region_abs_rel(pred: np.ndarray, gt: np.ndarray, region: np.ndarray) -> float:
    """Abs Rel over `region` after one median ratio over all valid pixels (the relative protocol)."""
    valid = np.isfinite(gt) & (gt > 0) & (pred > 0)
    keep = region & valid
    if not keep.any():
        return math.nan
    ratio = np.median(gt[valid]) / np.median(pred[valid])
    return float(np.mean(np.abs(pred[keep] * ratio - gt[keep]) / gt[keep]))


# ---------------------------------------------------------------------------------------------------------------------
# the stage


@torch.inference_mode()
def mine_labels(bag: str | Path, depth_checkpoint: str | Path, avsnet_checkpoint: str | Path, out: str | Path,
                cfg: MiningConfig | None = None, *, max_depth: float | None = None, cache_dir: str | Path | None = None,
                device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """Write the labels of `bag`'s `cfg.split` triples to `out` (.npz, train/dynamic_labels.py) and return the summary
    (also stored in the file's meta): counts, per-object scale errors by motion case, label Abs Rel on dynamic regions."""
    from avs_depth_core.data.datasets import TripletBagDataset
    from avs_depth_core.geometry import intrinsics_pyramid

    cfg = cfg or MiningConfig()
    cfg.check()
    start, cpu0 = time.perf_counter(), time.process_time()
    stage1 = load_monodepth2(depth_checkpoint, device, with_pose=True)
    mcfg = stage1.config
    teacher = PseudoMetricTeacher(avsnet_checkpoint, device)
    t = teacher.cfg
    size = (mcfg.height, mcfg.width)
    dataset = TripletBagDataset(bag, split=cfg.split, image_size=size, interval=mcfg.frame_interval,
                                max_depth=max_depth or t.max_depth, echo_size=tuple(t.echo_size or t.image_size), stft=t.stft,
                                speed_of_sound=t.speed_of_sound, sample_rate=t.sample_rate, cache_dir=cache_dir,
                                skip_bad=True, progress=progress, verbose=progress, need_imu=mcfg.pose_prior == "imu")
    frames = {}
    if cfg.regions != "motion":
        frames = read_instances(bag, [int(s) for s in np.asarray(dataset.cache.array("stamps"))])
        if not frames:
            raise ValueError(f"{bag}: no instance maps for regions {cfg.regions!r}; use regions=motion (no instances)")
    backproject, project = BackprojectDepth(*size).to(device), Project3D(*size)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=0)

    def stage1_frames():
        """Per labelled frame: what frame_labels reads (rgb only for the DSA)."""
        for batch in loader:
            rgb = batch["rgb"].to(device)
            K4, inv_K4 = intrinsics_pyramid(batch["K"], size, size, [0], source="camera intrinsics")[0]
            K4, inv_K4 = K4.to(device), inv_K4.to(device)
            target, sources = rgb[:, 1], {-1: rgb[:, 0], 1: rgb[:, 2]}
            _, scene = disp_to_depth(stage1.depth_net(target)[("disp", 0)], mcfg.min_depth, mcfg.max_depth)
            # A stage 1 trained with the IMU pose prior (model.pose_prior imu) takes its rotations here too.
            rotations = imu_pair_rotations(batch, None, [-1, 1], torch.device(device)) if mcfg.pose_prior == "imu" else None
            poses = predict_poses(stage1.pose_net, target, sources, rotations)
            points = backproject(scene, inv_K4)
            flows = [matched_residual_flow(target, sources[o], project(points, K4, poses[o]), cfg.match_radius,
                                           cfg.match_window) for o in (-1, 1)]
            motion = motion_magnitude(flows).cpu().numpy()
            mp = teacher(target, batch["echo"].to(device)).cpu().numpy()[:, 0]
            scene_np = scene.cpu().numpy()[:, 0]
            for i in range(rgb.shape[0]):
                if not bool(batch["has_echo"][i]):
                    continue
                stamp = int(batch["stamp_ns"][i])
                found = frames.get(stamp)
                instances = None if found is None or found.instances is None else \
                    resize_labels(found.instances, size).numpy()
                moving = set() if found is None else found.moving_ids()
                describe = {} if found is None or found.objects is None else \
                    {int(k): found.describe(int(k)) for k in found.objects.ids}
                gt = None
                if "depth" in batch and bool(batch["has_depth"][i]):
                    gt = batch["depth"][i, 0].numpy()
                    gt = np.where((gt > 0) & (gt < dataset.settings.max_depth), gt, np.nan)
                yield {"stamp": stamp, "scene": scene_np[i], "mp": mp[i], "motion": motion[i], "instances": instances,
                       "moving": moving, "gt": gt, "describe": describe, "rgb": target[i].cpu() if cfg.needs_dsa else None}

    frames_in = stage1_frames()
    aligner, dsa_log = None, None
    if cfg.needs_dsa:  # their stage 3 trains on the static objects of every frame before labelling any
        frames_in = list(frames_in)
        aligner, dsa_log = _train_dsa(cfg, frames_in, progress)
    stamps, labels, masks, records = [], [], [], []
    quality = defaultdict(list)
    for f in frames_in:
        label, dyn, recs = frame_labels(cfg, f["scene"], f["mp"], f["motion"], f["instances"], f["moving"], f["gt"],
                                        f["describe"], aligner, f["rgb"])
        stamps.append(f["stamp"])
        labels.append(label)
        masks.append(dyn)
        records += [{"stamp_ns": f["stamp"], **r} for r in recs]
        # label_objects all: the labels' quality still on the dynamic objects only (those of the paper's rules).
        region = dyn if cfg.label_objects == "dynamic" or f["instances"] is None else \
            dyn & np.isin(f["instances"], list(_frame_regions(replace(cfg, label_objects="dynamic"), f["instances"],
                                                                f["moving"], f["motion"], f["scene"])[0]))
        if f["gt"] is not None and f["instances"] is not None and region.any():
            quality["scene"].append(_region_abs_rel(f["scene"], f["gt"], region))
            quality["label"].append(_region_abs_rel(label, f["gt"], region))
    if not stamps:
        raise ValueError(f"{bag} [{cfg.split}]: no triple centre with an echo; nothing to label")
    summary = summarise(records, quality, cfg)
    summary.update({"frames": len(stamps), "frames_with_dynamic_label": int(sum(m.any() for m in masks)),
                    "dynamic_pixel_share": float(np.mean([m.mean() for m in masks])),
                    "config": cfg.to_dict(), "depth_checkpoint": str(depth_checkpoint), "dsa": dsa_log,
                    "avsnet_checkpoint": str(avsnet_checkpoint), "bag": str(bag),
                    "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu0})
    save_labels(out, np.array(stamps), np.stack(labels), np.stack(masks), {**summary, "records": records})
    return summary


def static_object_ids(cfg: MiningConfig, instances: np.ndarray, moving_ids: set[int], motion: np.ndarray) -> list[int]:
    """The frame's static instances of at least object_size_threshold: those the paper's rules do not call dynamic
    (regions instances) or the ground truth does not move (regions oracle). Their DSA trains on these only."""
    t = cfg.thresholds
    if cfg.regions == "oracle":
        return [k for k in large_instance_ids(instances, t) if k not in moving_ids]
    return [int(k) for k, dyn in classify_instances(instances, motion, t).items() if not dyn]


def _train_dsa(cfg: MiningConfig, frames: list[dict[str, Any]],
               progress: bool) -> tuple[ScaleAligner | None, dict[str, Any]]:
    """Stage 3: the DSA trained on every static object of the frames (object depth as cfg.object_depth)."""
    aligned, samples = [], []
    for f in frames:
        if f["instances"] is None:
            aligned.append(None)
            continue
        occupied = f["instances"] > 0
        aligned.append(AlignmentFrame(f["rgb"], f["scene"], f["scene"] if cfg.object_depth == "scene" else f["mp"], occupied))
        samples += [(len(aligned) - 1, f["instances"] == k)
                    for k in static_object_ids(cfg, f["instances"], f["moving"], f["motion"])]
    if not samples and not cfg.uses_dsa:  # only measuring: nothing to learn from is a finding, not an error
        return None, {"samples": 0, "skipped": "no static object of at least object_size_threshold"}
    with torch.inference_mode(False), torch.enable_grad():  # mine_labels runs under inference_mode
        aligner, log = train_scale_alignment(aligned, samples, cfg.dsa, progress)
    return aligner, log


def _nanmedian(values: list[float]) -> float:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
    return float(np.median(v)) if v.size else math.nan


def summarise(records: list[dict[str, Any]], quality: dict[str, list[float]], cfg: MiningConfig) -> dict[str, Any]:
    """Object counts and median |log| scale errors (overall and by motion case), the labels' dynamic-region Abs Rel."""
    def block(rows: list[dict[str, Any]]) -> dict[str, Any]:
        accepted = [r for r in rows if r["accepted"]]
        return {"objects": len(rows), "accepted": len(accepted), "truly_moving": sum(bool(r["moving"]) for r in rows),
                "echo_log_error_median": _nanmedian([r.get("echo_log_error", math.nan) for r in rows]),
                "echo_log_error_accepted_median": _nanmedian([r.get("echo_log_error", math.nan) for r in accepted]),
                "dsa_log_error_median": _nanmedian([r.get("dsa_log_error", math.nan) for r in rows]),
                "ground_log_error_median": _nanmedian([r.get("ground_log_error", math.nan) for r in rows])}

    by_motion: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_motion[str(r.get("motion", "unknown"))].append(r)
    return {"objects": block(records), "by_motion": {k: block(v) for k, v in sorted(by_motion.items())},
            "label_dynamic_abs_rel": float(np.nanmean(quality["label"])) if quality["label"] else math.nan,
            "scene_dynamic_abs_rel": float(np.nanmean(quality["scene"])) if quality["scene"] else math.nan}
