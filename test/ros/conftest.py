"""rclpy integration tests on loopback. Each test module skips as a whole where rclpy or the generated avs_depth_msgs
cannot be imported (ROS environment not sourced); in CI (`make test`) they run inside `unshare -n`.

Each test gets its own rclpy context; the session gets a random ROS_DOMAIN_ID so parallel runs on one machine do not
see each other's topics, and discovery stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(20, 99)))

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ros_context() -> Iterator[Any]:
    rclpy = pytest.importorskip("rclpy")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


class Spinner:
    """The executor the nodes ship (avs_depth_ros.runner.make_executor: a SingleThreadedExecutor) spinning in a
    background thread, as a node's main() would."""

    def __init__(self, context: Any) -> None:
        from avs_depth_ros.runner import make_executor

        self.executor = make_executor(1, context)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self.error: BaseException | None = None
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except BaseException as err:  # surfaced by the test through wait_for
            self.error = err

    def add(self, *nodes: Any) -> None:
        for node in nodes:
            self.executor.add_node(node)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.error is not None:
                raise self.error
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self._thread.join(timeout=5.0)


@pytest.fixture
def spinner(ros_context: Any) -> Iterator[Spinner]:
    s = Spinner(ros_context)
    try:
        yield s
    finally:
        s.close()
        for node in list(s.executor.get_nodes()):
            node.destroy_node()


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, str]:
    """Randomly initialised AVS-Net checkpoints, tiny backbone at 64x128 (saved through the checkpoint API)."""
    import torch

    from avs_depth_core.models.avsnet import AVSNet, AVSNetConfig

    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    small = dict(backbone="tiny", image_size=(64, 128), n_bins=16, bin_embedding_dim=32)
    return {"avsnet_checkpoint": str(AVSNet(AVSNetConfig(**small)).save(folder / "avsnet")),
            "relative_checkpoint": str(AVSNet(AVSNetConfig(**small, use_echo=False)).save(folder / "avsnet_rgb"))}


@pytest.fixture(scope="session")
def tiny_params_file(tmp_path_factory, tiny_checkpoints) -> Path:
    """config/avs_depth.yaml with the tiny checkpoints, CPU, one warm-up pass and a small simulated camera."""
    config = yaml.safe_load((ROOT / "config" / "avs_depth.yaml").read_text())
    depth = config["depth_node"]["ros__parameters"]
    depth.update(tiny_checkpoints, device="cpu", warmup_iterations=1)
    sim = config["sim_sensors_node"]["ros__parameters"]
    sim.update(height=96, width=160, loop_frames=20)
    path = tmp_path_factory.mktemp("params") / "avs_depth_tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def child_env() -> dict[str, str]:
    """The environment for a child process: this one, with the source tree importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def audio_server() -> Iterator[Any]:
    """A private PulseAudio server (loopback layout: what is played is recorded), seen only by the processes given its
    client_env(); stopped by PID. Skips where PulseAudio is not installed (`make setup` installs it as root)."""
    from avs_depth_ros.audio_server import PrivateAudioServer, available

    missing = available()
    if missing is not None:
        pytest.skip(missing)
    server = PrivateAudioServer("loopback").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def restore_torch_threads() -> Iterator[None]:
    """depth_node sets torch's (process-wide) thread count; the tests after these must not inherit it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
