"""Scale recovery: relative depth R (a relative network's output, up to scale) -> metric depth M, with the scale taken from a
pseudo-dense metric map Mp (AVS-Net from RGB + echoes, or Only-RGB).

Methods (`method=`):
- "median": AVS-Net eq. 3, M = R * median(Mp) / median(R) (the same per-image median scaling Monodepth2's evaluation does
  with ground truth, evaluate_depth.py).
- "mean-std": M = (R - mean(R)) * std(Mp) / std(R) + mean(Mp), i.e. scale = std(Mp) / std(R) and
  shift = mean(Mp) - scale * mean(R); population std (ddof 0), over the same pixels as the medians. It aligns the first two
  moments of depth, so it also takes a shift; where R is small and the shift negative the result can be <= 0, and
  apply_scale clamps it to `min_output`.
- "none": scale 1 (for models that are already metric, such as AVS-Net Only-RGB used as a zero-shot metric model).
- "pixelwise": pixel-wise rescale maps from a trained EchoRescaleHead (avs_depth_core.rescale, TR2M with echoes). Here it
  returns the median scale, which is the head's per-image anchor and, without a fresh echo, the held fallback;
  rescale.PixelwiseRescaler.apply turns it and the head's maps into metric depth.

Which pixels: `median_over="shared"` (default) takes both statistics over the same pixels, those where R and Mp are finite
and > 0, Mp lies within (min_depth, max_depth) and the optional `mask` is True. `median_over="each"` takes the statistic of
Mp over its own valid pixels and that of R over its own (finite, > 0, mask), the literal reading of eq. 3 over whole maps.

Failures (no or too few usable pixels, a zero, NaN or infinite median or scale, a constant R for mean-std) raise ScaleError
naming what happened; `fallback="unit"` returns scale 1 and `fallback="nan"` returns a NaN scale (apply_scale then gives an
all-NaN map, "no estimate" in the depth topic's convention) instead, with the reason in ScaleResult.fallback for the caller
to count. ScaleTracker smooths scales over time for live use and holds the last one for a bounded time.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from avs_depth_core.config import check_fields, dataclass_from_dict

ArrayLike = torch.Tensor | np.ndarray

METHODS = ("none", "median", "mean-std", "pixelwise")
FALLBACKS = ("raise", "unit", "nan")
MEDIAN_OVER = ("shared", "each")
DISPARITY_KINDS = ("inverse", "monodepth2")


class ScaleError(ValueError):
    """A scale could not be recovered; the message says why."""


@dataclass
class ScaleResult:
    """One image's scale: metric = scale * relative + shift (shift is 0 except for mean-std).

    pixels: how many pixels the statistics were taken over (for median_over="each", the smaller of the two sets).
    fallback: None for a fresh estimate, else why there is none (and what was returned instead).
    held / held_for: set by ScaleTracker when it returns an earlier scale, and for how many seconds it has held it.
    """

    scale: float
    pseudo_metric_median: float
    relative_median: float
    pixels: int
    method: str
    fallback: str | None = None
    shift: float = 0.0
    held: bool = False
    held_for: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the scale can be applied (finite and positive), fresh or held."""
        return math.isfinite(self.scale) and self.scale > 0 and math.isfinite(self.shift)


