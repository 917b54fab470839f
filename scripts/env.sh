# Source this to get the environment the package builds, runs and tests in:
#   . scripts/env.sh
# Activates .venv and, without a ROS 2 install sourced, points ament and CMake
# at the ROS 2 wheels inside it. Sources the colcon workspace once built.
_vlm_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
. "${VENV:-$_vlm_root/.venv}/bin/activate"
if [ -z "${ROS_DISTRO:-}" ]; then
  export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi
if [ -f "$_vlm_root/install/setup.bash" ]; then
  # shellcheck disable=SC1091
  . "$_vlm_root/install/setup.bash"
fi
unset _vlm_root
