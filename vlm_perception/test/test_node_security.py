"""What a peer on the ROS graph cannot make the node do (README, "Security"), over DDS.

Any participant on the domain can call the lifecycle and parameter services;
none of them may choose code or files for the node to load after start-up.
"""
from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from fake_chat_server import FakeServer, completion
from plugin_backends import install_plugin, paint
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParametersAtomically
from rclpy.parameter import Parameter, parameter_value_to_python
from ros_harness import NodeProcess, publish_frame, start, wait_answerable, wait_until

from vlm_perception.ros.node_params import PARAMS

pytestmark = pytest.mark.integration
COLOR = "plugin_backends:ColorBackend"
# A value for every start-up-only and every live parameter (the asserts below keep these complete).
STARTUP_VALUES = {"backend": "owlvit", "model": "google/owlvit-base-patch32", "model_path": "/tmp",
                  "backend_options": "{nms_iou: 0.5}", "autostart": False}
LIVE_VALUES = {"threshold": 0.3, "queries": ["banana"], "rate_hz": 2.0, "max_image_age": 7.0, "depth_scale": 0.002,
               "sync_slop": 0.1, "grasp_margin": 0.02, "stale_frame_s": 2.0, "latency_warn_ms": 100.0}


def scene() -> np.ndarray:
    return paint(np.full((240, 320, 3), 90, np.uint8), "apple", (100, 60, 180, 120))


def get_parameters(client, names: list[str]) -> dict:
    reply = client.call(GetParameters, "get_parameters", GetParameters.Request(names=names))
    return {name: parameter_value_to_python(value) for name, value in zip(names, reply.values)}


def assert_refused_at_run_time(result, name: str) -> None:
    assert not result.successful
    assert f"{name} cannot be set at run time" in result.reason
    assert "restart the node to change it" in result.reason


def test_a_peer_cannot_make_the_node_run_a_program(ros, tmp_path):
    """The attack: deactivate + cleanup, set backend to subprocess:Popen with a command, configure."""
    marker = tmp_path / "pwned"
    node, client = start({"backend": COLOR, "max_image_age": 5.0})
    try:
        assert client.change_state("deactivate") and client.change_state("cleanup")
        attack = {"backend": "subprocess:Popen", "backend_options": f"{{args: [touch, '{marker}']}}"}
        for name, result in zip(attack, client.set_parameters(**attack)):
            assert_refused_at_run_time(result, name)
        request = SetParametersAtomically.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in attack.items()])
        result = client.call(SetParametersAtomically, "set_parameters_atomically", request).result
        assert not result.successful and "restart the node" in result.reason

        assert client.change_state("configure") and client.change_state("activate")
        wait_answerable(client, scene())
        response = client.query("apple")
        assert response.success and response.presence[0].present
        assert wait_until(lambda: client.presence and client.presence[-1].backend == COLOR, 10.0)
        assert get_parameters(client, ["backend", "backend_options"]) == {"backend": COLOR, "backend_options": ""}
        assert not marker.exists()
        assert node.process.poll() is None
    finally:
        client.close()
        node.stop()


def test_start_up_only_parameters_are_refused_and_live_ones_change_at_run_time(ros):
    assert set(STARTUP_VALUES) == {spec.name for spec in PARAMS if spec.startup_only}
    assert set(LIVE_VALUES) == {spec.name for spec in PARAMS if not spec.on_configure}
    node, client = start({"backend": COLOR, "autostart": True})
    try:
        described = client.call(DescribeParameters, "describe_parameters",
                                 DescribeParameters.Request(names=list(STARTUP_VALUES))).descriptors
        for descriptor in described:  # what `ros2 param describe` prints
            assert descriptor.read_only, descriptor.name
            assert "restart the node to change it" in descriptor.additional_constraints
        before = get_parameters(client, list(STARTUP_VALUES))
        for state, transitions in (("active", ()), ("unconfigured", ("deactivate", "cleanup"))):
            assert all(client.change_state(t) for t in transitions)
            assert client.lifecycle_state() == state
            for name, result in zip(STARTUP_VALUES, client.set_parameters(**STARTUP_VALUES)):
                assert_refused_at_run_time(result, name)
            assert get_parameters(client, list(STARTUP_VALUES)) == before
        assert client.change_state("configure") and client.change_state("activate")
        for name, result in zip(LIVE_VALUES, client.set_parameters(**LIVE_VALUES)):
            assert result.successful, (name, result.reason)
        assert get_parameters(client, list(LIVE_VALUES)) == LIVE_VALUES
    finally:
        client.close()
        node.stop()


