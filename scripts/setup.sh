#!/usr/bin/env bash
# Bring up everything vlm_perception needs in an ignored .venv, idempotently.
#
# - With a ROS 2 install sourced (ROS_DISTRO set and rclpy importable), the venv
#   sees the system site-packages and nothing ROS-related is installed.
# - Without one, ROS 2 Jazzy comes from PyPI wheels, and the wheels' CMake
#   files get their hard-coded build-container paths fixed (below).
# - ROS_WHEELS=kilted takes ROS 2 Kilted's wheels instead, into .venv-kilted: CI's
#   second leg, which runs the DDS integration tests with the test plugin
#   backends, so that venv gets neither torch nor transformers nor the offline models.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
ros_wheels=${ROS_WHEELS:-jazzy}
case "$ros_wheels" in
  jazzy) venv=${VENV:-$root/.venv} ;;
  kilted) venv=${VENV:-$root/.venv-kilted} ;;
  *) echo "setup: ROS_WHEELS=$ros_wheels is not supported; use jazzy or kilted" >&2; exit 1 ;;
esac
python=${PYTHON:-python3}
cd "$root"

use_system_ros=0
if [ -n "${ROS_DISTRO:-}" ] && "$python" -c 'import rclpy' 2>/dev/null; then
  use_system_ros=1
fi

stamp=$venv/.vlm_perception-setup
# The offline backend's models (optional extra): installed unless VLM_PERCEPTION_OFFLINE=0.
with_offline=${VLM_PERCEPTION_OFFLINE:-1}
# OpenVINO for runtime openvino (optional extra): installed unless VLM_PERCEPTION_OPENVINO=0.
with_openvino=${VLM_PERCEPTION_OPENVINO:-1}
# The model libraries (torch, transformers), the offline models and OpenVINO: the Kilted leg needs none.
with_models=1
if [ "$ros_wheels" = kilted ]; then
  with_models=0
  with_offline=0
  with_openvino=0
fi
want=$(cat requirements.txt requirements-test.txt requirements-offline.txt requirements-openvino.txt "requirements-ros-$ros_wheels.txt" \
  scripts/setup.sh scripts/constraints.txt |
  sha256sum |
  cut -c1-16)-ros$use_system_ros-offline$with_offline-openvino$with_openvino
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: $venv is up to date"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  if [ "$use_system_ros" = 1 ]; then
    echo "setup: using the ROS 2 $ROS_DISTRO install found on this machine"
    "$python" -m venv --system-site-packages "$venv"
  else
    echo "setup: no ROS 2 install sourced; installing ROS 2 $ros_wheels from PyPI wheels"
    "$python" -m venv "$venv"
  fi
fi
pip_install() {
  # This machine's pip config names local indexes that may not exist: hide that noise.
  "$venv/bin/python" -m pip install --disable-pip-version-check -q -c scripts/constraints.txt "$@" \
    2> >(grep -v "^WARNING: Location 'file:" >&2)
}

if [ "$use_system_ros" = 0 ]; then
  pip_install -r "requirements-ros-$ros_wheels.txt"
  # The wheels' exported CMake files name the build container's Python paths.
  include=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  purelib=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  { grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$venv/share" --include='*.cmake' || true; } |
    xargs -r sed -i -E \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$include#g" \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages#$purelib#g"
fi
if [ "$with_models" = 1 ]; then
  pip_install -r requirements.txt -r requirements-test.txt
else
  pip_install -r <(cat requirements.txt requirements-test.txt | grep -vE '^(torch|transformers)\b')
fi
if [ "$with_offline" = 1 ]; then
  pip_install -r requirements-offline.txt
fi
if [ "$with_openvino" = 1 ]; then
  # Not every platform has openvino wheels: without them only runtime openvino is missing.
  pip_install -r requirements-openvino.txt ||
    echo "setup: openvino did not install here; runtime openvino is unavailable (runtime torch works)" >&2
fi

echo "$want" > "$stamp"
echo "setup: done ($venv)"
