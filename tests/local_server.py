"""A local HTTP server on 127.0.0.1 that stands in for a web service in tests (GitHub's OIDC token endpoint,
the public-IP service, a scoring endpoint under load): it records each GET or POST and answers what the
test's `answer` says."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps a connection open for a client that reuses it; Content-Length ends each answer
    protocol_version = "HTTP/1.1"
    # the headers and the body leave in two writes: with Nagle's algorithm the body waits for the client's
    # delayed ACK (40 ms on Linux), which a latency measurement would see
    disable_nagle_algorithm = True

    def do_GET(self):  # noqa: N802 (http.server's name)
        self._answer()

    def do_POST(self):  # noqa: N802
        self.server.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self._answer()

    def _answer(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Authorization")))
        server.connections.add(self.client_address)
        status, content_type, body = server.answer(server)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep the test output clean
        pass


class LocalServer(ThreadingHTTPServer):
    """Serves from a thread while used as a context manager. Each request is recorded in `requests` as (path,
    Authorization header), a POST's body in `bodies` and the client's address in `connections`, then answered
    by `answer(server)` -> (status, content type, body): the answer can read `requests` (how many came) and
    any attribute a test sets on the server."""

    def __init__(self, answer: Callable[[LocalServer], tuple[int, str, str]]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer, self.requests, self.bodies, self.connections = answer, [], [], set()
        self.url = f"http://127.0.0.1:{self.server_port}"

    def handle_error(self, request, client_address):
        # a client that hung up (one that timed out) is no failure of the stand-in; anything else is shown
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def __enter__(self) -> LocalServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