def test_an_installed_plugin_is_loaded_by_its_entry_point_name(ros, tmp_path, monkeypatch):
    site = install_plugin(tmp_path, "color_plugin")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    node, client = start({"backend": "color_plugin", "max_image_age": 5.0})
    try:
        wait_answerable(client, scene())
        response = client.query("apple")
        assert response.success and response.presence[0].present
        assert wait_until(lambda: client.presence and client.presence[-1].backend == "color_plugin", 10.0)
    finally:
        client.close()
        node.stop()


def test_trust_remote_code_in_backend_options_is_refused(ros):
    node = NodeProcess(f"t{uuid.uuid4().hex[:8]}", {"backend": "owlv2", "backend_options": "{trust_remote_code: true}"})
    try:
        assert node.wait_exit(60) == 1, node.output
        assert "cannot start: backend_options: trust_remote_code is refused" in node.output
    finally:
        node.stop()


def test_the_remote_api_key_is_in_no_log_line_and_no_diagnostic_value(ros, monkeypatch):
    secret = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("VLM_TEST_API_KEY", secret)
    server = FakeServer()
    server.reply = lambda request: (200, completion("Yes", {"Yes": 0.9, "No": 0.1}))
    node, client = start({
        "backend": "remote", "model": "served-vlm", "max_image_age": 5.0, "queries": ["cup"], "rate_hz": 5.0,
        "backend_options": f"{{base_url: '{server.url}', retries: 0, api_key_env: VLM_TEST_API_KEY}}"})
    diagnostics: list[DiagnosticArray] = []
    client.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    try:
        wait_answerable(client, scene())
        assert server.requests[-1].headers["Authorization"] == f"Bearer {secret}"  # the key is in use
        # A server that quotes the key back in its error: the reply, the warning and the
        # standing-query warnings carry its message.
        server.reply = lambda request: (401, {"error": {"message": f"bad key {request.headers['Authorization']}"}})
        response = client.query("is there a mug?")  # a phrase not yet asked about this frame
        assert not response.success and "bad key Bearer <api key>" in response.message
        assert wait_until(lambda: publish_frame(client, scene()) and any(
            "standing queries on default skipped" in line and "bad key Bearer <api key>" in line
            for line in node.output.splitlines()), 10.0, period=0.2), node.output
        seen = len(diagnostics)
        assert wait_until(lambda: len(diagnostics) >= seen + 2, 10.0)
        assert secret not in node.output
        values = [f"{status.message} {kv.key}={kv.value}" for array in diagnostics for status in array.status
                  for kv in status.values]
        assert values and not [v for v in values if secret in v]
        assert secret not in str(get_parameters(client, [spec.name for spec in PARAMS]))
    finally:
        client.close()
        node.stop()
        server.close()


def test_with_security_enforced_the_node_never_runs_unprotected(ros, tmp_path, monkeypatch):
    """ROS_SECURITY_ENABLE with a keystore it cannot use (the PyPI wheels' Fast DDS has no security
    plugins; a ROS install's has, but rejects these files): the node stops, it does not serve openly."""
    enclave = tmp_path / "keystore" / "enclaves"  # the default enclave "/"
    enclave.mkdir(parents=True)
    for name in ("identity_ca.cert.pem", "cert.pem", "key.pem", "permissions_ca.cert.pem", "governance.p7s",
                 "permissions.p7s"):
        (enclave / name).write_text("not a certificate\n")
    monkeypatch.setenv("ROS_SECURITY_KEYSTORE", str(tmp_path / "keystore"))
    monkeypatch.setenv("ROS_SECURITY_ENABLE", "true")
    monkeypatch.setenv("ROS_SECURITY_STRATEGY", "Enforce")
    node = NodeProcess(f"t{uuid.uuid4().hex[:8]}", {"backend": COLOR})
    try:
        assert node.wait_exit(60) not in (None, 0), node.output
        assert "error creating node" in node.output
    finally:
        node.stop()
