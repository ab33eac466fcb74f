"""The package against outputs of ZoeDepth's own code (fixtures/zoedepth.*): the metric-bins head, SILog and the metrics."""

from __future__ import annotations

import pytest
import torch

from avs_depth_core.losses.silog import SILogLoss
from avs_depth_core.metrics import METRIC_NAMES, compute_depth_metrics, per_image_depth_metrics
from avs_depth_core.models.metric_bins import MetricBinsHead

LEVELS = ("r4", "r3", "r2", "r1")
DEPTH_TOLERANCE_M = 1e-4  # the default head reproduces ZoeDepth's depth within 1e-4 m
ZOEDEPTH_COLUMNS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "log_10")  # = METRIC_NAMES[:8]


def run_head(golden, case: str, dtype: torch.dtype = torch.float32, **options) -> dict[str, torch.Tensor]:
    """MetricBinsHead with the case's ZoeDepth kwargs and weights (same parameter names) on the fixture's features."""
    head = MetricBinsHead(golden["head/in/bottleneck"].shape[1], [golden[f"head/in/{k}"].shape[1] for k in LEVELS],
                          golden["head/in/out_conv"].shape[1], **golden.case(f"head/{case}")["kwargs"], **options)
    head.load_state_dict(golden.weights(f"head/{case}"), strict=True)
    inputs = [golden[f"head/in/{k}"].to(dtype) for k in ("out_conv", "bottleneck", *LEVELS, "rel_depth")]
    with torch.no_grad():
        return head.to(dtype).eval()(inputs[0], inputs[1], inputs[2:6], inputs[6])


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


# In float32 the outputs depend on the reduction order (threads, SIMD, the CPU's kernels), and ZoeDepth's own float32 depth
# is up to 2.1e-4 m from its float64 depth in the normed case, where a bin distribution is sharp (1/t up to 47): on a CPU
# other than the one that wrote the fixtures the package's float32 depth was 1.1-1.5e-4 m from ZoeDepth's float32 and
# closer than that to ZoeDepth's float64. So the float32 check allows the 1e-4 m or ZoeDepth's own float32
# rounding, whichever is larger; the float64 test below is the exactness check for every case (0 difference).
@pytest.mark.parametrize("case, tolerance", [("normed", DEPTH_TOLERANCE_M), ("softplus", DEPTH_TOLERANCE_M), ("hybrid1", 1e-3),
                                             ("hybrid2", 1e-3), ("normed_exp_sum_inverse_midas", 1e-3)])
def test_default_head_reproduces_zoedepth(zoedepth_golden, case, tolerance):
    out = run_head(zoedepth_golden, case)  # default options: attractors as ZoeDepth's code runs them
    upstream, upstream64 = zoedepth_golden[f"head/{case}/metric_depth"], zoedepth_golden[f"head/{case}/metric_depth_float64"]
    tolerance = max(tolerance, max_abs(upstream.double(), upstream64.double()))
    assert max_abs(out["metric_depth"], upstream) <= tolerance
    if f"head/{case}/bin_centers" in zoedepth_golden.tensors:  # at the depth's resolution, as ZoeDepth returns them
        assert max_abs(out["bin_centers"], zoedepth_golden[f"head/{case}/bin_centers"]) <= tolerance
    if f"head/{case}/probs" in zoedepth_golden.tensors:
        # probabilities of the sharp distributions carry the same float32 rounding, amplified by 1/t: 2.2e-4 on another CPU
        assert max_abs(out["probs"], zoedepth_golden[f"head/{case}/probs"]) <= 1e-3


@pytest.mark.parametrize("case", ["normed", "softplus", "hybrid1", "hybrid2", "normed_exp_sum_inverse_midas"])
def test_head_is_zoedepths_arithmetic_in_float64(zoedepth_golden, case):
    # ZoeDepth run in float64 (default dtype float64 too): the same arithmetic gives the same depth to 1e-9 m (in fact 0)
    out = run_head(zoedepth_golden, case, torch.float64)["metric_depth"]
    assert max_abs(out, zoedepth_golden[f"head/{case}/metric_depth_float64"]) <= 1e-9


def test_golden_head_cases_are_not_degenerate(zoedepth_golden):
    # the comparison means something only if depths span the range and some bin distributions are sharp
    depth, probs = zoedepth_golden["head/normed/metric_depth"], zoedepth_golden["head/normed/probs"]
    assert depth.min() < 1.0 and depth.max() > 20.0
    assert (probs.max(1).values > 0.2).float().mean() > 0.1


