"""Remote backend against a local OpenAI-style chat-completions server: requests, scoring, caching, errors."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from typing import Any, Iterator, Union

import cv2
import numpy as np
import pytest

from fake_chat_server import FakeServer, Recorded, Reply, completion

from vlm_perception.backends import remote
from vlm_perception.backends.base import Detection, default_threshold, localizes
from vlm_perception.backends.registry import create_backend
from vlm_perception.backends.remote import RemoteBackend
from vlm_perception.core.engine import PerceptionEngine
from vlm_perception.core.errors import BackendError, BackendLoadError

@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "BACKOFF_S", 0.01)


def frame(height: int = 40, width: int = 60) -> np.ndarray:
    """A read-only frame, red on the left half and blue on the right, as the engine hands frames over."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (200, 30, 30)
    image[:, width // 2:] = (20, 40, 220)
    image.flags.writeable = False
    return image


def backend_for(server_url: str, **options: Any) -> RemoteBackend:
    return RemoteBackend(base_url=server_url, model="served-vlm", **options)


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A URL whose port is bound but not listening, so connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


# the request


def test_detect_sends_a_yes_no_chat_request_with_the_image(server: FakeServer,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_KEY", "sk-test")
    backend = backend_for(server.url + "/", api_key_env="FLEET_KEY")
    assert server.requests == []  # nothing is sent before the first call
    image = frame(40, 60)
    backend.detect(image, ["a red cup"])
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-test"
    body = request.body
    assert body["model"] == "served-vlm"
    assert (body["temperature"], body["max_tokens"], body["logprobs"], body["top_logprobs"]) == (0, 1, True, 5)
    assert "a red cup" in request.prompt
    sent = request.image.astype(int)
    assert sent.shape == image.shape
    assert np.abs(sent[:, 5:25] - (200, 30, 30)).max() < 20  # colours and channel order survive JPEG
    assert np.abs(sent[:, 35:55] - (20, 40, 220)).max() < 20


def test_no_authorization_header_without_api_key_env(server: FakeServer) -> None:
    backend_for(server.url).detect(frame(), ["a cup"])
    assert "Authorization" not in server.requests[0].headers


def test_presence_prompt_option_places_the_label(server: FakeServer) -> None:
    backend_for(server.url, presence_prompt="Does the scene contain {}? Reply yes or no.").detect(frame(), ["a cup"])
    assert server.requests[0].prompt == "Does the scene contain a cup? Reply yes or no."


def test_answer_returns_the_stripped_free_form_answer(server: FakeServer) -> None:
    server.reply = lambda request: (200, completion("  Two red cups on the table.\n"))
    backend = backend_for(server.url, max_tokens=64)
    assert backend.answer(frame(), "What is on the table?") == "Two red cups on the table."
    body = server.requests[0].body
    assert server.requests[0].prompt == "What is on the table?"
    assert (body["temperature"], body["max_tokens"]) == (0, 64)
    assert "logprobs" not in body


# scoring


@pytest.mark.parametrize("top, expected", [
    ({" Yes": 0.6, "yes": 0.2, " No": 0.1, "Maybe": 0.05}, 0.8 / 0.9),  # case and leading space insensitive
    ({"No": 0.7, " NO": 0.2, "Yes": 0.05}, 0.05 / 0.95),
    ({"Yes": 0.9, "Sure": 0.05}, 1.0),
])
def test_confidence_is_p_yes_over_p_yes_plus_p_no(server: FakeServer, top: dict[str, float],
                                                  expected: float) -> None:
    server.reply = lambda request: (200, completion(next(iter(top)), top))
    [detection] = backend_for(server.url).detect(frame(), ["a cup"])
    assert detection.label == "a cup" and detection.box is None
    assert detection.score == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("content, expected", [("Yes", 1.0), (" yes.", 1.0), ("No, there is none.", 0.0),
                                               ("NO", 0.0)])
def test_confidence_is_binary_without_logprobs(server: FakeServer, content: str, expected: float) -> None:
    server.reply = lambda request: (200, completion(content))
    assert backend_for(server.url).detect(frame(), ["a cup"]) == [Detection("a cup", expected, None)]


def test_an_answer_that_is_neither_yes_nor_no_is_quoted(server: FakeServer) -> None:
    server.reply = lambda request: (200, completion("Nothing like that", {"Nothing": 0.9, "There": 0.1}))
    with pytest.raises(BackendError, match="'Nothing like that'.*presence_prompt"):
        backend_for(server.url).detect(frame(), ["a cup"])


def test_every_label_gets_its_own_score_in_order(server: FakeServer) -> None:
    probabilities = {"a cup": 0.9, "a dog": 0.2, "a key": 0.5}

    def reply(request: Recorded) -> Reply:
        p = next(v for k, v in probabilities.items() if k in request.prompt)
        return 200, completion("Yes", {"Yes": p, "No": 1.0 - p})

    server.reply = reply
    detections = backend_for(server.url).detect(frame(), ["a key", "a cup", "a key", "a dog"])
    assert [d.label for d in detections] == ["a key", "a cup", "a dog"]
    assert [d.score for d in detections] == pytest.approx([0.5, 0.9, 0.2])
    assert len(server.requests) == 3


def test_detect_with_no_labels_is_empty_and_sends_nothing(server: FakeServer) -> None:
    assert backend_for(server.url).detect(frame(), []) == []
    assert server.requests == []


@pytest.mark.parametrize("max_parallel", [1, 2])
def test_labels_are_asked_concurrently_up_to_max_parallel(server: FakeServer, max_parallel: int) -> None:
    server.delay_s = 0.1
    backend_for(server.url, max_parallel=max_parallel).detect(frame(), ["a", "b", "c", "d"])
    assert server.max_in_flight == max_parallel


def test_backend_declares_classify_only_and_a_half_threshold() -> None:
    backend = RemoteBackend(base_url="http://gpu-server:8000/v1", model="served-vlm")
    assert localizes(backend) is False and default_threshold(backend) == 0.5


def test_engine_decides_presence_from_remote_scores(server: FakeServer) -> None:
    server.reply = lambda request: (200, completion("Yes", {"Yes": 0.7, "No": 0.3}))
    backend = backend_for(server.url)
    result = PerceptionEngine(backend, "remote").evaluate(frame(), ["a cup"], default_threshold(backend))
    [presence] = result.presence
    assert presence.present and presence.confidence == pytest.approx(0.7) and result.targets == []


# caching


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per JPEG encode the backend makes."""
    calls: list[int] = []
    real = cv2.imencode

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(remote.cv2, "imencode", counting)
    return calls


def test_a_frame_is_encoded_once_and_its_scores_reused(server: FakeServer, encodes: list[int]) -> None:
    backend = backend_for(server.url)
    image = frame()
    backend.detect(image, ["a", "b"])
    backend.detect(image, ["b", "c"])
    backend.answer(image, "What is this?")
    assert len(encodes) == 1
    assert sorted(r.prompt for r in server.requests[:3]) == sorted(
        backend.presence_prompt.replace("{}", p) for p in "abc")  # "b" was asked once
    assert len(server.requests) == 4
    assert len({json.dumps(r.body["messages"][0]["content"][0]) for r in server.requests}) == 1
    backend.detect(frame(), ["a"])  # same pixels, new array: a new frame
    assert (len(encodes), len(server.requests)) == (2, 5)


def test_writeable_frames_are_not_cached(server: FakeServer, encodes: list[int]) -> None:
    backend = backend_for(server.url)
    image = np.array(frame())  # writeable: it could change in place between calls
    backend.detect(image, ["a"])
    backend.detect(image, ["a"])
    assert (len(encodes), len(server.requests)) == (2, 2)


def test_clear_caches_forgets_the_frame(server: FakeServer, encodes: list[int]) -> None:
    backend = backend_for(server.url)
    image = frame()
    backend.detect(image, ["a"])
    backend.clear_caches()
    backend.detect(image, ["a"])
    assert (len(encodes), len(server.requests)) == (2, 2)


# errors at call time


def test_refused_connection_names_the_url_and_attempts(refused_url: str) -> None:
    backend = backend_for(refused_url, retries=2)  # constructing makes no connection
    with pytest.raises(BackendError) as error:
        backend.detect(frame(), ["a cup"])
    message = str(error.value)
    assert refused_url in message and "refused" in message and "base_url" in message
    assert "after 3 attempts" in message


def test_timeout_names_timeout_s_and_is_retried(server: FakeServer) -> None:
    server.delay_s = 2.0
    backend = backend_for(server.url, timeout_s=0.2, retries=1)
    start = time.monotonic()
    with pytest.raises(BackendError, match=r"timeout_s=0\.2 s.*after 2 attempts"):
        backend.detect(frame(), ["a cup"])
    assert time.monotonic() - start < 1.5
    assert len(server.requests) == 2


def test_http_400_quotes_the_server_and_is_not_retried(server: FakeServer) -> None:
    server.reply = lambda request: (400, {"error": {"message": "image exceeds 4096 tokens",
                                                    "type": "invalid_request_error", "code": 400}})
    with pytest.raises(BackendError, match="HTTP 400 .*image exceeds 4096 tokens") as error:
        backend_for(server.url, retries=2).detect(frame(), ["a cup"])
    assert "attempt" not in str(error.value)
    assert len(server.requests) == 1


def test_http_404_suggests_checking_base_url_and_model(server: FakeServer) -> None:
    server.reply = lambda request: (404, {"error": {"message": "The model `served-vlm` does not exist."}})
    with pytest.raises(BackendError, match="HTTP 404 .*does not exist.*base_url.*model"):
        backend_for(server.url).answer(frame(), "What is this?")


@pytest.mark.parametrize("call", ["detect", "answer"])
def test_a_server_that_quotes_the_api_key_in_its_error_does_not_get_it_into_the_message(
        server: FakeServer, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    monkeypatch.setenv("FLEET_KEY", "sk-secret-1234")
    server.reply = lambda request: (401, {"error": {"message": f"invalid key {request.headers['Authorization']}"}})
    backend = backend_for(server.url, api_key_env="FLEET_KEY")
    with pytest.raises(BackendError, match="HTTP 401 .*invalid key Bearer <api key>; check the API key") as error:
        getattr(backend, call)(frame(), ["a cup"] if call == "detect" else "What is this?")
    assert "sk-secret-1234" not in str(error.value) and error.value.__cause__ is None


@pytest.mark.parametrize("status", [503, 429])
def test_overload_then_success_is_retried(server: FakeServer, status: int) -> None:
    replies = iter([(status, {"error": {"message": "busy"}}), (200, completion("Yes", {"Yes": 0.6, "No": 0.4}))])
    server.reply = lambda request: next(replies)
    [detection] = backend_for(server.url).detect(frame(), ["a cup"])
    assert detection.score == pytest.approx(0.6)
    assert len(server.requests) == 2


def test_http_500_every_time_gives_up_after_all_attempts(server: FakeServer) -> None:
    server.reply = lambda request: (500, b"Internal Server Error: CUDA out of memory\n" + b"x" * 1000)
    with pytest.raises(BackendError, match="HTTP 500 .*CUDA out of memory.*after 3 attempts") as error:
        backend_for(server.url, retries=2).detect(frame(), ["a cup"])
    assert len(str(error.value)) < 400 and "\n" not in str(error.value)  # the start of the body, one line
    assert len(server.requests) == 3


@pytest.mark.parametrize("body, missing", [
    (b"<html>502 Bad Gateway</html>", "not JSON"),
    ({"object": "chat.completion", "choices": []}, "without choices"),
    ({"detail": "queued"}, "without choices"),
    ({"choices": [{"index": 0}]}, "without a message"),
    (completion(None), "without text content"),
])
def test_malformed_responses_say_what_is_missing(server: FakeServer, body: Union[dict, bytes],
                                                 missing: str) -> None:
    server.reply = lambda request: (200, body)
    with pytest.raises(BackendError, match=missing):
        backend_for(server.url).answer(frame(), "What is this?")
    assert len(server.requests) == 1


def test_one_failing_label_fails_the_call(server: FakeServer) -> None:
    server.reply = lambda request: ((400, {"error": {"message": "bad label"}}) if "a dog" in request.prompt
                                    else (200, completion("Yes")))
    with pytest.raises(BackendError, match="bad label"):
        backend_for(server.url).detect(frame(), ["a cup", "a dog", "a key"])


def test_images_that_are_not_rgb_uint8_are_rejected(server: FakeServer) -> None:
    with pytest.raises(BackendError, match="RGB uint8"):
        backend_for(server.url).detect(np.zeros((10, 10), np.uint8), ["a cup"])
    assert server.requests == []


# errors at construction


def test_missing_api_key_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEET_KEY", raising=False)
    with pytest.raises(BackendLoadError, match="FLEET_KEY"):
        RemoteBackend(base_url="http://gpu-server:8000/v1", model="served-vlm", api_key_env="FLEET_KEY")
    monkeypatch.setenv("FLEET_KEY", "")
    with pytest.raises(BackendLoadError, match="FLEET_KEY"):
        RemoteBackend(base_url="http://gpu-server:8000/v1", model="served-vlm", api_key_env="FLEET_KEY")


@pytest.mark.parametrize("options, named", [
    ({"model": ""}, "set model"),
    ({"base_url": ""}, "base_url"),
    ({"base_url": "gpu-server:8000/v1"}, "base_url"),
    ({"model_path": "/models/vlm"}, "model_path .* does not apply to the remote backend"),
    ({"device": "cuda"}, "device .* does not apply to the remote backend"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"retries": -1}, "retries"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"jpeg_quality": 101}, "jpeg_quality"),
    ({"max_parallel": 0}, "max_parallel"),
    ({"presence_prompt": "Is it there?"}, "presence_prompt"),
    ({"temperature": 0.7}, "temperature"),
])
def test_invalid_options_are_named(options: dict[str, Any], named: str) -> None:
    settings = {"base_url": "http://gpu-server:8000/v1", "model": "served-vlm", **options}
    with pytest.raises(BackendLoadError, match=named):
        RemoteBackend(**settings)


def test_registry_builds_the_remote_backend(server: FakeServer) -> None:
    backend = create_backend("remote", {"model": "served-vlm", "model_path": "", "device": "auto",
                                        "base_url": server.url, "timeout_s": 5})
    assert isinstance(backend, RemoteBackend) and backend.timeout_s == 5.0


def test_the_module_does_not_import_torch() -> None:
    code = "import sys, vlm_perception.backends.remote; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
