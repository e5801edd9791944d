"""A fake Azure Resource Manager: a requests adapter that answers from a table and records every request, under
azure-core's real RequestsTransport, so that each request takes the pipeline (auth, retry, LRO polling) it
takes against management.azure.com. Used by infra.purge's and infra.e2e's tests."""

from __future__ import annotations

import io
import json
import time
from typing import NamedTuple
from urllib.parse import parse_qs, urlparse

import requests
import urllib3
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport

TOKEN = "fake-token"


class FakeCredential:
    def get_token(self, *scopes, **kwargs):
        return AccessToken(TOKEN, int(time.time()) + 3600)


def fake_response(request, status: int, content: bytes, headers: dict | None = None) -> requests.Response:
    """A response as requests makes it from the wire (azure-core reads `raw` as well as `content`)."""
    response = requests.Response()
    response.status_code, response.url, response.request, response.reason = status, request.url, request, "fake"
    response.headers.update({"Content-Type": "application/json", **(headers or {})})
    response._content = content
    response.raw = urllib3.HTTPResponse(io.BytesIO(content), preload_content=False)
    return response


class Call(NamedTuple):
    method: str
    path: str
    query: dict  # parse_qs: each parameter's list of values
    authorization: str | None


class FakeArm(requests.adapters.BaseAdapter):
    """Answers (method, path) from `routes`: one answer for every call, or a list of answers, one per call
    (the last one repeats). An answer is a JSON body (HTTP 200), or (status, body), or (status, body, headers);
    a body of None answers no content. A request with no route gets ARM's 404 ResourceNotFound."""

    def __init__(self, routes: dict):
        super().__init__()
        # copies: a list of answers is used up as the calls come, and the caller's table may be shared
        self.routes = {route: list(answer) if isinstance(answer, list) else answer for route, answer in routes.items()}
        self.calls: list[Call] = []

    def send(self, request, **kwargs):
        url = urlparse(request.url)
        self.calls.append(Call(request.method, url.path, parse_qs(url.query), request.headers.get("Authorization")))
        route = (request.method, url.path)
        if route not in self.routes:
            answer = (404, {"error": {"code": "ResourceNotFound", "message": f"{url.path} not found"}})
        elif isinstance(answer := self.routes[route], list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        status, body, headers = (*answer, {})[:3] if isinstance(answer, tuple) else (200, answer, {})
        return fake_response(request, status, b"" if body is None else json.dumps(body).encode(), headers)

    def close(self):
        pass

    def transport(self) -> RequestsTransport:
        """azure-core's own transport, over this fake."""
        session = requests.Session()
        session.mount("https://", self)
        return RequestsTransport(session=session)

    def writes(self) -> list[tuple[str, str]]:
        return [(call.method, call.path) for call in self.calls if call.method != "GET"]

    def paths(self, method: str = "GET") -> list[str]:
        return [call.path for call in self.calls if call.method == method]