def test_apply_attractor_alpha_is_upstream_with_alpha_passed_on(zoedepth_golden):
    # the deviation option equals ZoeDepth's layers patched to pass their alpha (1000) and gamma to the attractor function
    applied = run_head(zoedepth_golden, "normed_alpha_applied", apply_attractor_alpha=True)["metric_depth"]
    assert max_abs(applied, zoedepth_golden["head/normed_alpha_applied/metric_depth"]) <= DEPTH_TOLERANCE_M
    applied = run_head(zoedepth_golden, "normed_alpha_applied", torch.float64, apply_attractor_alpha=True)["metric_depth"]
    assert max_abs(applied, zoedepth_golden["head/normed_alpha_applied/metric_depth_float64"]) <= 1e-9
    # ... and differs from the released behaviour by far more than the tolerance: the default does not apply alpha
    assert (zoedepth_golden["head/normed_alpha_applied/metric_depth"] - zoedepth_golden["head/normed/metric_depth"]
            ).abs().mean() > 0.1


def test_silog_matches_zoedepth(zoedepth_golden):
    g, loss = zoedepth_golden, SILogLoss(alpha=10.0, lam=0.85)
    pred, target, full = g["silog/in/pred"], g["silog/in/target"], g["silog/in/target_all_valid"]
    # the resize to the target (bilinear, align_corners=True) and the pooled unbiased variance as ZoeDepth's
    torch.testing.assert_close(loss(pred, target, mask=target > 0).reshape(1), g["silog/masked"], rtol=1e-5, atol=0)
    torch.testing.assert_close(loss(pred, full).reshape(1), g["silog/all_valid_no_mask"], rtol=1e-5, atol=0)
    # decision (kept): without a mask the package uses target > 0; ZoeDepth takes every pixel, log(0 + 1e-7) included
    torch.testing.assert_close(loss(pred, target).reshape(1), g["silog/masked"], rtol=1e-5, atol=0)
    assert g["silog/zeros_no_mask"] > 5 * g["silog/masked"]


def test_metrics_match_zoedepth_per_image_and_pooled(zoedepth_golden):
    g = zoedepth_golden
    assert METRIC_NAMES[:8] == ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3", "log10")
    assert tuple(g.case("metrics")["columns"][:8]) == ZOEDEPTH_COLUMNS
    settings = g.case("metrics")["settings"]
    lo, hi = settings["min_depth_eval"], settings["max_depth_eval"]
    ours, has_valid = per_image_depth_metrics(g["metrics/in/pred"], g["metrics/in/gt"], lo, hi)
    assert has_valid.all()
    torch.testing.assert_close(ours[:, :8], g["metrics/same_size"][:, :8], rtol=1e-5, atol=1e-7)
    pooled, skipped = compute_depth_metrics(g["metrics/in/pred"], g["metrics/in/gt"], lo, hi, pooled=True)
    assert skipped == 0
    torch.testing.assert_close(torch.tensor([[pooled[k] for k in METRIC_NAMES[:8]]], dtype=torch.float64),
                               g["metrics/pooled"][:, :8], rtol=1e-5, atol=1e-7)


def test_metrics_resize_with_pixel_centres(zoedepth_golden):
    # decision (Monodepth2's convention): a prediction is resized to the ground truth with align_corners=False, the inverse
    # of the data path's image resize; ZoeDepth's compute_metrics uses align_corners=True (as its own input resize does)
    g = zoedepth_golden
    settings = g.case("metrics")["settings"]
    ours, _ = per_image_depth_metrics(g["metrics/in/pred_small"], g["metrics/in/gt"], settings["min_depth_eval"],
                                      settings["max_depth_eval"])
    torch.testing.assert_close(ours[:, :8], g["metrics/resized_align_corners_false"][:, :8], rtol=1e-5, atol=1e-7)
    assert (ours[:, 0] - g["metrics/resized_align_corners_true"][:, 0]).abs().max() > 1e-3


def test_fixture_records_the_upstream_commit(zoedepth_golden, monodepth2_golden):
    for golden, repository in ((zoedepth_golden, "isl-org/ZoeDepth"), (monodepth2_golden, "nianticlabs/monodepth2")):
        assert golden.meta["repository"].endswith(repository)
        assert len(golden.meta["commit"]) == 40 and int(golden.meta["commit"], 16) >= 0
        assert golden.meta["modified_py_files"] == []
        assert set(golden.meta["tensors"]) == set(golden.tensors)
