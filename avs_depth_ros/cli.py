"""`avs-depth-ros`: the ROS 2 runtime for machines without ros2cli.

  bringup [--sim]     the nodes of launch/avs_depth.launch.py with the same YAML, in one process (SingleThreadedExecutor);
                      prints rates and latency, writes a few depth figures (`make demo` runs `bringup --sim`)
  record --out DIR    the sensor topics into a rosbag2 (mcap or sqlite3, written with rosbags), for `avs-depth train`
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avs_depth_core.data import topics
from avs_depth_ros import audio_check

HERE = Path(__file__).resolve().parent
SOURCE_CONFIG = HERE.parent / "config" / "avs_depth.yaml"
REPORT_PERIOD_S = 5.0


def default_params_file() -> Path:
    """config/avs_depth.yaml of a source checkout, else the one installed in the package's share directory."""
    if SOURCE_CONFIG.is_file():
        return SOURCE_CONFIG
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("avs_depth_ros")) / "config" / "avs_depth.yaml"
    except (ImportError, LookupError, ValueError):
        installed = None
    if installed is None or not installed.is_file():
        raise FileNotFoundError(f"no params file: neither {SOURCE_CONFIG} nor an installed avs_depth_ros share/config "
                                f"exists; pass --params-file")
    return installed


def ros_args(params_file: Path, log_level: str) -> list[str]:
    """The arguments launch passes to each node: the same params file, applied by node name."""
    return ["--ros-args", "--params-file", str(params_file), "--log-level", log_level]


def stop_on_sigterm() -> None:
    """SIGTERM (a service manager, `kill`) ends the run like Ctrl-C: summary printed, bag closed."""
    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


# --------------------------------------------------------------------------------------------------------- bringup
@dataclass
class Snapshot:
    stamp_ns: int
    rgb: np.ndarray
    depth: np.ndarray
    ground_truth: np.ndarray | None


