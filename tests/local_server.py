"""A local HTTP server on 127.0.0.1 that stands in for a web service in tests (GitHub's OIDC token endpoint,
the public-IP service): it records each GET and answers what the test's `answer` says."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        server = self.server
        server.requests.append((self.path, self.headers.get("Authorization")))
        status, content_type, body = server.answer(server)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):  # keep the test output clean
        pass


class LocalServer(ThreadingHTTPServer):
    """Serves from a thread while used as a context manager. Each GET is recorded in `requests` as (path,
    Authorization header), then answered by `answer(server)` -> (status, content type, body): the answer can
    read `requests` (how many came) and any attribute a test sets on the server."""

    def __init__(self, answer: Callable[[LocalServer], tuple[int, str, str]]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer, self.requests = answer, []
        self.url = f"http://127.0.0.1:{self.server_port}"

    def __enter__(self) -> LocalServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
