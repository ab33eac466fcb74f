"""The nodes' shared main: init, build, spin on a multi-threaded executor until Ctrl-C or shutdown."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

# Errors that mean "this configuration cannot run" (bad parameter, missing checkpoint, no audio device): one clear
# fatal line and exit status 1 instead of a traceback.
CONFIG_ERRORS = (ValueError, FileNotFoundError, RuntimeError)


def spin(nodes: list[Node], threads: int = 4) -> None:
    executor = MultiThreadedExecutor(num_threads=threads)
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
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    except CONFIG_ERRORS as err:
        rclpy.logging.get_logger(name).fatal(str(err))
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
