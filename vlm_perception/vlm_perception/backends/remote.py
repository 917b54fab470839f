"""Any OpenAI-compatible chat-completions server with image input (vLLM, SGLang, llama.cpp, Ollama, ...).

The model runs on the server; this backend only encodes frames and talks HTTP,
so it needs neither torch nor a GPU on the robot, and it makes no connection
until the first call (the robot may start before the server).

- Each frame is JPEG-encoded once (FrameCache) and sent as an `image_url` data
  URL next to the text. Scores already asked for a phrase on the same frame are
  reused instead of asked again.
- `detect` asks one yes/no question per label (`presence_prompt`), up to
  `max_parallel` at a time since fleet servers batch concurrent requests, with
  temperature 0, max_tokens 1 and the top logprobs of the answer token.
- `confidence` is P(yes) / (P(yes) + P(no)) over the top logprobs of the first
  answer token ("Yes", " yes", ... all count). Servers that ignore `logprobs`
  leave only the answer text, and then confidence is binary: 1.0 for an answer
  starting with yes, 0.0 for no. `default_threshold` is 0.5 for both.
- No boxes (`localizes = False`).
- Refused connections, timeouts, HTTP 429 and 5xx are retried `retries` times
  with a short backoff; every failure becomes a BackendError with the server's
  reason, so the node answers `success: false` and keeps serving.

Not thread-safe: the frame cache is shared state; the engine serialises calls.
"""
from __future__ import annotations

import base64
import functools
import http.client
import json
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn, Optional, Sequence, TypeVar

import cv2
import numpy as np

from ..core.errors import BackendError, BackendLoadError
from .base import Detection
from .caching import FrameCache
from .common import YES_NO_PROMPT, asked_phrases, check_image, option, reject_unknown

DEFAULT_PRESENCE_PROMPT = YES_NO_PROMPT
TOP_LOGPROBS = 5
BACKOFF_S = 0.25  # first retry's wait; doubles on each further retry
ERROR_BODY_CHARS = 200  # how much of a non-JSON error body a message quotes
_YES_NO = re.compile(r"\W*(yes|no)\b", re.IGNORECASE)


class _Retryable(Exception):
    """A failure worth another attempt (refused connection, timeout, HTTP 429 or 5xx)."""


F = TypeVar("F", bound=Callable[..., Any])