class Monitor:
    """An in-process subscriber to what a user would watch: counts rates, checks headers, keeps a few snapshots."""

    def __init__(self, node: Any, snapshots: int, duration_s: float | None) -> None:
        from avs_depth_msgs.msg import EchoStamped, ScaleEstimate
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from avs_depth_ros.stats import RateMeter, Summary

        self.node = node
        best_effort = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.rates = {name: RateMeter() for name in ("image", "echo", "depth")}
        self.latency_ms = Summary()
        self.total_latency_ms = Summary()
        self.images: dict[int, Any] = {}  # the newest 50 camera images, for the snapshots
        self.image_frames: dict[int, str] = {}  # stamp -> frame_id of the newest 600, for the header check (slow models)
        self.ground_truth: dict[int, Any] = {}
        self.depth_frames = 0
        self.first_image_ns: int | None = None
        self.headers_checked = 0  # depth frames stamped at or after the first camera image this monitor saw
        self.headers_matched = 0
        self.finite_fraction = Summary()
        self.abs_rel = Summary()
        self.scale_log_error = Summary()  # |log(median(depth) / median(truth))| per scored frame (metrics.py)
        self.scale: Any = None
        self.snapshots: list[Snapshot] = []
        self._max_snapshots = snapshots
        # Spread over the run, at most 5 s apart, so a run stopped early still leaves some.
        self._snapshot_every_ns = int(min(5.0, (duration_s or 20.0) / max(snapshots, 1)) * 1e9)
        self._next_snapshot_ns = 0
        self._next_metric_ns = 0
        self._lock = threading.Lock()
        node.create_subscription(Image, topics.relative(topics.IMAGE), self._on_image, best_effort)
        node.create_subscription(Image, topics.relative(topics.DEPTH), self._on_ground_truth, best_effort)
        node.create_subscription(EchoStamped, topics.relative(topics.ECHO), lambda _m: self._tick("echo"), best_effort)
        node.create_subscription(Image, topics.relative(topics.METRIC_DEPTH), self._on_depth, reliable)
        node.create_subscription(ScaleEstimate, topics.relative(topics.SCALE), self._on_scale, reliable)

    def _now(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def _tick(self, name: str) -> None:
        self.rates[name].tick(self._now())

    def _on_image(self, msg: Any) -> None:
        from avs_depth_core.data.messages import stamp_to_ns

        self._tick("image")
        with self._lock:
            stamp = stamp_to_ns(msg.header.stamp)
            self.first_image_ns = stamp if self.first_image_ns is None else min(self.first_image_ns, stamp)
            self.images[stamp] = msg
            self.image_frames[stamp] = msg.header.frame_id
            while len(self.images) > 50:
                del self.images[min(self.images)]
            while len(self.image_frames) > 600:
                del self.image_frames[min(self.image_frames)]

    def _on_ground_truth(self, msg: Any) -> None:
        from avs_depth_core.data.messages import stamp_to_ns

        with self._lock:
            self.ground_truth[stamp_to_ns(msg.header.stamp)] = msg
            while len(self.ground_truth) > 50:
                del self.ground_truth[min(self.ground_truth)]

    def _on_scale(self, msg: Any) -> None:
        self.scale = msg

    def _on_depth(self, msg: Any) -> None:
        from avs_depth_core.data.messages import image_to_depth, image_to_rgb, stamp_to_ns

        now = self._now()
        self._tick("depth")
        self.depth_frames += 1
        stamp = stamp_to_ns(msg.header.stamp)
        self.latency_ms.add((now - stamp) / 1e6)
        self.total_latency_ms.add((now - stamp) / 1e6)
        if msg.encoding != "32FC1":
            self.node.get_logger().error(f"depth arrived as {msg.encoding}, expected 32FC1")
            return
        depth = image_to_depth(msg)
        self.finite_fraction.add(float(np.isfinite(depth).mean()))
        with self._lock:
            image = self.images.get(stamp)
            truth = self.ground_truth.get(stamp)
            frame_id = self.image_frames.get(stamp)
            checkable = self.first_image_ns is not None and stamp >= self.first_image_ns
        self.headers_checked += checkable
        if checkable and frame_id is not None and frame_id == msg.header.frame_id:
            self.headers_matched += 1
        truth_m = image_to_depth(truth) if truth is not None else None
        if truth_m is not None and np.isfinite(depth).all() and now >= self._next_metric_ns:
            self._next_metric_ns = now + 500_000_000  # twice a second: the monitor must not slow what it watches
            scored = score_depth(depth, truth_m)
            if scored is not None:
                self.abs_rel.add(scored["abs_rel"])
                self.scale_log_error.add(scored["scale_log_error"])
        if image is not None and len(self.snapshots) < self._max_snapshots and now >= self._next_snapshot_ns:
            self.snapshots.append(Snapshot(stamp, image_to_rgb(image), depth, truth_m))
            self._next_snapshot_ns = now + self._snapshot_every_ns

    def report(self) -> str:
        now = self._now()
        rates = ", ".join(f"{name} {meter.rate(now):.1f} Hz" for name, meter in self.rates.items())
        scale = self.scale
        scale_text = "scale: none yet" if scale is None else (
            f"scale {scale.scale:.3g}{' (held)' if scale.held else ''}, echo age {scale.echo_age_s:.3f} s")
        text = (f"{rates}; latency from image stamp {self.latency_ms.mean:.0f} ms (max {self.latency_ms.max:.0f}); "
                f"{scale_text}")
        self.latency_ms.reset()
        return text


def write_figures(snapshots: list[Snapshot], folder: Path, max_depth: float | None = None) -> list[Path]:
    """One PNG per snapshot in `folder`, all or none (avs_depth_core.files.staged_outputs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avs_depth_core.files import staged_outputs

    paths = []
    with staged_outputs(folder, "--figures") as staging:
        for i, snap in enumerate(snapshots):
            panels = 3 if snap.ground_truth is not None else 2
            fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.2), constrained_layout=True)
            finite = snap.depth[np.isfinite(snap.depth)]
            vmax = max_depth or (float(np.percentile(finite, 99)) if finite.size else 1.0)
            axes[0].imshow(snap.rgb)
            axes[0].set_title(f"camera, stamp {snap.stamp_ns / 1e9:.3f}")
            im = axes[1].imshow(snap.depth, cmap="magma_r", vmin=0.0, vmax=vmax)
            axes[1].set_title(f"{topics.METRIC_DEPTH} (m)")
            fig.colorbar(im, ax=axes[1], shrink=0.8)
            if snap.ground_truth is not None:
                im = axes[2].imshow(snap.ground_truth, cmap="magma_r", vmin=0.0, vmax=vmax)
                axes[2].set_title("ground truth (m)")
                fig.colorbar(im, ax=axes[2], shrink=0.8)
            for ax in axes:
                ax.axis("off")
            name = f"depth_{i:02d}.png"
            fig.savefig(staging / name, dpi=90)
            plt.close(fig)
            paths.append(folder / name)
    return paths


def check_bringup_inputs(args: argparse.Namespace) -> Path:
    """Everything bringup is handed, checked before anything starts: the params file (it exists and parses as a
    `<node>: ros__parameters:` YAML), the device, the counts and the figures folder (writable, room for the PNGs).
    Returns the params file."""
    from avs_depth_core import files
    from avs_depth_core.config import read_yaml_file
    from avs_depth_core.device import resolve_device

    if args.duration is not None and not args.duration > 0:
        raise ValueError(f"--duration must be positive, got {args.duration}")
    if args.figure_count < 0 or (args.threads is not None and args.threads < 1):
        raise ValueError(f"--figure-count must be >= 0 and --threads >= 1, got {args.figure_count} and {args.threads}")
    params_file = Path(args.params_file) if args.params_file else default_params_file()
    if not params_file.is_file():
        raise FileNotFoundError(f"--params-file {params_file}: params file not found")
    params = read_yaml_file(params_file, "params file")
    if not isinstance(params, dict) or not all(isinstance(v, dict) and isinstance(v.get("ros__parameters"), dict)
                                               for v in params.values()):
        raise ValueError(f"--params-file {params_file}: expected '<node name>: ros__parameters: {{...}}' sections")
    if args.device:
        resolve_device(args.device)
    if args.figures:
        files.check_output(Path(args.figures), args.figure_count * files.FIGURE_BYTES, "--figures", kind="folder")
    return params_file


def start_nodes(context: Any, sim: bool, depth_overrides: dict[str, Any], figure_count: int, duration_s: float | None
                ) -> tuple[list[Any], Monitor]:
    """depth_node (its parameters from the params file, then depth_overrides), the sensors (sim_sensors_node, or echo_node
    with a camera driver elsewhere) and the monitor; depth_node first, so its models load and warm up before the sensors
    start publishing."""
    import rclpy
    from rclpy.parameter import Parameter

    from avs_depth_ros.depth_node import DepthNode

    nodes: list[Any] = []
    try:
        overrides = [Parameter(name, value=value) for name, value in depth_overrides.items()]
        nodes.append(DepthNode(context=context, parameter_overrides=overrides))
        if sim:
            from avs_depth_ros.sim_sensors_node import SimSensorsNode

            nodes.append(SimSensorsNode(context=context))
        else:
            from avs_depth_ros.echo_node import EchoNode

            nodes.append(EchoNode(context=context))
        monitor_node = rclpy.create_node("bringup_monitor", context=context)
        nodes.append(monitor_node)
        return nodes, Monitor(monitor_node, figure_count, duration_s)
    except BaseException:
        for node in nodes:
            node.destroy_node()
        raise


def spin_and_report(executor: Any, monitor: Monitor, duration_s: float | None) -> tuple[float, list[BaseException]]:
    """Spin `executor` in a thread for `duration_s` (None: until Ctrl-C or shutdown), printing the monitor's report every
    REPORT_PERIOD_S; returns the seconds run and what the executor raised."""
    from rclpy.executors import ExternalShutdownException

    failure: list[BaseException] = []

    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass
        except BaseException as err:  # reported by the main thread
            failure.append(err)

    start = time.monotonic()
    next_report = start + REPORT_PERIOD_S
    spinner = threading.Thread(target=spin, name="executor", daemon=True)
    spinner.start()
    try:
        while spinner.is_alive() and not (duration_s and time.monotonic() - start >= duration_s):
            time.sleep(0.1)
            if time.monotonic() >= next_report:
                print(f"[{time.monotonic() - start:5.1f} s] {monitor.report()}", flush=True)
                next_report += REPORT_PERIOD_S
    except KeyboardInterrupt:
        pass
    finally:
        executor.shutdown()
        spinner.join(timeout=10.0)
    return time.monotonic() - start, failure


# depth_node parameters bringup can override on the command line: (name, type, help)
DEPTH_OVERRIDES = (("device", str, "auto, cpu, cuda, cuda:N", None), ("backend", str, "", ("torch", "onnxruntime")),
                   ("avsnet_checkpoint", str, "AVS-Net checkpoint, or an exported .onnx with --backend onnxruntime", None),
                   ("relative_model", str, "", ("avsnet_rgb", "monodepth2", "torchscript")),
                   ("relative_checkpoint", str, "checkpoint of the relative model", None),
                   ("torch_threads", int, "intra-op threads of torch and ONNX Runtime", None))


def depth_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name, *_ in DEPTH_OVERRIDES if getattr(args, name) is not None}


def run_bringup(args: argparse.Namespace) -> int:
    import rclpy

    from avs_depth_ros.runner import CONFIG_ERRORS, make_executor

    params_file = check_bringup_inputs(args)
    context = rclpy.Context()
    rclpy.init(args=ros_args(params_file, args.log_level), context=context)
    stop_on_sigterm()
    log = rclpy.logging.get_logger("bringup")
    try:
        nodes, monitor = start_nodes(context, args.sim, depth_overrides(args), args.figure_count if args.figures else 0,
                                     args.duration)
    except CONFIG_ERRORS as err:
        log.fatal(str(err))
        rclpy.try_shutdown(context=context)
        return 1
    executor = make_executor(args.threads or 1, context)
    for node in nodes:
        executor.add_node(node)
    print(f"bringup{' --sim' if args.sim else ''}: params {params_file}; "
          f"{'running for ' + format(args.duration, 'g') + ' s' if args.duration else 'Ctrl-C to stop'}", flush=True)
    try:
        elapsed, failure = spin_and_report(executor, monitor, args.duration)
        summary = summarise(monitor, nodes[0], elapsed)
    finally:
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
    status = 0
    if failure:
        if not isinstance(failure[0], CONFIG_ERRORS):
            raise failure[0]
        log.fatal(str(failure[0]))
        status = 1
    if any(getattr(node, "error", None) is not None for node in nodes):
        status = 1  # a node's own thread (inference, sensor driver) stopped it; its fatal line is in the log above
    print(summary, flush=True)
    if args.figures and monitor.snapshots:
        paths = write_figures(monitor.snapshots, Path(args.figures))
        print(f"wrote {len(paths)} figures to {args.figures}/ ({', '.join(p.name for p in paths)})", flush=True)
    if monitor.depth_frames == 0:
        print("bringup: error: no depth image was published", file=sys.stderr)
        return status or 1
    return status


def score_depth(depth: np.ndarray, truth: np.ndarray) -> dict[str, float] | None:
    """AbsRel and scale_log_error (|log(median(depth) / median(truth))|, metrics.py) of one published depth image
    against the simulator's ground truth; None when the truth has no valid pixel."""
    import torch

    from avs_depth_core.metrics import METRIC_NAMES, per_image_depth_metrics

    metrics, valid = per_image_depth_metrics(torch.from_numpy(depth)[None], torch.from_numpy(truth)[None], 1e-3, math.inf)
    if not bool(valid[0]):
        return None
    return {name: float(metrics[0, METRIC_NAMES.index(name)]) for name in ("abs_rel", "scale_log_error")}


def summarise(monitor: Monitor, depth_node: Any, elapsed_s: float) -> str:
    lines = [f"summary after {elapsed_s:.1f} s: {monitor.depth_frames} depth images "
             f"({monitor.depth_frames / max(elapsed_s, 1e-9):.2f} Hz over the whole run, start-up included), "
             f"{monitor.headers_matched} of the {monitor.headers_checked} stamped after the monitor's first camera image "
             f"with the header of a published camera image"]
    if monitor.depth_frames:
        lines.append(f"  latency from image stamp: mean {monitor.total_latency_ms.mean:.0f} ms, max "
                     f"{monitor.total_latency_ms.max:.0f} ms; finite pixels {100 * monitor.finite_fraction.mean:.1f}%")
    if monitor.abs_rel.n:
        lines.append(f"  AbsRel against the simulator's ground truth: {monitor.abs_rel.mean:.3f}, scale log error "
                     f"|log(median(depth) / median(truth))| {monitor.scale_log_error.mean:.3f}, over {monitor.abs_rel.n} frames")
    if depth_node is not None:
        c = depth_node.counters
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(c.rejected.items())) or "none"
        lines.append(f"  depth_node: {c.images_in} images in, {c.frames_out} out, {c.dropped_stale} dropped as stale, "
                     f"{c.echoes_in} echoes in; rejected: {rejected}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- record
class Recorder:
    """Subscribes to the sensor topics (serialized, so nothing is decoded twice) and writes them with BagWriter."""

    def __init__(self, node: Any, writer: Any, topic_types: dict[str, str]) -> None:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        self.node = node
        self.writer = writer
        self.received: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.write_error: Exception | None = None  # a full or read-only disk ends the recording
        self._lock = threading.Lock()
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
        for topic, msgtype in topic_types.items():
            resolved = node.resolve_topic_name(topic.lstrip("/"))
            node.create_subscription(message_class(msgtype), topic.lstrip("/"),
                                     lambda raw, t=resolved, m=msgtype: self._on_message(t, m, raw), qos, raw=True)

    def _on_message(self, topic: str, msgtype: str, raw: bytes) -> None:
        from avs_depth_core.data.bag import typestore
        from avs_depth_core.files import OutputError

        now = self.node.get_clock().now().nanoseconds
        with self._lock:
            self.received[topic] = self.received.get(topic, 0) + 1
            try:
                self.writer.write(topic, typestore().deserialize_cdr(raw, msgtype), msgtype, record_ns=now)
            except OutputError as err:
                self.write_error = self.write_error or err
            except Exception as err:  # one bad message must not end a recording; counted and reported
                self.failed[topic] = self.failed.get(topic, 0) + 1
                self.node.get_logger().error(f"{topic}: message not written ({type(err).__name__}: {err})",
                                             throttle_duration_sec=5.0)


def message_class(msgtype: str) -> Any:
    """'sensor_msgs/msg/Image' -> the rclpy class (rosidl_runtime_py.get_message, which the PyPI wheels lack)."""
    import importlib

    package, _, name = msgtype.rpartition("/")
    return getattr(importlib.import_module(package.replace("/", ".")), name)


def run_record(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from avs_depth_core import files
    from avs_depth_core.data.bag import BagWriter

    if args.duration is not None and not args.duration > 0:
        raise ValueError(f"--duration must be positive, got {args.duration}")
    wanted = topics.SENSOR_TOPICS if not args.topics else {topics.normalise(t): _topic_type(t) for t in args.topics}
    out = Path(args.out)
    files.sweep_temporaries(out.parent)
    files.check_output(out, 0, kind="new")
    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--log-level", args.log_level], context=context)
    stop_on_sigterm()
    node = rclpy.create_node("avs_depth_recorder", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    start = time.monotonic()
    try:
        # Ctrl-C or SIGTERM ends the recording and keeps the bag (closed, checksummed, renamed into place); a kill leaves
        # only a temporary folder, swept by the next run; a full disk or nothing recorded leaves nothing.
        with BagWriter(out, storage=args.storage) as writer:
            recorder = Recorder(node, writer, wanted)
            print(f"recording {', '.join(sorted(wanted))} into {out} ({args.storage}); "
                  f"{'for ' + format(args.duration, 'g') + ' s' if args.duration else 'Ctrl-C to stop'}", flush=True)
            try:
                while context.ok() and not (args.duration and time.monotonic() - start >= args.duration):
                    executor.spin_once(timeout_sec=0.1)
                    if recorder.write_error is not None:
                        raise files.OutputError(f"recording stopped, nothing kept: {recorder.write_error}")
            except (KeyboardInterrupt, ExternalShutdownException):
                pass
            if not any(writer.counts.values()):
                raise _nothing_recorded(f"nothing arrived on {sorted(wanted)} in {time.monotonic() - start:.1f} s, so no "
                                           "bag was written; is a camera driver, echo_node or `avs-depth-ros bringup --sim` "
                                           "running (same ROS_DOMAIN_ID)?")
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    lines = [f"recorded {time.monotonic() - start:.1f} s into {out}:"]
    for topic in sorted(wanted):
        received, written = recorder.received.get(topic, 0), writer.counts.get(topic, 0)
        failed = recorder.failed.get(topic, 0)
        lines.append(f"  {topic}: {received} received, {written} written" + (f", {failed} failed" if failed else ""))
    print("\n".join(lines), flush=True)
    return 0


def _nothing_recorded(text: str) -> Exception:
    """No message arrived, so no bag: a failure to produce the output (exit 1), not bad input."""
    from avs_depth_core.files import OutputError

    return OutputError(text)


def _topic_type(topic: str) -> str:
    name = topics.normalise(topic)
    if name not in topics.SENSOR_TOPICS:
        raise ValueError(f"--topics: {topic!r} is not a sensor topic; choose from {sorted(topics.SENSOR_TOPICS)}")
    return topics.SENSOR_TOPICS[name]


# ------------------------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avs-depth-ros", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    bringup = sub.add_parser("bringup", help="run the nodes of the launch file in one process")
    bringup.add_argument("--sim", action="store_true", help="simulated camera and echoes (sim_sensors_node) instead of "
                         "echo_node; the camera must come from a driver otherwise")
    bringup.add_argument("--params-file", help="node parameters (default: config/avs_depth.yaml)")
    bringup.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    bringup.add_argument("--figures", help="write a few depth figures (PNG) into this folder at the end")
    bringup.add_argument("--figure-count", type=int, default=4, help="how many figures (default 4)")
    for name, kind, text, choices in DEPTH_OVERRIDES:
        bringup.add_argument(f"--{name.replace('_', '-')}", type=kind, choices=choices,
                             help=f"override depth_node's {name}" + (f" ({text})" if text else ""))
    bringup.add_argument("--threads", type=int, default=None,
                         help="executor threads: 1 = SingleThreadedExecutor (default: inference and the sensors run in "
                              "their own threads), more = MultiThreadedExecutor (for comparison, benchmarks/node_latency.py)")
    bringup.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error", "fatal"])
    record = sub.add_parser("record", help="record the sensor topics into a rosbag2")
    record.add_argument("--out", required=True, help="output bag folder (must not exist)")
    record.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    record.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="bag storage (default mcap)")
    record.add_argument("--topics", nargs="+", help=f"subset of {sorted(topics.SENSOR_TOPICS)}")
    record.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error", "fatal"])
    for command in (bringup, record):
        command.add_argument("--debug", action="store_true", help="on an error, print the traceback too")
    audio_check.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from avs_depth_core.cli import run_reporting_errors

    args = build_parser().parse_args(argv)

    def command() -> int:
        if args.command == "audio-check":
            return audio_check.run(args, default_params_file())
        return run_bringup(args) if args.command == "bringup" else run_record(args)

    return run_reporting_errors(f"avs-depth-ros {args.command}", command, debug=args.debug or None)


if __name__ == "__main__":
    sys.exit(main())
