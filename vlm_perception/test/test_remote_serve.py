"""The remote backend through the node over DDS against a server nobody here wrote: `transformers serve`.

The server (transformers[serving]) runs on 127.0.0.1, once for this module, and serves two tiny
LLaVA models by path: one forced to answer "Yes" to everything, one forced to "No". It ignores
`logprobs`, so the backend's confidence comes from the answer text (1.0 or 0.0), as documented.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
from ros_harness import start, wait_answerable
from tiny_generative import save_forced_llava

pytestmark = pytest.mark.integration
START_TIMEOUT_S = 240.0  # the server spawns a model process that imports torch (30 s here, unloaded)
LOAD_TIMEOUT_S = 240.0  # each model loads in a process of its own on its first request
ANSWER_TOKENS = 4


def serving_available() -> bool:
    try:
        from transformers.utils.import_utils import is_serve_available
    except ImportError:
        return False
    return is_serve_available()


@dataclass
class Server:
    url: str  # the OpenAI API root, http://127.0.0.1:PORT/v1
    models: dict[str, str]  # forced answer -> the model name (its directory) the server serves
    log: Path

    def post(self, path: str, body: dict[str, Any], timeout: float = 60.0) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(process: subprocess.Popen, root: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"transformers serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{root}/health", timeout=2.0):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"transformers serve not healthy within {START_TIMEOUT_S:g} s:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the server's own process group: its model processes go with it."""
    for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            pass
    try:  # model processes left after the server itself exited
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not serving_available():
        if os.environ.get("CI") == "true":
            pytest.fail("transformers[serving] is not installed, and CI must run these tests: "
                        "pip install -r requirements-test.txt")
        pytest.skip("transformers[serving] is not installed (pip install 'transformers[serving]')")
    root_dir = tmp_path_factory.mktemp("served")
    models = {answer: str(save_forced_llava(root_dir / answer.lower(), answer)) for answer in ("Yes", "No")}
    port = free_port()
    log = root_dir / "serve.log"
    executable = Path(sys.executable).parent / "transformers"
    # No hub, and no look-up of a newer transformers on PyPI (the CLI does one a day otherwise).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
    with log.open("w") as log_file:
        # Its own session, so stop() reaches the model processes it spawns.
        process = subprocess.Popen(
            [str(executable), "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
             "--model-timeout", "3600"],
            stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        root = f"http://127.0.0.1:{port}"
        wait_healthy(process, root, log)
        served = Server(f"{root}/v1", models, log)
        for model in models.values():  # load both now, so the node's requests are not the first
            served.post("/chat/completions", {"model": model, "max_tokens": 1,
                                              "messages": [{"role": "user", "content": "hi"}]}, LOAD_TIMEOUT_S)
        yield served
    finally:
        stop(process)


def frame() -> np.ndarray:
    return np.random.default_rng(11).integers(0, 255, (120, 160, 3), np.uint8)


def node_params(server: Server, answer: str) -> dict[str, Any]:
    return {"backend": "remote", "model": server.models[answer], "max_image_age": 5.0,
            "backend_options": f"{{base_url: '{server.url}', max_tokens: {ANSWER_TOKENS}, timeout_s: 60.0}}"}


def test_server_ignores_logprobs(server):
    # What the backend has to cope with: an answer without the logprobs it asked for.
    _, jpeg = cv2.imencode(".jpg", frame())
    content = [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()}},
               {"type": "text", "text": "Is there a cup in the image? Answer yes or no."}]
    response = server.post("/chat/completions", {
        "model": server.models["Yes"], "messages": [{"role": "user", "content": content}],
        "temperature": 0, "max_tokens": 1, "logprobs": True, "top_logprobs": 5})
    [choice] = response["choices"]
    assert choice["message"]["content"] == "Yes"
    assert not choice.get("logprobs")


@pytest.mark.parametrize("answer, present", [("Yes", True), ("No", False)])
def test_presence_and_open_answers_through_the_node(ros, server, answer, present):
    node, client = start(node_params(server, answer))
    try:
        wait_answerable(client, frame())
        response = client.query("is there a cup or a red apple?")
        assert response.success, response.message
        assert [p.query for p in response.presence] == ["cup", "red apple"]
        for result in response.presence:
            # No logprobs from this server: the answer text decides, so confidence is exactly 1 or 0.
            assert result.present is present and result.confidence == (1.0 if present else 0.0)
            assert result.threshold == pytest.approx(0.5) and result.count == 0
        assert not response.localized

        described = client.query("what is in the bin?")
        assert described.success, described.message
        assert described.answer == answer * ANSWER_TOKENS  # max_tokens reached the server
        assert list(described.presence) == []
    finally:
        client.close()
        node.stop()
    assert "ERROR" not in node.output, node.output
