"""Mined supervision for dynamic regions (Nguyen et al., CVPR 2024) with the echo aligning object scale: the per-frame
steps between the trained networks, as plain functions on arrays.

  classify_instances   which instances are dynamic: the share of the mask with residual flow >= flow_threshold (1 px)
                       is >= is_dynamic_threshold (0.5), or the mask touches the central vertical strip of width
                       W / middle_portion (20); instances under object_size_threshold (0.5 %) of the image are dropped,
                       road/floor pixels removed from every mask (their mask_utils);
  motion_components    where no instance masks exist (BatVision): connected components of the motion mask, split where
                       the depth jumps (|delta log d| > depth_jump), kept from min_fraction of the image (a documented
                       weaker substitute for their slot-attention + Mask R-CNN path);
  echo_object_scale    beta_echo = median(Mp over the object) / median(object depth over it): the echo's metric map
                       takes the place of the learned Depth Scale Alignment;
  scales_agree         the gate between two object scales: |log(beta_a / beta_b)| < log 1.25 (TR2M's delta1 gating);
  pseudo_label         the scene depth everywhere, beta * object depth inside each dynamic mask, the nearest where masks
                       overlap (their stage-3 label);
  oracle_object_scale  beta* from the ground truth, to measure any alignment's object-scale error.
Thresholds are MinedLabelsConfig keys with the paper's values as defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class MinedLabelsConfig:
    flow_threshold: float = 1.0          # px of residual flow that count as motion (flow_threshold)
    is_dynamic_threshold: float = 0.5    # share of an instance that must move (is_dynamic_threshold)
    middle_portion: int = 20             # central strip of width W / middle_portion: dynamic by default (middle_portion)
    object_size_threshold: float = 0.005  # instances under this share of the image are dropped (object_mask_size_theshold)
    depth_jump: float = 0.1              # motion components split where |delta log depth| exceeds this (our choice)
    gate_log_ratio: float = math.log(1.25)  # object scales agree when |log ratio| is below this (our choice, TR2M-like)


def classify_instances(instances: np.ndarray, residual_flow: np.ndarray | None, cfg: MinedLabelsConfig = MinedLabelsConfig(),
                       road: np.ndarray | None = None) -> dict[int, bool]:
    """{instance id: dynamic} for the instances of at least object_size_threshold of the image (after removing road
    pixels). residual_flow: (2, H, W) px, or (H, W) its magnitude; None counts only the central-strip rule."""
    height, width = instances.shape
    if residual_flow is None:
        moving = np.zeros(instances.shape, bool)
    else:
        flow = np.asarray(residual_flow, np.float64)
        magnitude = np.linalg.norm(flow, axis=0) if flow.ndim == 3 else np.abs(flow)
        moving = magnitude >= cfg.flow_threshold
    strip = np.zeros(instances.shape, bool)
    half = max(1, round(width / cfg.middle_portion / 2))
    strip[:, width // 2 - half: width // 2 + half] = True
    out = {}
    for k in np.unique(instances):
        if k == 0:
            continue
        mask = instances == k
        if road is not None:
            mask &= ~road
        area = int(mask.sum())
        if area < cfg.object_size_threshold * height * width:
            continue
        out[int(k)] = bool((moving & mask).sum() / area >= cfg.is_dynamic_threshold or (mask & strip).any())
    return out


def motion_components(motion: np.ndarray, depth: np.ndarray, cfg: MinedLabelsConfig = MinedLabelsConfig(),
                      min_fraction: float | None = None) -> np.ndarray:
    """Instance map (uint16, 0 = none) from a motion mask: 4-connected components of the moving pixels, cut where the
    depth jumps between neighbours, those of at least min_fraction (default object_size_threshold) of the image."""
    min_fraction = cfg.object_size_threshold if min_fraction is None else min_fraction
    log_depth = np.log(np.maximum(np.asarray(depth, np.float64), 1e-6))
    edge = np.zeros(motion.shape, bool)
    dy = np.abs(np.diff(log_depth, axis=0)) > cfg.depth_jump
    dx = np.abs(np.diff(log_depth, axis=1)) > cfg.depth_jump
    edge[1:] |= dy
    edge[:, 1:] |= dx
    labels, count = ndimage.label(motion.astype(bool) & ~edge)
    out = np.zeros(motion.shape, np.uint16)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    next_id = 1
    for k in range(1, count + 1):
        if sizes[k] >= min_fraction * motion.size:
            out[labels == k] = next_id
            next_id += 1
    return out


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if x.size else math.nan


def echo_object_scale(pseudo_metric: np.ndarray, object_depth: np.ndarray, mask: np.ndarray) -> float:
    """beta_echo = median(Mp[mask]) / median(object_depth[mask]) over pixels where both are finite and positive (NaN
    when none are)."""
    ok = mask & np.isfinite(pseudo_metric) & (pseudo_metric > 0) & np.isfinite(object_depth) & (object_depth > 0)
    if not ok.any():
        return math.nan
    return _median(pseudo_metric[ok]) / _median(object_depth[ok])


def oracle_object_scale(gt: np.ndarray, relative: np.ndarray, object_depth: np.ndarray, mask: np.ndarray,
                        static: np.ndarray) -> float:
    """beta* = median(gt[mask] / s) / median(object_depth[mask]) with s = median(gt[static]) / median(relative[static]):
    the object scale that puts the object where the ground truth has it, in the relative map's units."""
    valid = np.isfinite(gt) & (gt > 0)
    s = _median(gt[static & valid]) / _median(relative[static & valid])
    ok = mask & valid & (object_depth > 0)
    return _median(gt[ok] / s) / _median(object_depth[ok]) if ok.any() else math.nan


def scales_agree(beta_a: float, beta_b: float, cfg: MinedLabelsConfig = MinedLabelsConfig()) -> bool:
    if not (beta_a > 0 and beta_b > 0):
        return False
    return abs(math.log(beta_a / beta_b)) < cfg.gate_log_ratio


def pseudo_label(scene_depth: np.ndarray, object_depths: dict[int, np.ndarray], masks: dict[int, np.ndarray],
                 betas: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """(label, dynamic mask): the scene depth, with beta * object depth inside each object's mask (objects without a
    finite positive beta are left out); where masks overlap the nearest object wins."""
    label = np.array(scene_depth, np.float64, copy=True)
    objects = np.full(label.shape, np.inf)
    for k, mask in masks.items():
        beta = betas.get(k, math.nan)
        if not (beta > 0 and math.isfinite(beta)):
            continue
        objects = np.where(mask, np.minimum(objects, beta * object_depths[k]), objects)
    dynamic = np.isfinite(objects)
    label[dynamic] = objects[dynamic]
    return label, dynamic
