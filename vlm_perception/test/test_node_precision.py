"""precision and runtime through the real node over DDS: parameters reach the backend, the choice is
logged at configure and shown in diagnostics, and a bad value fails configure with the reason."""
from __future__ import annotations

import numpy as np
import pytest
from ros_harness import start, wait_answerable, wait_until
from tiny_clip import save_tiny_clip

from diagnostic_msgs.msg import DiagnosticArray

pytestmark = pytest.mark.integration


def frame() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 255, (120, 160, 3), np.uint8)


def node_values(client) -> dict[str, str]:
    """The key/values of the node's latest diagnostics status, once one has arrived."""
    latest: dict[str, str] = {}

    def on_array(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == f"{client.node_prefix}: node":
                latest.clear()
                latest.update({kv.key: kv.value for kv in status.values})

    subscription = client.node.create_subscription(DiagnosticArray, "/diagnostics", on_array, 10)
    try:
        assert wait_until(lambda: "precision" in latest, 15.0), f"no precision in diagnostics: {latest}"
        return dict(latest)
    finally:
        client.node.destroy_subscription(subscription)


def test_precision_parameter_and_runtime_backend_option_reach_the_backend(ros, tmp_path):
    pytest.importorskip("openvino", reason="pip install -r requirements-openvino.txt")
    model_dir = save_tiny_clip(tmp_path / "clip")
    node, client = start({"backend": "clip", "model_path": str(model_dir), "device": "cpu", "precision": "bf16",
                          "backend_options": "{runtime: openvino}", "max_image_age": 5.0})
    try:
        assert node.wait_for_output("precision bf16, runtime openvino", 10), node.output
        wait_answerable(client, frame())
        response = client.query("apple, banana")
        assert response.success, response.message
        values = node_values(client)
        assert (values["precision"], values["runtime"]) == ("bf16", "openvino")
        # OpenVINO runs what the CPU can: bf16 where it has bf16 units, else fp32.
        assert values["image_tower_precision"] in ("bf16", "fp32")
    finally:
        client.close()
        node.stop()


def test_invalid_precision_fails_configure_with_the_reason_and_a_fix_configures(ros, tmp_path):
    model_dir = save_tiny_clip(tmp_path / "clip")
    node, client = start({"backend": "clip", "model_path": str(model_dir), "device": "cpu", "precision": "fp8",
                          "autostart": False, "max_image_age": 5.0})
    try:
        assert not client.change_state("configure")
        assert node.wait_for_output("parameter precision='fp8' is not one of auto, fp32, bf16, fp16", 10)
        [result] = client.set_parameters(precision="fp32")
        assert result.successful, result.reason
        assert client.change_state("configure") and client.change_state("activate")
        assert node.wait_for_output("configured: backend 'clip' (precision fp32, runtime torch", 10), node.output
        wait_answerable(client, frame())
        assert node_values(client)["precision"] == "fp32"
    finally:
        client.close()
        node.stop()
