"""A local OpenAI-style chat-completions server for tests: records requests, answers as told."""
from __future__ import annotations

import base64
import json
import math
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union

import cv2
import numpy as np

Reply = tuple[int, Union[dict, bytes]]  # HTTP status, JSON body or raw bytes


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def prompt(self) -> str:
        return next(p["text"] for p in self.body["messages"][0]["content"] if p["type"] == "text")

    @property
    def image(self) -> np.ndarray:
        """The image part decoded back to RGB."""
        part = next(p for p in self.body["messages"][0]["content"] if p["type"] == "image_url")
        prefix, _, payload = part["image_url"]["url"].partition(",")
        assert prefix == "data:image/jpeg;base64"
        bgr = cv2.imdecode(np.frombuffer(base64.b64decode(payload), np.uint8), cv2.IMREAD_COLOR)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class FakeServer:
    """Records every request and answers with `reply(request)` after `delay_s`."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.reply: Callable[[Recorded], Reply] = lambda request: (200, completion("Yes"))
        self.delay_s = 0.0
        self.in_flight = self.max_in_flight = 0
        self.stopping = threading.Event()  # ends delays early at teardown
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self._httpd.server_port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", 0))
        request = Recorded(handler.path, dict(handler.headers), json.loads(handler.rfile.read(length)))
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.stopping.wait(self.delay_s)
            status, body = self.reply(request)
        finally:
            with self._lock:
                self.in_flight -= 1
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass

    def _handler_class(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def completion(content: Optional[str], top: Optional[dict[str, float]] = None) -> dict:
    """A chat completion; `top` maps first-token candidates to probabilities for its logprobs."""
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content},
                              "finish_reason": "stop"}
    if top is not None:
        candidates = [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in top.items()]
        choice["logprobs"] = {"content": [{"token": candidates[0]["token"], "logprob": candidates[0]["logprob"],
                                           "bytes": None, "top_logprobs": candidates}]}
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "served-vlm", "choices": [choice]}