@dataclass
class ScalingConfig:
    """Settings for recover_scale and ScaleTracker, as read from a config file's scaling section."""

    method: str = "median"
    median_over: str = "shared"
    # Pseudo-metric pixels outside (min_depth, max_depth) are left out: AVS-Net saturates at its max depth (30 m BV2, 12 m BV1).
    min_depth: float = 1e-3
    max_depth: float = math.inf
    # Project choice: fewer usable pixels than this is treated as no estimate.
    min_pixels: int = 100
    fallback: str = "raise"
    # Project choices for live use: no smoothing (the paper scales each frame on its own) and a 1 s hold.
    smoothing_alpha: float = 1.0
    hold_s: float = 1.0

    def __post_init__(self) -> None:
        check_fields(self)
        _check_choice("method", self.method, METHODS)
        _check_choice("median_over", self.median_over, MEDIAN_OVER)
        _check_choice("fallback", self.fallback, FALLBACKS)
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(f"scaling needs 0 <= min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        if self.min_pixels < 1:
            raise ValueError(f"scaling min_pixels must be >= 1, got {self.min_pixels}")
        if not 0 < self.smoothing_alpha <= 1:
            raise ValueError(f"scaling smoothing_alpha must lie in (0, 1], got {self.smoothing_alpha}")
        if self.hold_s < 0:
            raise ValueError(f"scaling hold_s must be >= 0, got {self.hold_s}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "scaling config") -> ScalingConfig:
        """Strict: unknown keys and wrong types are errors naming `source` and the key (avs_depth_core.config)."""
        return dataclass_from_dict(cls, values, source)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def recover(self, relative_depth: ArrayLike, pseudo_metric: ArrayLike | None, mask: ArrayLike | None = None) -> ScaleResult:
        return recover_scale(relative_depth, pseudo_metric, self.method, mask, self.min_depth, self.max_depth, self.min_pixels,
                             self.median_over, self.fallback)

    def tracker(self) -> ScaleTracker:
        return ScaleTracker(self.smoothing_alpha, self.hold_s)


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"scaling {key} must be one of {list(choices)}, got {value!r}")


def disparity_to_depth(disp: ArrayLike, kind: str = "inverse", min_depth: float = 0.1, max_depth: float = 100.0,
                       min_disparity: float = 1e-6) -> ArrayLike:
    """Disparity-valued output -> depth in relative units, keeping the input's type and shape.

    kind="monodepth2": a sigmoid output in [0, 1], mapped as Monodepth2's disp_to_depth (depth in [min_depth, max_depth]).
    kind="inverse": depth = 1 / disp, with disp clamped below at min_disparity (zero disparity, e.g. sky, becomes very far).

    Shift ambiguity: MiDaS/DPT-style relative models predict inverse depth up to an unknown scale AND shift,
    1/depth ~ a * disp + b. Taking 1/disp drops b, so the result is proportional to depth only when b is about 0; median
    scaling of it is then an approximation whose error grows where disp is small compared with |b| (far pixels). Monodepth2's
    disparity has no such shift once disp_to_depth is applied. NaN or negative disparity raises ValueError.
    """
    _check_choice("disparity kind", kind, DISPARITY_KINDS)
    values = torch.as_tensor(disp)
    if torch.isnan(values).any():
        raise ValueError(f"disparity contains {int(torch.isnan(values).sum())} NaN values")
    if (values < 0).any():
        raise ValueError(f"disparity must be >= 0, got {int((values < 0).sum())} negative values (min {values.min().item():.4g})")
    if kind == "monodepth2":
        if values.max() > 1:
            raise ValueError(f"monodepth2 disparity is a sigmoid output in [0, 1], got max {values.max().item():.4g}")
        min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
        depth = 1.0 / (min_disp + (max_disp - min_disp) * values)
    else:
        depth = 1.0 / values.clamp(min=min_disparity)
    return depth.numpy() if isinstance(disp, np.ndarray) else depth


def _single_image(x: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    while t.dim() > 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 2:
        raise ValueError(f"{name} must be one image, (H, W), (1, H, W) or (1, 1, H, W), got shape "
                         f"{tuple(torch.as_tensor(x).shape)}; use recover_scale_batch for a batch")
    return t


def _median(values: torch.Tensor) -> float:
    # numpy's median (mean of the two middle values), as Monodepth2's evaluation uses; torch.median takes the lower one.
    # kthvalue selects without a full sort and runs on any device.
    flat = values.flatten().double()
    n = flat.numel()
    lower = flat.kthvalue((n + 1) // 2).values
    return float(lower if n % 2 else (lower + flat.kthvalue(n // 2 + 1).values) / 2)


def _describe(values: torch.Tensor, name: str) -> str:
    finite = torch.isfinite(values)
    if not finite.any():
        return f"{name} map has no finite values (all NaN/inf)"
    if not (values[finite] > 0).any():
        return f"{name} map is <= 0 wherever finite (median {_median(values[finite]):.4g})"
    return f"{name}: {int((finite & (values > 0)).sum())} pixels finite and > 0"


def _fail(reason: str, method: str, fallback: str, medians: tuple[float, float] = (math.nan, math.nan),
          pixels: int = 0) -> ScaleResult:
    if fallback == "raise":
        raise ScaleError(f"{method} scale: {reason}")
    scale = 1.0 if fallback == "unit" else math.nan
    return ScaleResult(scale, medians[0], medians[1], pixels, method, fallback=f"{reason}; returned scale {scale}")


def recover_scale(relative_depth: ArrayLike, pseudo_metric: ArrayLike | None, method: str = "median",
                  mask: ArrayLike | None = None, min_depth: float = 1e-3, max_depth: float = math.inf, min_pixels: int = 100,
                  median_over: str = "shared", fallback: str = "raise") -> ScaleResult:
    """Scale that maps one relative depth map onto the pseudo-metric map Mp (both depth, same size). See the module docstring.

    relative_depth and pseudo_metric: (H, W), (1, H, W) or (1, 1, H, W), torch or numpy; mask: optional boolean map of the
    same size, True = may be used. Disparity must be converted first (disparity_to_depth).
    """
    _check_choice("method", method, METHODS)
    _check_choice("median_over", median_over, MEDIAN_OVER)
    _check_choice("fallback", fallback, FALLBACKS)
    if method == "none":
        return ScaleResult(1.0, math.nan, math.nan, 0, method)
    if pseudo_metric is None:
        return _fail("no pseudo-metric map (no echo paired with this frame?)", method, fallback)
    rel = _single_image(relative_depth, "relative depth")
    pm = _single_image(pseudo_metric, "pseudo-metric depth").to(rel.device)
    if rel.shape != pm.shape:
        raise ValueError(f"relative depth {tuple(rel.shape)} and pseudo-metric depth {tuple(pm.shape)} differ in size; "
                         f"resize one to the other first")
    rel_valid = torch.isfinite(rel) & (rel > 0)
    pm_valid = torch.isfinite(pm) & (pm > min_depth) & (pm < max_depth)
    if mask is not None:
        user = _single_image(mask, "mask").to(rel.device)
        if user.shape != rel.shape:
            raise ValueError(f"mask {tuple(user.shape)} does not match the depth maps {tuple(rel.shape)}")
        user = user.bool()
        rel_valid, pm_valid = rel_valid & user, pm_valid & user
    if median_over == "shared":
        rel_valid = pm_valid = rel_valid & pm_valid
    pixels = int(min(rel_valid.sum(), pm_valid.sum()))
    if pixels < min_pixels:
        in_range = int((torch.isfinite(pm) & (pm > min_depth) & (pm < max_depth)).sum())
        reasons = [_describe(rel, "relative depth"), _describe(pm, "pseudo-metric depth"),
                   f"pseudo-metric within ({min_depth}, {max_depth}): {in_range}"]
        if mask is not None:
            reasons.append(f"mask selects {int(user.sum())}")
        reason = f"{pixels} usable pixels, need at least {min_pixels} ({'; '.join(reasons)})"
        return _fail(reason, method, fallback, pixels=pixels)
    rel_values, pm_values = rel[rel_valid].double(), pm[pm_valid].double()
    medians = (_median(pm_values), _median(rel_values))
    shift = 0.0
    if method in ("median", "pixelwise"):
        if not medians[1] > 0 or not math.isfinite(medians[1]):
            return _fail(f"relative median is {medians[1]} over {pixels} pixels", method, fallback, medians, pixels)
        if not medians[0] > 0 or not math.isfinite(medians[0]):
            return _fail(f"pseudo-metric median is {medians[0]} over {pixels} pixels", method, fallback, medians, pixels)
        scale = medians[0] / medians[1]
    else:
        rel_std = float(rel_values.std(unbiased=False))
        if not rel_std > 0:
            return _fail(f"relative depth is constant over {pixels} pixels (std 0)", method, fallback, medians, pixels)
        scale = float(pm_values.std(unbiased=False)) / rel_std
        shift = float(pm_values.mean()) - scale * float(rel_values.mean())
        if scale == 0:
            return _fail(f"pseudo-metric depth is constant over {pixels} pixels (std 0)", method, fallback, medians, pixels)
    if not (math.isfinite(scale) and scale > 0 and math.isfinite(shift)):
        return _fail(f"scale {scale} (shift {shift}) is not a finite positive number", method, fallback, medians, pixels)
    return ScaleResult(scale, medians[0], medians[1], pixels, method, shift=shift)


def _per_image(x: ArrayLike | None, name: str) -> list[Any]:
    if x is None:
        return []
    shape = tuple(x.shape)
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[1] != 1):
        raise ValueError(f"{name} must be a batch (B, H, W) or (B, 1, H, W), got shape {shape}")
    return [x[i] for i in range(shape[0])]


def recover_scale_batch(relative_depth: ArrayLike, pseudo_metric: ArrayLike | None, method: str = "median",
                        mask: ArrayLike | None = None, **kwargs: Any) -> list[ScaleResult]:
    """One ScaleResult per image of a batch (B, H, W) or (B, 1, H, W); keyword arguments as recover_scale."""
    rel = _per_image(relative_depth, "relative depth")
    pm = _per_image(pseudo_metric, "pseudo-metric depth") or [None] * len(rel)
    masks = _per_image(mask, "mask") or [None] * len(rel)
    if not len(rel) == len(pm) == len(masks):
        raise ValueError(f"batch sizes differ: relative {len(rel)}, pseudo-metric {len(pm)}, mask {len(masks)}")
    return [recover_scale(r, p, method, m, **kwargs) for r, p, m in zip(rel, pm, masks, strict=True)]


def apply_scale(relative_depth: ArrayLike, result: ScaleResult | list[ScaleResult], min_output: float = 1e-3) -> ArrayLike:
    """metric = scale * relative + shift, clamped below at min_output (Monodepth2's evaluation floor, 1e-3); NaN stays NaN.

    result: one ScaleResult, or a list with one per image of a (B, ...) batch. A result that is not ok (NaN scale after
    fallback="nan" or an expired hold) gives an all-NaN map: check result.ok or result.fallback to count those.
    """
    results = result if isinstance(result, list) else [result]
    rel = torch.as_tensor(relative_depth)
    if isinstance(result, list) and len(results) != rel.shape[0]:
        raise ValueError(f"{len(results)} scale results for a batch of {rel.shape[0]} images")
    view = (-1,) + (1,) * (rel.dim() - 1) if isinstance(result, list) else ()
    dtype = rel.dtype if rel.is_floating_point() else torch.float32
    scale = torch.tensor([r.scale if r.ok else math.nan for r in results], dtype=dtype, device=rel.device).reshape(view)
    shift = torch.tensor([r.shift if r.ok else math.nan for r in results], dtype=dtype, device=rel.device).reshape(view)
    metric = (rel.to(dtype) * scale + shift).clamp(min=min_output)
    return metric.numpy() if isinstance(relative_depth, np.ndarray) else metric


class ScaleTracker:
    """Scale over time for live use: exponential smoothing in log space and a bounded hold.

    update(result, stamp_s) with a fresh ScaleResult: log s <- (1 - alpha) log s + alpha log s_new (alpha = 1: no smoothing;
    the shift of mean-std is smoothed linearly). With None or a result that is not fresh (fallback set, or not ok): the last
    smoothed scale is returned with held=True and held_for = seconds since the last fresh one, for at most hold_s seconds;
    after that a NaN scale with the reason in fallback, and the smoothing restarts from the next fresh estimate.
    counts tallies "fresh", "held" and "none" results.
    """

    def __init__(self, alpha: float = 1.0, hold_s: float = 1.0) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"ScaleTracker alpha must lie in (0, 1], got {alpha}")
        if hold_s < 0:
            raise ValueError(f"ScaleTracker hold_s must be >= 0, got {hold_s}")
        self.alpha, self.hold_s = alpha, hold_s
        self.reset()

    def reset(self) -> None:
        self._scale: float | None = None
        self._shift = 0.0
        self._last: ScaleResult | None = None
        self._last_fresh_stamp: float | None = None
        self._last_stamp: float | None = None
        self.counts = {"fresh": 0, "held": 0, "none": 0}

    def update(self, result: ScaleResult | None, stamp_s: float) -> ScaleResult:
        if self._last_stamp is not None and stamp_s < self._last_stamp:
            raise ValueError(f"ScaleTracker stamps went backwards ({stamp_s} < {self._last_stamp}); "
                             f"call reset() after a time jump")
        self._last_stamp = stamp_s
        if result is not None and result.ok and result.fallback is None:
            if self._scale is None or self.alpha == 1:
                self._scale, self._shift = result.scale, result.shift
            else:
                log_scale = math.log(self._scale)
                self._scale = math.exp(log_scale + self.alpha * (math.log(result.scale) - log_scale))
                self._shift += self.alpha * (result.shift - self._shift)
            self._last, self._last_fresh_stamp = result, stamp_s
            self.counts["fresh"] += 1
            return dataclasses.replace(result, scale=self._scale, shift=self._shift, held=False, held_for=0.0)
        reason = "no estimate" if result is None else (result.fallback or f"scale {result.scale} not usable")
        method = result.method if result is not None else (self._last.method if self._last else "median")
        age = None if self._last_fresh_stamp is None else stamp_s - self._last_fresh_stamp
        if self._last is not None and age <= self.hold_s:
            self.counts["held"] += 1
            return dataclasses.replace(self._last, scale=self._scale, shift=self._shift, fallback=reason,
                                       held=True, held_for=age)
        if age is None:
            reason = f"{reason}; no fresh scale yet"
        else:
            reason = f"{reason}; last fresh scale {age:.3g} s ago, beyond hold_s={self.hold_s}"
            self._scale, self._last = None, None
        self.counts["none"] += 1
        return ScaleResult(math.nan, math.nan, math.nan, 0, method, fallback=reason)
