"""Metric depth from one camera and binaural echoes: the sensors and depth_node.

    ros2 launch avs_depth_ros avs_depth.launch.py [use_sim:=true] [params_file:=my.yaml] [device:=cuda]
        [avsnet_checkpoint:=model.safetensors] [relative_checkpoint:=rgb.safetensors] [namespace:=robot1] [log_level:=debug]

use_sim:=false (default) runs echo_node (sound card) and depth_node; the camera comes from your driver on
camera/color/image_raw and camera/color/camera_info (remap them if your driver uses other names).
use_sim:=true runs sim_sensors_node (simulated camera and echoes) and depth_node: no hardware needed.
`avs-depth-ros bringup [--sim]` runs the same nodes with the same YAML in one process, for machines without ros2cli.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = "avs_depth_ros"

ARGUMENTS = [
    ("use_sim", "false", "true: simulated camera and echoes (sim_sensors_node); false: echo_node on the sound card, "
                         "camera from your driver"),
    ("params_file", str(Path(get_package_share_directory(PACKAGE)) / "config" / "avs_depth.yaml"),
     "node parameters, ROS 2 YAML (<node>: ros__parameters:)"),
    ("device", "", "depth_node torch device: auto, cpu, cuda or cuda:N; empty = as in params_file"),
    ("avsnet_checkpoint", "", "AVS-Net checkpoint (.safetensors with its .json); empty = as in params_file"),
    ("relative_checkpoint", "", "relative-depth model checkpoint; empty = as in params_file"),
    ("namespace", "", "namespace of all nodes (their relative topics move with it)"),
    ("log_level", "info", "log level of all nodes: debug, info, warn, error or fatal"),
]
# Launch arguments that override depth_node parameters only when given (an empty one keeps the YAML's value).
DEPTH_OVERRIDES = ("device", "avsnet_checkpoint", "relative_checkpoint")


def _nodes(context, *_args, **_kwargs):
    def value(name):
        return LaunchConfiguration(name).perform(context)

    use_sim = value("use_sim").strip().lower()
    if use_sim not in ("true", "false", "1", "0"):
        raise ValueError(f"use_sim:={use_sim!r}: expected true or false")
    sensors = "sim_sensors_node" if use_sim in ("true", "1") else "echo_node"
    params_file = value("params_file")
    if not Path(params_file).is_file():
        raise FileNotFoundError(f"params_file:={params_file}: file not found")
    overrides = {name: value(name) for name in DEPTH_OVERRIDES if value(name)}
    common = {
        "package": PACKAGE, "namespace": value("namespace"), "output": "screen", "emulate_tty": True,
        "arguments": ["--ros-args", "--log-level", value("log_level")],
    }
    return [
        Node(executable=sensors, name=sensors, parameters=[params_file], **common),
        Node(executable="depth_node", name="depth_node", parameters=[params_file, overrides], **common),
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text) for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_nodes)]
    )
