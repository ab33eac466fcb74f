"""depth_node latency and output rate against the input rate, in sim mode: what the node adds over the bare model.

    ROS environment (as `make test` sets it), then:
    .venv/bin/python benchmarks/node_latency.py                         # config/avs_depth.yaml's models (bundled defaults)
    .venv/bin/python benchmarks/node_latency.py --tiny                  # random tiny AVS-Net pair at 64x128, no checkpoints
    .venv/bin/python benchmarks/node_latency.py --rates 2 5 10 --seconds 10 --device cpu
    .venv/bin/python benchmarks/node_latency.py --tiny --threads 1 4      # Single- vs MultiThreadedExecutor, one run

One process, as `avs-depth-ros bringup --sim` runs it: sim_sensors_node (camera at each --rates value, echoes at 10 Hz),
depth_node (the pipeline injected, so the models load once) and a listener on the camera and the depth.
Figures per input rate: output rate, dropped frames, latency from the image stamp to the depth's arrival, and the node's
share: depth arrival - image arrival (at the same listener) - the pipeline call for that frame, i.e. what the node adds
over the bare forward (decode, pairing, message building, publishing, the depth's transport, and any wait for the model
when the input outruns it). Target: at most 5 ms added at input rates the model keeps up with.
--threads picks the executor (1: SingleThreadedExecutor, as the nodes and bringup spin by default; N: MultiThreaded
with N threads); several values are measured one after the other in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_OVERHEAD_MS = 5.0
ROOT = Path(__file__).resolve().parents[1]


def tiny_checkpoints(folder: Path) -> dict[str, str]:
    import torch

    from avs_depth_core.models.avsnet import AVSNet, AVSNetConfig

    torch.manual_seed(0)
    small = dict(backbone="tiny", image_size=(64, 128), n_bins=16, bin_embedding_dim=32)
    return {"avsnet_checkpoint": str(AVSNet(AVSNetConfig(**small)).save(folder / "avsnet")),
            "relative_checkpoint": str(AVSNet(AVSNetConfig(**small, use_echo=False)).save(folder / "avsnet_rgb"))}


class TimedPipeline:
    """The pipeline, recording each call's duration by image stamp."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.forward_ms: dict[int, float] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, rgb, echo, stamp_ns, **kwargs):
        start = time.perf_counter()
        result = self.inner(rgb, echo, stamp_ns, **kwargs)
        self.forward_ms[stamp_ns] = (time.perf_counter() - start) * 1000.0
        return result


def bare_forward_ms(pipeline: Any, frames: list[Any], iters: int) -> tuple[float, float]:
    """Median ms of the pipeline call (networks + scale + resize + copy to host) and of the networks alone."""
    from avs_depth_core.pipeline import EchoInput

    calls, nets = [], []
    for i in range(iters):
        f = frames[i % len(frames)]
        echo = EchoInput(f.echo, f.sample_rate, f.emission_offset, i)
        start = time.perf_counter()
        pipeline(f.rgb, echo, i + 1)
        calls.append((time.perf_counter() - start) * 1000.0)
        start = time.perf_counter()
        _, relative, _ = pipeline._networks(f.rgb, echo)
        relative.cpu()
        nets.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(calls), statistics.median(nets)


