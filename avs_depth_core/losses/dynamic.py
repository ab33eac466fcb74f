"""The dynamic-region pseudo-label loss of Nguyen et al. ("Mining Supervision for Dynamic Regions in Self-Supervised
Monocular Depth Estimation", CVPR 2024; their loss.py depth_scale_invariant_loss), used by the final depth network's
training next to the self-supervised losses with weight 0.1 (their dynamic_depth_loss_weight).

Per image: the label is brought to the prediction's scale by the median ratio median(pred / label); pixels whose rescaled
label lies in [min(pred), the 90th percentile of pred] are kept; the ratio is re-estimated on them; then the L1 between the
prediction and the rescaled label over the dynamic-object mask and the kept pixels, divided by their count. An image
without dynamic pixels contributes 0 (their code feeds such frames the prediction itself as a dummy label).
"""

from __future__ import annotations

import torch

DYNAMIC_DEPTH_LOSS_WEIGHT = 0.1  # Nguyen et al., dynamic_depth_loss_weight
LABEL_PERCENTILE = 90.0          # the kept labels' upper bound, a percentile of the prediction


LABEL_RANGES = ("prediction", "none")


def dynamic_depth_loss(pred: torch.Tensor, label: torch.Tensor, mask: torch.Tensor,
                       percentile: float = LABEL_PERCENTILE, normalise: bool = False,
                       label_range: str = "prediction") -> torch.Tensor:
    """pred, label: (B, 1, H, W) positive depth (label <= 0 where it has none); mask: (B, 1, H, W) bool, the dynamic
    objects. -> scalar: the mean over the batch's images of the per-image masked, scale-invariant L1. normalise (not
    theirs): each image's L1 divided by its median predicted depth, so the term does not depend on the DepthNet's units
    (theirs where that median is 1 unit); that median and the final ratio then keep their gradient, which makes the
    term's gradient scale-invariant too (zero along p -> a p). With both detached, as in the raw L1, the gradient has a
    component along the depth's global scale: it fits the objects by rescaling the whole map (here, objects predicted too
    far, it pulls every depth nearer), and a DepthNet whose scale nothing else fixes drifts (measured: on fresh batches
    the term rose after about 20 steps, even with the photometric loss off, with Adam or SGD).
    label_range: "prediction" keeps only labels inside [min(pred), percentile of pred] (theirs); "none" (not theirs)
    keeps every labelled pixel with the first ratio: their range drops exactly the objects the prediction misplaces most
    (one predicted beyond its 90th percentile, or nearer than anything else), and a DepthNet can lower the term by
    pushing more of them out of it."""
    if label_range not in LABEL_RANGES:
        raise ValueError(f"dynamic_depth_loss: label_range must be one of {list(LABEL_RANGES)}, got {label_range!r}")
    if pred.shape != label.shape or pred.shape != mask.shape:
        raise ValueError(f"dynamic_depth_loss: pred, label and mask must have one shape, got {tuple(pred.shape)}, "
                         f"{tuple(label.shape)}, {tuple(mask.shape)}")
    losses = []
    for p, lab, m in zip(pred, label, mask.bool(), strict=True):
        has = m & (lab > 0)
        if not bool(has.any()):
            losses.append(p.sum() * 0.0)  # keeps the graph; no supervision from this image
            continue
        ratio = torch.median(p.detach()[lab > 0] / lab[lab > 0])
        scaled = lab * ratio
        flat = p.detach().flatten()
        if label_range == "none":
            keep = lab > 0
        else:
            keep = (lab > 0) & (scaled >= flat.min()) & (scaled <= torch.quantile(flat, percentile / 100))
            if bool(keep.any()):
                ratio = torch.median(p.detach()[keep] / lab[keep])
        used = has & keep
        if not bool(used.any()):
            losses.append(p.sum() * 0.0)
            continue
        if normalise:  # the same ratio, now with its gradient (see the docstring)
            ratio = torch.median(p[keep] / lab[keep])
        l1 = (p[used] - lab[used] * ratio).abs().sum() / used.sum()
        losses.append(l1 / p.flatten().median().clamp_min(1e-12) if normalise else l1)
    return torch.stack(losses).mean()
