# vlm_perception: one entry point for setup, build, test and benchmarks.
SHELL := /bin/bash
ENV := . scripts/env.sh &&

.PHONY: setup build test demo bench clean

setup:
	bash scripts/setup.sh

build: setup
	$(ENV) colcon build --symlink-install --event-handlers console_direct- \
	  --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$$VIRTUAL_ENV/bin/python"

test: build
	$(ENV) HF_HUB_OFFLINE=1 python -m pytest vlm_perception/test $(PYTEST_ARGS)

# MODEL_PATH=DIR runs the demo with a local model directory instead of the hub id.
demo: build
	$(ENV) install/vlm_perception/lib/vlm_perception/vlm_perception_demo $(if $(MODEL_PATH),--model-path $(MODEL_PATH))

bench: build
	$(ENV) HF_HUB_OFFLINE=1 python bench/run_all.py

clean:
	rm -rf build install log
