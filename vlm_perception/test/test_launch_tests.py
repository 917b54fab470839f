"""Runs each launch test in launch_tests/ with the `launch_test` runner, as `colcon test` does.

launch_testing's pytest plugin does not load under pytest >= 8 (pytest.ini turns it
off), so one plain pytest run still runs every test: each launch test file is its own
`launch_test` process here. The runner comes from a ROS 2 install or the .ros2-tools
overlay; without it these skip, except in CI.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from ros2_cli import require_tool, run

LAUNCH_TESTS = sorted((Path(__file__).resolve().parent / "launch_tests").glob("test_*.py"))


@pytest.mark.integration
@pytest.mark.parametrize("launch_test", LAUNCH_TESTS, ids=lambda path: path.stem)
def test_launch_test_passes(launch_test: Path):
    runner = require_tool("launch_test")
    try:
        result = run([runner, str(launch_test)], timeout=240)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{launch_test.name} did not finish in {exc.timeout} s:\n{exc.output}")
    assert result.returncode == 0, f"{launch_test.name} failed:\n{result.stdout}\n{result.stderr}"