def run_rate(pipeline: TimedPipeline, rate: float, seconds: float, size: tuple[int, int], threads: int) -> dict[str, Any]:
    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from avs_depth_core.data import topics
    from avs_depth_core.data.messages import stamp_to_ns
    from avs_depth_ros.depth_node import DepthNode
    from avs_depth_ros.runner import make_executor
    from avs_depth_ros.sim_sensors_node import SimSensorsNode

    context = rclpy.Context()
    rclpy.init(context=context)
    pipeline.forward_ms.clear()
    depth_node = DepthNode(context=context, pipeline=pipeline, parameter_overrides=[
        Parameter("warmup_iterations", value=0), Parameter("diagnostics_period_s", value=60.0)])
    sim = SimSensorsNode(context=context, parameter_overrides=[
        Parameter("camera_rate", value=float(rate)), Parameter("height", value=size[0]),
        Parameter("width", value=size[1]), Parameter("loop_frames", value=20)])
    listener = rclpy.create_node("latency_listener", context=context)
    image_rx: dict[int, int] = {}
    depth_rx: dict[int, int] = {}
    listener.create_subscription(Image, topics.relative(topics.IMAGE),
                                 lambda m: image_rx.__setitem__(stamp_to_ns(m.header.stamp), time.time_ns()),
                                 QoSProfile(depth=20, reliability=ReliabilityPolicy.BEST_EFFORT))
    listener.create_subscription(Image, topics.relative(topics.METRIC_DEPTH),
                                 lambda m: depth_rx.__setitem__(stamp_to_ns(m.header.stamp), time.time_ns()), 10)
    sim.frames.wait_for(19, 120.0)  # all 20 frames rendered before timing starts
    executor = make_executor(threads, context)
    for node in (depth_node, sim, listener):
        executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    time.sleep(2.0)  # discovery and the first echo
    start_ns = time.time_ns()
    images_before, out_before = depth_node.counters.images_in, len(depth_rx)
    dropped_before = depth_node.counters.dropped_stale
    time.sleep(seconds)
    elapsed = (time.time_ns() - start_ns) / 1e9
    images = depth_node.counters.images_in - images_before
    outputs = [s for s in depth_rx if s >= start_ns - 1_000_000_000]
    counters = depth_node.counters
    executor.shutdown()
    thread.join(timeout=10.0)
    for node in (depth_node, sim, listener):
        node.destroy_node()
    rclpy.try_shutdown(context=context)

    latency = [(depth_rx[s] - s) / 1e6 for s in outputs]
    added = [(depth_rx[s] - image_rx[s]) / 1e6 - pipeline.forward_ms[s] for s in outputs
             if s in image_rx and s in pipeline.forward_ms]
    return {
        "executor": ("single" if threads == 1 else f"multi x{threads}"), "rate": rate, "in_hz": images / elapsed,
        "out_hz": (len(depth_rx) - out_before) / elapsed,
        "dropped": counters.dropped_stale - dropped_before, "images": images,
        "latency_p50": _pct(latency, 50), "latency_p95": _pct(latency, 95),
        "forward_p50": _pct([pipeline.forward_ms[s] for s in outputs if s in pipeline.forward_ms], 50),
        "added_p50": _pct(added, 50), "added_p90": _pct(added, 90), "node_ms": depth_node._node_ms.mean,
    }


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params-file", default=str(ROOT / "config" / "avs_depth.yaml"))
    parser.add_argument("--tiny", action="store_true", help="random tiny AVS-Net pair (64x128) instead of checkpoints")
    parser.add_argument("--device", default=None, help="override depth_node's device")
    parser.add_argument("--torch-threads", type=int, default=None, help="override depth_node's torch_threads")
    parser.add_argument("--rates", type=float, nargs="+", default=[2.0, 5.0, 10.0, 20.0], help="camera rates, Hz")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per rate")
    parser.add_argument("--size", default="256x512", help="camera image HxW (default 256x512)")
    parser.add_argument("--iters", type=int, default=10, help="bare forward repetitions")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="executor threads per run (1 = single)")
    args = parser.parse_args(argv)

    import torch
    import yaml

    from avs_depth_core.pipeline import DepthPipeline, PipelineSettings
    from avs_depth_core.sim.world import SimWorld

    h, w = (int(v) for v in args.size.lower().split("x"))
    params = yaml.safe_load(Path(args.params_file).read_text())["depth_node"]["ros__parameters"]
    workdir = tempfile.TemporaryDirectory()
    if args.tiny:
        params.update(tiny_checkpoints(Path(workdir.name)))
    if args.device:
        params["device"] = args.device
    if args.torch_threads is not None:
        params["torch_threads"] = args.torch_threads
    if params.get("torch_threads"):
        torch.set_num_threads(params["torch_threads"])
    pipeline = TimedPipeline(DepthPipeline.from_settings(PipelineSettings.from_params(params)))
    cfg = pipeline.cfg
    models = "random tiny AVS-Net pair" if args.tiny else f"{params['avsnet_checkpoint'] or 'bundled AVS-Net'} + " \
        f"{params['relative_model']} {params['relative_checkpoint'] or '(bundled)'}"
    print(f"models: {models}; input {cfg.image_size[0]}x{cfg.image_size[1]}; device {pipeline.device}; "
          f"torch threads {torch.get_num_threads()}; camera {h}x{w}")
    world = SimWorld("bv2", 0, h, w)
    sequence = world.sequence(0)
    frames = [sequence.frame(i) for i in range(5)]
    pipeline.warmup(2)
    call_ms, net_ms = bare_forward_ms(pipeline.inner, frames, args.iters)
    pipeline.tracker.reset()
    print(f"bare pipeline call {call_ms:.1f} ms (networks alone {net_ms:.1f} ms): at most {1000 / call_ms:.1f} Hz")

    rows = [run_rate(pipeline, rate, args.seconds, (h, w), threads) for threads in args.threads for rate in args.rates]
    print(f"\n{'executor':>10} {'in Hz':>7} {'out Hz':>7} {'dropped':>8} {'latency p50':>12} {'p95':>7} "
          f"{'forward p50':>12} {'added p50':>10} {'p90':>7} {'node ms':>8}")
    for r in rows:
        print(f"{r['executor']:>10} {r['in_hz']:7.2f} {r['out_hz']:7.2f} {r['dropped']:8d} "
              f"{r['latency_p50']:10.1f}ms {r['latency_p95']:5.1f}ms {r['forward_p50']:10.1f}ms {r['added_p50']:8.1f}ms "
              f"{r['added_p90']:5.1f}ms {r['node_ms']:6.2f}ms")
    print("\nlatency: image stamp -> depth received; added: depth received - image received - pipeline call (the node's "
          "share, waits included); node ms: the node's own work per frame, waits excluded")
    kept_up = [r for r in rows if r["dropped"] == 0 and r["out_hz"] > 0]
    if kept_up:
        worst = max(r["added_p50"] for r in kept_up)
        verdict = "meets" if worst <= TARGET_OVERHEAD_MS else "misses"
        print(f"target: node adds <= {TARGET_OVERHEAD_MS:g} ms where the model keeps up: {worst:.1f} ms ({verdict})")
    workdir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
