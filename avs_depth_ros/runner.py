"""The nodes' shared main: init, build, spin until Ctrl-C or shutdown.

A SingleThreadedExecutor by default: every callback of these nodes only checks and stores, the slow work (inference,
sensor drivers) runs in the nodes' own threads (avs_depth_ros.workers), and rclpy's MultiThreadedExecutor spins while
callbacks wait in its pool, taking the GIL from those threads (figures: README, Threads).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node

# Errors that mean "this configuration cannot run" (bad parameter, missing checkpoint, no audio device): one clear
# fatal line and exit status 1 instead of a traceback.
CONFIG_ERRORS = (ValueError, FileNotFoundError, RuntimeError)


def make_executor(threads: int = 1, context: rclpy.context.Context | None = None) -> Executor:
    """threads 1: SingleThreadedExecutor; more: MultiThreadedExecutor with that many threads."""
    if threads < 1:
        raise ValueError(f"executor threads must be >= 1, got {threads}")
    if threads == 1:
        return SingleThreadedExecutor(context=context)
    return MultiThreadedExecutor(num_threads=threads, context=context)


def spin(nodes: list[Node], threads: int = 1) -> None:
    executor = make_executor(threads)
    for node in nodes:
        executor.add_node(node)
    try:
        executor.spin()
    finally:
        executor.shutdown()


def run_node(factory: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = factory()
        spin([node])
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except CONFIG_ERRORS as err:
        if node is not None and not node.context.ok():  # a signal shut the context down under the executor: not an error
            return 1 if getattr(node, "error", None) is not None else 0
        rclpy.logging.get_logger(name).fatal(str(err))
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    # 1 when one of the node's own threads stopped it (shutdown_on_error has logged why)
    return 1 if getattr(node, "error", None) is not None else 0


def node_main(factory: Callable[[], Node], name: str) -> Callable[[list[str] | None], int]:
    """A node's console-script entry point (setup.py): run_node(factory, name, args)."""

    def main(args: list[str] | None = None) -> int:
        return run_node(factory, name, args)

    return main


def shutdown_on_error(node: Node, what: str) -> Callable[[BaseException], bool]:
    """on_error for a node's own thread (avs_depth_ros.workers): one FATAL line, then the node's context is shut down so
    the executor returns and the process ends with exit status 1 (run_node and bringup read node.error). An exception
    raised after the context was shut down (a publish racing Ctrl-C: "publisher's context is invalid") returns False:
    the thread ends quietly and the exit status stays 0."""

    def stop(err: BaseException) -> bool:
        if not node.context.ok():  # Ctrl-C or SIGTERM shut the context down under the thread: not an error
            return False
        node.get_logger().fatal(f"{what} stopped: {type(err).__name__}: {err}")
        rclpy.try_shutdown(context=node.context)
        return True

    return stop



def publish_while_running(node: Node, publisher: Any, msg: Any) -> bool:
    """Publish from a node's own thread unless its context was shut down (Ctrl-C, SIGTERM): a driver thread that loses
    the race with shutdown returns False instead of failing ("publisher's context is invalid") and ending the process
    with status 1."""
    if not node.context.ok():
        return False
    try:
        publisher.publish(msg)
    except Exception:
        if node.context.ok():
            raise
        return False
    return True
