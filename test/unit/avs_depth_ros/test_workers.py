"""avs_depth_ros.workers: the threads that keep inference and sensor drivers out of the rclpy executor (no ROS needed)."""

from __future__ import annotations

import itertools
import threading
import time

from avs_depth_ros.workers import DriverThread, LatestFrameWorker


def wait_until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_driver_thread_sleeps_as_long_as_step_asks_and_stops(thread_errors):
    calls: list[float] = []

    def step() -> float:
        calls.append(time.monotonic())
        return 0.02

    driver = DriverThread("test-driver", step, on_error=thread_errors)
    driver.start()
    time.sleep(0.25)
    driver.stop()
    n = len(calls)
    time.sleep(0.1)
    assert len(calls) == n, "no step after stop()"
    assert 1 <= n <= 14  # about 0.25 s / 0.02 s: it sleeps between steps, no busy loop
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert min(gaps) >= 0.015


def test_driver_thread_caps_long_sleeps_so_stop_is_prompt(thread_errors):
    driver = DriverThread("test-driver", lambda: 3600.0, on_error=thread_errors)
    driver.start()
    start = time.monotonic()
    driver.stop()
    assert time.monotonic() - start < 0.5


def test_driver_thread_reports_an_error_once_and_ends():
    errors: list[BaseException] = []

    def step() -> float:
        raise RuntimeError("render failed")

    driver = DriverThread("test-driver", step, errors.append)
    driver.start()
    wait_until(lambda: errors)
    time.sleep(0.05)
    assert len(errors) == 1 and isinstance(driver.error, RuntimeError) and str(driver.error) == "render failed"
    driver.stop()


def test_latest_frame_worker_processes_the_newest_item_and_counts_replaced_ones(thread_errors):
    gate, entered = threading.Event(), threading.Event()
    done: list[int] = []

    def process(item: int) -> None:
        entered.set()
        gate.wait(5.0)
        done.append(item)

    worker = LatestFrameWorker("test-worker", process, on_error=thread_errors)
    assert worker.submit(0) is False
    entered.wait(5.0)
    assert worker.busy
    replaced = [worker.submit(k) for k in (1, 2, 3)]  # arrive while item 0 is in progress
    assert replaced == [False, True, True]  # 1 waits, 2 replaces it, 3 replaces 2
    gate.set()
    wait_until(lambda: len(done) == 2 and not worker.busy)
    assert done == [0, 3]
    worker.stop()


def test_latest_frame_worker_stop_finishes_the_item_in_progress_and_drops_the_pending_one(thread_errors):
    gate, entered = threading.Event(), threading.Event()
    done: list[str] = []

    def process(item: str) -> None:
        entered.set()
        gate.wait(5.0)
        done.append(item)

    worker = LatestFrameWorker("test-worker", process, on_error=thread_errors)
    worker.submit("in progress")
    entered.wait(5.0)
    worker.submit("pending")
    threading.Timer(0.1, gate.set).start()
    worker.stop()
    assert done == ["in progress"]
    worker.submit("after stop")
    time.sleep(0.05)
    assert done == ["in progress"]


def test_latest_frame_worker_reports_a_failing_item_and_ends():
    errors: list[BaseException] = []

    def process(item: int) -> None:
        if item == 1:
            raise KeyError("bug")

    worker = LatestFrameWorker("test-worker", process, errors.append)
    worker.submit(0)
    wait_until(lambda: not worker.busy)
    worker.submit(1)
    wait_until(lambda: errors)
    assert isinstance(worker.error, KeyError) and not worker.busy
    worker.stop()
