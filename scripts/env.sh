# Source this to get the environment the package builds, runs and tests in:
#   . scripts/env.sh
# Activates .venv and, without a ROS 2 install sourced, points ament and CMake
# at the ROS 2 wheels inside it and sources the launch/ros2cli overlay
# (.ros2-tools, built by `make build` from ../shared/ros2-tools) when there is one.
# ROS_WHEELS=kilted selects the Kilted leg: .venv-kilted and install-kilted/.
# Sources the colcon workspace once built.
_vlm_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_vlm_suffix=
if [ "${ROS_WHEELS:-jazzy}" != jazzy ]; then
  _vlm_suffix=-$ROS_WHEELS
fi
# shellcheck disable=SC1091
. "${VENV:-$_vlm_root/.venv$_vlm_suffix}/bin/activate"
if [ -z "${ROS_DISTRO:-}" ]; then
  export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  # The overlay holds Jazzy's sources: only for the Jazzy wheels.
  if [ -z "$_vlm_suffix" ] && [ -f "$_vlm_root/.ros2-tools/setup.bash" ]; then
    # shellcheck disable=SC1091
    . "$_vlm_root/.ros2-tools/setup.bash"
  fi
fi
if [ -f "$_vlm_root/install$_vlm_suffix/setup.bash" ]; then
  # shellcheck disable=SC1091
  . "$_vlm_root/install$_vlm_suffix/setup.bash"
fi
unset _vlm_root _vlm_suffix