def _hiding_api_key(method: F) -> F:
    """Errors of `method` with the API key blanked out: a server may quote the request's key in
    its error text, and these messages go to service replies and log lines."""
    @functools.wraps(method)
    def wrapper(self: "RemoteBackend", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except BackendError as exc:
            if self._api_key and self._api_key in str(exc):
                raise BackendError(str(exc).replace(self._api_key, "<api key>")) from None
            raise
    return wrapper  # type: ignore[return-value]


@dataclass
class _Frame:
    data_url: str  # data:image/jpeg;base64,...
    scores: dict[str, float] = field(default_factory=dict)  # phrase -> confidence already asked


class RemoteBackend:
    """Asks a remote vision-language model yes/no questions per label; see the module docstring.

    Not thread-safe (see the module docstring).
    """

    localizes = False
    default_threshold = 0.5

    def __init__(
        self,
        *,
        base_url: str = "",
        model: str = "",
        api_key_env: str = "",
        timeout_s: float = 30.0,
        retries: int = 2,
        max_tokens: int = 128,
        jpeg_quality: int = 90,
        max_parallel: int = 4,
        presence_prompt: str = DEFAULT_PRESENCE_PROMPT,
        model_path: str = "",
        device: str = "auto",
        precision: str = "auto",
        runtime: str = "torch",
        **unknown: Any,
    ) -> None:
        reject_unknown("remote", unknown, "base_url, model, api_key_env, timeout_s, retries, max_tokens, "
                                          "jpeg_quality, max_parallel, presence_prompt")
        if model_path:
            raise BackendLoadError(f"model_path '{model_path}' does not apply to the remote backend: the server "
                                   "loads the model; leave model_path empty")
        if device != "auto":
            raise BackendLoadError(f"device '{device}' does not apply to the remote backend: the server chooses "
                                   "its device; leave device at 'auto'")
        if precision != "auto" or runtime != "torch":
            raise BackendLoadError(f"precision '{precision}' and runtime '{runtime}' do not apply to the remote "
                                   "backend: the server chooses how it runs the model; leave precision auto and "
                                   "runtime torch")
        self.url = _chat_url(base_url)
        self.model = option("model", model, str, bool,
                            "the model name the server serves (as its /v1/models lists it); set model")
        self._headers = {"Content-Type": "application/json"}
        # Only ever from the environment: parameters can be read by any peer on the ROS graph.
        self._api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        if api_key_env:
            if not self._api_key:
                raise BackendLoadError(f"api_key_env names environment variable {api_key_env}, which is not set "
                                       f"or empty; export {api_key_env} with the server's API key")
            self._headers["Authorization"] = f"Bearer {self._api_key}"
        self.timeout_s = option("timeout_s", timeout_s, float, lambda v: v > 0 and math.isfinite(v),
                                "a positive number of seconds")
        self.retries = option("retries", retries, int, lambda v: v >= 0, "0 or more")
        self.max_tokens = option("max_tokens", max_tokens, int, lambda v: v >= 1, "at least 1")
        self.jpeg_quality = option("jpeg_quality", jpeg_quality, int, lambda v: 1 <= v <= 100, "between 1 and 100")
        self.max_parallel = option("max_parallel", max_parallel, int, lambda v: v >= 1, "at least 1")
        self.presence_prompt = option("presence_prompt", presence_prompt, str, lambda v: "{}" in v,
                                      "a question containing {} where the label goes")
        self._frames: FrameCache[_Frame] = FrameCache()

    @_hiding_api_key
    def detect(self, image: np.ndarray, labels: Sequence[str]) -> list[Detection]:
        """One Detection per distinct label, without a box; confidence as the module docstring says.

        Pass the same read-only array again to reuse its JPEG and the scores already asked.
        """
        phrases = asked_phrases(image, labels)
        if not phrases:
            return []
        frame = self._frames.get_or_compute(image, self._encode)
        missing = [p for p in phrases if p not in frame.scores]
        if len(missing) > 1 and self.max_parallel > 1:
            with ThreadPoolExecutor(min(self.max_parallel, len(missing)), thread_name_prefix="remote-vlm") as pool:
                futures = [pool.submit(self._presence, frame.data_url, p) for p in missing]
                try:
                    scores = [f.result() for f in futures]
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)  # do not send what is no longer needed
                    raise
        else:
            scores = [self._presence(frame.data_url, p) for p in missing]
        frame.scores.update(zip(missing, scores))
        return [Detection(p, frame.scores[p], None) for p in phrases]

    @_hiding_api_key
    def answer(self, image: np.ndarray, question: str) -> str:
        """The model's free-form answer to `question` about the image."""
        check_image(image)
        frame = self._frames.get_or_compute(image, self._encode)
        choice = self._chat(frame.data_url, question, max_tokens=self.max_tokens)
        return _content(choice, self.url).strip()

    def clear_caches(self) -> None:
        """Forget the cached frame and its scores."""
        self._frames.clear()

    def _encode(self, image: np.ndarray) -> _Frame:
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            height, width = image.shape[:2]
            raise BackendError(f"cannot JPEG-encode the {width}x{height} frame")
        return _Frame("data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii"))

    def _presence(self, data_url: str, phrase: str) -> float:
        choice = self._chat(data_url, self.presence_prompt.replace("{}", phrase), max_tokens=1,
                            logprobs=True, top_logprobs=TOP_LOGPROBS)
        score = _yes_probability(choice)
        if score is not None:
            return score
        text = _content(choice, self.url)
        match = _YES_NO.match(text)
        if match is None:
            raise BackendError(f"model '{self.model}' answered {text.strip()[:ERROR_BODY_CHARS]!r} to the "
                               f"yes/no question about '{phrase}'; set presence_prompt so it answers yes or no")
        return 1.0 if match.group(1).lower() == "yes" else 0.0

    def _chat(self, data_url: str, text: str, **params: Any) -> dict[str, Any]:
        """The first choice of a chat completion for one user message holding the image and `text`."""
        content = [{"type": "image_url", "image_url": {"url": data_url}}, {"type": "text", "text": text}]
        body = {"model": self.model, "messages": [{"role": "user", "content": content}], "temperature": 0, **params}
        response = self._post(json.dumps(body).encode("utf-8"))
        choices = response.get("choices") if isinstance(response, dict) else None
        if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
            raise BackendError(f"server at {self.url} sent a response without choices: "
                               f"{json.dumps(response)[:ERROR_BODY_CHARS]}")
        return choices[0]

    def _post(self, data: bytes) -> Any:
        """The decoded JSON response, retrying what may pass; BackendError otherwise."""
        for retry in range(self.retries):
            try:
                return self._post_once(data)
            except _Retryable:
                time.sleep(BACKOFF_S * 2 ** retry)
        try:
            return self._post_once(data)
        except _Retryable as exc:
            attempts = self.retries + 1
            raise BackendError(f"{exc}; gave up after {attempts} attempt{'s' if attempts > 1 else ''}") from exc

    def _post_once(self, data: bytes) -> Any:
        request = urllib.request.Request(self.url, data=data, headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code} from {self.url}: {_error_reason(exc)}"
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(reason) from exc
            raise BackendError(reason + _hint(exc.code)) from exc
        except urllib.error.URLError as exc:  # connecting failed; the reason says why
            self._raise_connection_error(exc.reason, exc)
        except (TimeoutError, ConnectionError) as exc:  # while waiting for or reading the response
            self._raise_connection_error(exc, exc)
        except http.client.HTTPException as exc:
            raise BackendError(f"server at {self.url} sent a malformed HTTP response ({type(exc).__name__})") from exc
        try:
            return json.loads(raw)
        except ValueError as exc:
            text = raw[:ERROR_BODY_CHARS].decode("utf-8", "replace")
            raise BackendError(f"server at {self.url} sent a response that is not JSON: {text!r}") from exc

    def _raise_connection_error(self, reason: object, exc: BaseException) -> NoReturn:
        if isinstance(reason, TimeoutError):
            raise _Retryable(f"no answer from {self.url} within timeout_s={self.timeout_s:g} s; "
                             "raise timeout_s or check the server's load") from exc
        if isinstance(reason, ConnectionRefusedError):
            raise _Retryable(f"connection to {self.url} refused; check base_url and that the server "
                             "is running") from exc
        if isinstance(reason, ConnectionError):
            raise _Retryable(f"connection to {self.url} lost ({type(reason).__name__}: {reason})") from exc
        raise BackendError(f"cannot reach {self.url} ({reason}); check base_url") from exc


