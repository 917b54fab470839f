"""The node with the real OWLv2 / OWL-ViT backend (tiny random models from `model_path`) over DDS."""
from __future__ import annotations

import uuid

import numpy as np
import pytest
from ros_harness import NodeProcess, start, wait_answerable, wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("family", ["owlv2", "owlvit"])
def test_owl_node_answers_and_publishes(ros, family, request):
    model_dir = request.getfixturevalue("tiny_owl_model_dir" if family == "owlv2" else "tiny_owlvit_model_dir")
    node, client = start({"backend": family, "model_path": str(model_dir), "device": "cpu",
                          "queries": ["apple", "banana"], "rate_hz": 2.0, "max_image_age": 5.0})
    try:
        rgb = np.random.default_rng(3).integers(0, 255, (240, 400, 3), np.uint8)  # non-square
        frame = wait_answerable(client, rgb)
        response = client.query("is there a red apple or a banana?", threshold=0.01)
        assert response.success, response.message
        assert [p.query for p in response.presence] == ["red apple", "banana"]
        for presence in response.presence:
            assert 0.0 <= presence.confidence <= 1.0
            assert presence.present == (presence.confidence >= 0.01)
        assert response.inference_ms > 0.0
        assert response.answer.startswith(("Yes:", "No:"))
        for target in response.targets:
            assert 0 <= target.center_u <= 400 and 0 <= target.center_v <= 240
            assert target.width_px > 0 and target.height_px > 0 and not target.has_pose
        scores = [t.score for t in response.targets]
        assert scores == sorted(scores, reverse=True)
        # Standing queries go out with the backend's name and the frame's header.
        assert wait_until(lambda: any(m.backend == family and m.header.stamp == frame.header.stamp
                                      for m in client.presence), 10.0)
    finally:
        client.close()
        node.stop()


@pytest.mark.parametrize("params", [
    {"backend": "owlv2", "model_path": "/nonexistent/owlv2"},
    {"backend": "owlv2", "model": "google/owlv2-base-patch16-ensemble"},  # no hub, nothing cached
])
def test_unloadable_model_exits_with_one_line_naming_model_path(params, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache, as on a fresh machine
    node = NodeProcess(f"t{uuid.uuid4().hex[:8]}", params)
    try:
        assert node.wait_exit(120) == 1, node.output
        errors = [line for line in node.output.splitlines() if "cannot start" in line]
        assert len(errors) == 1 and "model_path" in errors[0], node.output
        assert "Traceback" not in node.output
    finally:
        node.stop()
