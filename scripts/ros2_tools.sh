#!/usr/bin/env bash
# Build the ROS 2 Jazzy launch and command-line tools that are not on PyPI
# (launch, launch_ros, launch_testing, ros2cli, vision_msgs) into the ignored
# .ros2-tools overlay, which scripts/env.sh then sources. Run inside the
# project's environment (`. scripts/env.sh`).
#
# Usage: scripts/ros2_tools.sh TOOLS_DIR   (default ../shared/ros2-tools)
# Does nothing with a ROS 2 install sourced (it has the real tools) or with
# ROS_WHEELS other than jazzy (the sources are Jazzy's). Without TOOLS_DIR the
# launch tests are skipped, except in CI (CI=true), where that is an error.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools=${1:-$root/../shared/ros2-tools}
if [ -n "${ROS_DISTRO:-}" ]; then
  echo "ros2-tools: using the ROS 2 $ROS_DISTRO install's launch and ros2cli"
  exit 0
fi
if [ "${ROS_WHEELS:-jazzy}" != jazzy ]; then
  echo "ros2-tools: the overlay holds Jazzy sources; not built for ROS_WHEELS=$ROS_WHEELS"
  exit 0
fi
if [ ! -x "$tools/build.sh" ]; then
  if [ "${CI:-}" = true ]; then
    echo "ros2-tools: $tools/build.sh not found; CI needs it for the launch and README-command tests" >&2
    exit 1
  fi
  echo "ros2-tools: $tools not found; launch and README-command tests will be skipped"
  exit 0
fi
"$tools/build.sh" "$root/.ros2-tools"
