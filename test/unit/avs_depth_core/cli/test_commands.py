"""The command-line layer: every subcommand that setup.py installs as a ROS executable exists, parses its arguments and
reaches the library; `python -m avs_depth_core.cli` and the console script run."""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avs_depth_core.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[4]


def installed_commands() -> list[str]:
    """setup.py's CORE_COMMANDS (the `ros2 run avs_depth_core <cmd>` executables), read without running setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "CORE_COMMANDS":
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py defines no CORE_COMMANDS")


def test_every_installed_command_has_a_module():
    assert sorted(installed_commands()) == sorted(COMMANDS)
    for name, (module_name, _) in COMMANDS.items():
        module = importlib.import_module(f"avs_depth_core.cli.{module_name}")
        parser = argparse.ArgumentParser(prog=name)
        module.add_arguments(parser)
        assert callable(module.run)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_of_every_command(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert f"avs-depth {name}" in capsys.readouterr().out


def test_unknown_command_and_no_command(capsys):
    assert main([]) == 2
    with pytest.raises(SystemExit):
        main(["trian"])
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_module_and_console_script_entry_points():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "avs_depth_core.cli", "bag-info", "--help"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "avs-depth bag-info" in proc.stdout, proc.stderr
    # The `ros2 run avs_depth_core bag-info` executable colcon installs (setup.py writes it), where it was built.
    launcher = ROOT / "install" / "avs_depth_ros" / "lib" / "avs_depth_core" / "bag-info"
    if launcher.is_file():
        proc = subprocess.run([sys.executable, str(launcher), "--help"], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "avs-depth bag-info" in proc.stdout, proc.stderr
    script = Path(sys.executable).parent / "avs-depth"
    if script.is_file():
        proc = subprocess.run([str(script), "--help"], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "convert-batvision" in proc.stdout, proc.stderr
