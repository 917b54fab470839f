# vlm_perception: one entry point for setup, build, test and benchmarks.
SHELL := /bin/bash
ENV := . scripts/env.sh &&

# ROS 2 from PyPI wheels where no ROS 2 install is sourced: jazzy (default) or kilted.
# Kilted gets its own venv (.venv-kilted) and colcon folders (build-kilted/, install-kilted/).
ROS_WHEELS ?= jazzy
export ROS_WHEELS
SUFFIX := $(if $(filter jazzy,$(ROS_WHEELS)),,-$(ROS_WHEELS))
# Jazzy's launch/ros2cli/vision_msgs sources (see scripts/ros2_tools.sh).
ROS2_TOOLS ?= ../shared/ros2-tools
# The Kilted leg's venv has no torch: it runs the DDS integration tests with the test plugin backends.
DDS_TESTS := $(addprefix vlm_perception/test/,test_node_integration.py test_node_lifecycle.py \
  test_node_cameras.py test_node_grasps.py test_node_security.py)
TESTS ?= $(if $(SUFFIX),$(DDS_TESTS),vlm_perception/test)

.PHONY: setup tools build test demo bench clean

setup:
	bash scripts/setup.sh

tools: setup
	$(ENV) bash scripts/ros2_tools.sh "$(ROS2_TOOLS)"

build: tools
	$(ENV) colcon --log-base log$(SUFFIX) build --build-base build$(SUFFIX) --install-base install$(SUFFIX) \
	  --symlink-install --event-handlers console_direct- \
	  --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$$VIRTUAL_ENV/bin/python"

test: build
	@$(ENV) python scripts/which_ros.py
	$(ENV) HF_HUB_OFFLINE=1 python -m pytest $(TESTS) $(PYTEST_ARGS)

# MODEL_PATH=DIR runs the demo with a local model directory instead of the hub id.
demo: build
	$(ENV) install/vlm_perception/lib/vlm_perception/vlm_perception_demo $(if $(MODEL_PATH),--model-path $(MODEL_PATH))

bench: build
	$(ENV) HF_HUB_OFFLINE=1 python bench/run_all.py

clean:
	rm -rf build install log build-kilted install-kilted log-kilted .ros2-tools
