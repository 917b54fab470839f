"""The node as a lifecycle node over DDS: transitions, calls in every state, refused transitions."""
from __future__ import annotations

import numpy as np
import pytest
from plugin_backends import paint
from ros_harness import start, wait_answerable, wait_until
from sensor_msgs.msg import Image

from vlm_perception.core.images import encode_image_fields

pytestmark = pytest.mark.integration
COLOR = "plugin_backends:ColorBackend"


def scene() -> np.ndarray:
    return paint(np.full((240, 320, 3), 90, np.uint8), "apple", (100, 60, 180, 120))


def subscribed(client) -> bool:
    return client.image_pub.get_subscription_count() > 0


def assert_not_active(client, state: str) -> None:
    response = client.query("apple")
    assert not response.success
    assert f"node is not active (state: {state})" in response.message
    assert "ros2 lifecycle set" in response.message


def test_lifecycle_transitions_and_calls_in_every_state(ros):
    node, client = start({"backend": COLOR, "autostart": False, "queries": ["apple"], "rate_hz": 5.0,
                          "max_image_age": 5.0})
    try:
        assert client.lifecycle_state() == "unconfigured"
        assert_not_active(client, "unconfigured")
        assert not subscribed(client)

        # A transition the state does not allow is refused with the reason, and nothing changes.
        assert not client.change_state("activate")
        assert node.wait_for_output("transition 'activate' refused: not possible in state 'unconfigured'", 10)
        assert client.lifecycle_state() == "unconfigured"

        assert client.change_state("configure")
        assert client.lifecycle_state() == "inactive"
        assert_not_active(client, "inactive")
        assert not wait_until(lambda: subscribed(client), 1.0)  # no camera subscription while inactive
        # Load-time parameters are refused while configured.
        [result] = client.set_parameters(device="cpu")
        assert not result.successful and "unconfigured" in result.reason

        assert client.change_state("activate")
        assert client.lifecycle_state() == "active"
        assert wait_until(lambda: subscribed(client), 10.0)
        wait_answerable(client, scene())
        response = client.query("apple")
        assert response.success and response.presence[0].present
        assert wait_until(lambda: len(client.presence) > 0, 10.0)  # standing queries run

        assert client.change_state("deactivate")
        assert client.lifecycle_state() == "inactive"
        assert wait_until(lambda: not subscribed(client), 10.0)  # subscriptions released
        assert_not_active(client, "inactive")
        published = len(client.presence)
        assert not wait_until(lambda: len(client.presence) > published, 1.0)  # standing queries stopped

        assert not client.change_state("deactivate")  # already inactive
        assert node.wait_for_output("transition 'deactivate' refused: not possible in state 'inactive'", 10)

        assert client.change_state("cleanup")
        assert client.lifecycle_state() == "unconfigured"
        assert node.wait_for_output("model freed", 10)
        assert_not_active(client, "unconfigured")

        # Configurable again, with a changed load-time parameter, and serving again.
        [result] = client.set_parameters(device="cpu")
        assert result.successful, result.reason
        assert client.change_state("configure") and client.change_state("activate")
        wait_answerable(client, scene())
        assert node.process.poll() is None
    finally:
        client.close()
        node.stop()


@pytest.mark.parametrize("bad, message, fix", [
    ({"image_qos": "best_effort"}, "parameter image_qos='best_effort' is not one of", {"image_qos": "sensor_data"}),
    # An error raised by ROS itself (a topic name over its length limit): named, and the half-made
    # configuration released, so the parameter can be fixed.
    ({"cameras": ["c" * 250]}, "RCLError: ", {"cameras": ["front"]}),
])
def test_failed_configure_says_why_and_the_node_can_be_configured_after_a_fix(ros, bad, message, fix):
    node, client = start({"backend": COLOR, "autostart": False, **bad})
    try:
        assert not client.change_state("configure")
        assert node.wait_for_output(f"configure failed: {message}", 10)
        assert client.lifecycle_state() == "unconfigured"
        assert_not_active(client, "unconfigured")
        [result] = client.set_parameters(**fix)
        assert result.successful, result.reason
        assert client.change_state("configure") and client.change_state("activate")
        response = client.query("apple", image=Image(**encode_image_fields(scene(), "rgb8")))
        assert response.success and response.presence[0].present, response.message
    finally:
        client.close()
        node.stop()