def _chat_url(base_url: str) -> str:
    """{base_url}/chat/completions, or BackendLoadError for a base_url that is not an http(s) URL."""
    parts = urllib.parse.urlsplit(str(base_url))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BackendLoadError(f"option base_url={base_url!r} is invalid: set it to the server's OpenAI API root, "
                               "like http://gpu-server:8000/v1")
    return str(base_url).rstrip("/") + "/chat/completions"


def _content(choice: dict[str, Any], url: str) -> str:
    message = choice.get("message")
    if not isinstance(message, dict):
        raise BackendError(f"server at {url} sent a choice without a message: {json.dumps(choice)[:ERROR_BODY_CHARS]}")
    content = message.get("content")
    if not isinstance(content, str):
        raise BackendError(f"server at {url} sent a message without text content: "
                           f"{json.dumps(message)[:ERROR_BODY_CHARS]}")
    return content


def _yes_probability(choice: dict[str, Any]) -> Optional[float]:
    """P(yes) / (P(yes) + P(no)) from the first token's top logprobs; None when there are none to use."""
    logprobs = choice.get("logprobs")
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    first = tokens[0] if isinstance(tokens, list) and tokens and isinstance(tokens[0], dict) else {}
    yes = no = 0.0
    for candidate in first.get("top_logprobs") or []:
        try:
            word = str(candidate["token"]).strip().lower()
            probability = math.exp(float(candidate["logprob"]))
        except (KeyError, TypeError, ValueError, OverflowError):
            continue  # one malformed entry does not spoil the others
        if word == "yes":
            yes += probability
        elif word == "no":
            no += probability
    if not (yes + no > 0.0 and math.isfinite(yes + no)):
        return None
    return yes / (yes + no)


def _error_reason(exc: urllib.error.HTTPError) -> str:
    """The server's own error message: OpenAI-style JSON if it is there, else the start of the body."""
    try:
        text = exc.read().decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException):  # the body may be cut off along with the connection
        text = ""
    finally:
        exc.close()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        for found in (error.get("message") if isinstance(error, dict) else error, body.get("message"),
                      body.get("detail")):
            if isinstance(found, str) and found.strip():
                return _one_line(found, ERROR_BODY_CHARS * 2)
    return _one_line(text, ERROR_BODY_CHARS) or str(exc.reason)


def _one_line(text: str, limit: int) -> str:
    """`text` with its whitespace runs collapsed, cut at `limit` characters: fit for a log line or reply."""
    return " ".join(text.split())[:limit]


def _hint(status: int) -> str:
    if status in (401, 403):
        return "; check the API key that api_key_env names"
    if status == 404:
        return "; check base_url (usually ending in /v1) and model"
    return ""
