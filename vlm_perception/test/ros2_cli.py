"""Running the ROS 2 command-line and launch tools (`ros2`, `launch_test`) from tests, as users do.

They come from a ROS 2 install or from the .ros2-tools overlay that `make build`
builds from ../shared/ros2-tools. Where they are missing, tests that need them
skip, except in CI (CI=true), which builds the overlay: there a missing tool fails.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

import pytest
from ros_harness import CapturedProcess, node_env

REPO_ROOT = Path(__file__).resolve().parents[2]


def require_tool(name: str) -> str:
    """The tool's path; skips the test where it is missing, fails in CI."""
    path = shutil.which(name)
    if path:
        return path
    message = (f"`{name}` not found: source a ROS 2 install, or run `make build` next to "
               "../shared/ros2-tools to build the .ros2-tools overlay")
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_module(name: str) -> None:
    """Skips the test where a ROS package's Python module is missing, fails in CI."""
    try:
        __import__(name)
    except ImportError as exc:
        message = f"{name} is not importable ({exc}): source a ROS 2 install or run `make build` (.ros2-tools)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def run(argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run a command to completion in the tests' ROS environment (domain, test plugins on PYTHONPATH)."""
    return subprocess.run(list(argv), cwd=REPO_ROOT, env=node_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


class Background(CapturedProcess):
    """A long-running command (`ros2 launch`, a replay) in its own process group, output captured."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        super().__init__(subprocess.Popen(self.argv, cwd=REPO_ROOT, env=node_env(), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          start_new_session=True))

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """SIGINT, as Ctrl-C in a terminal (ros2 launch then stops its processes); the group is
        killed if it is still there after `timeout` seconds. Returns the exit status."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # Children that outlived their parent (none should) go with the group.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reader.join(timeout=5)
        return self.process.returncode


class Ros2Daemon:
    """The ros2cli daemon of this test run's ROS_DOMAIN_ID, started for CLI verbs and stopped at the end."""

    def __enter__(self) -> "Ros2Daemon":
        require_tool("ros2")
        run(["ros2", "daemon", "start"], timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        run(["ros2", "daemon", "stop"], timeout=60)

    def wait_for_node(self, full_name: str, timeout: float = 60.0) -> None:
        """Until `ros2 node list` shows the node (the verbs look nodes up through the daemon)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if full_name in run(["ros2", "node", "list"], timeout=30).stdout.split():
                return
            time.sleep(0.5)
        raise AssertionError(f"{full_name} never appeared in `ros2 node list`")
