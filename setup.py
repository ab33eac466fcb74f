"""ament_python package avs_depth_ros; also installs the ROS-free library avs_depth_core.

avs_depth_core is registered in the ament index with one executable per CLI subcommand under lib/avs_depth_core/,
so `ros2 run avs_depth_core train --bag bv2/` is `avs-depth train --bag bv2/`.
"""

import os
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

CORE_COMMANDS = [
    "simulate", "convert-batvision", "train", "evaluate", "evaluate-scaling", "infer", "gradcam", "bag-info", "export",
    "echo-stats", "mine-labels",
]
ROS_NODES = ["echo_node", "sim_sensors_node", "depth_node", "room_loop"]
HERE = Path(__file__).resolve().parent


def core_executables() -> list[str]:
    """Write one small launcher per core subcommand (generated, so there is a single place that lists them)."""
    out = HERE / "build" / "avs_depth_core_lib"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in CORE_COMMANDS:
        path = out / name
        path.write_text(
            "#!/usr/bin/env python3\n"
            "import sys\n\n"
            "from avs_depth_core.cli import main\n\n"
            f"sys.exit(main([{name!r}, *sys.argv[1:]]))\n"
        )
        path.chmod(0o755)
        paths.append(os.path.relpath(path, HERE))
    return paths


setup(
    name="avs_depth_ros",
    version="0.1.0",
    packages=find_packages(include=["avs_depth_core", "avs_depth_core.*", "avs_depth_ros", "avs_depth_ros.*"]),
    package_data={"avs_depth_core": ["interfaces/*.msg", "checkpoints/*/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/avs_depth_ros", "resource/avs_depth_core"]),
        ("share/avs_depth_ros", ["package.xml"]),
        ("share/avs_depth_ros/launch", glob("launch/*.launch.py")),
        ("share/avs_depth_ros/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/avs_depth_core/msg", glob("msg/msg/*.msg")),
        ("lib/avs_depth_core", core_executables()),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="avs_depth maintainers",
    maintainer_email="maintainers@avs-depth.org",
    description="Metric depth from one camera and binaural chirp echoes (AVS-Net) for ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "avs-depth = avs_depth_core.cli:main",
            "avs-depth-ros = avs_depth_ros.cli:main",
            *[f"{node} = avs_depth_ros.{node}:main" for node in ROS_NODES],
        ],
    },
)
