"""A minimal client of `zeroseg serve` (standard library only): what the load bench and the tests use.

Bodies are built here once (`multipart_body`, `json_body`) so that a load run sends exactly the same
bytes for an input every time, and `post` does one request with a timeout, reporting the status and the
parsed JSON (or the raw text of a non-JSON answer, such as Ray Serve's own 500 for a dead replica).
"""

from __future__ import annotations

import base64
import http.client
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: Statuses a client retries (with connection errors): the request did not complete on a replica.
RETRY_STATUSES: frozenset[int] = frozenset({500, 502, 503, 504})


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    body: Any  # the parsed JSON, or the text when it is not JSON
    headers: dict[str, str]

    @property
    def is_json(self) -> bool:
        """The body was JSON (every answer of the app is; the platform's own errors may not be)."""
        return isinstance(self.body, dict)


def multipart_body(fields: dict[str, str | bytes]) -> tuple[str, bytes]:
    """(content type, body) of a multipart/form-data request; bytes values are sent as files."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, bytes):
            head = f'Content-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
            head += "Content-Type: application/octet-stream\r\n\r\n"
            data = value
        else:
            head = f'Content-Disposition: form-data; name="{name}"\r\n\r\n'
            data = str(value).encode()
        parts.append(f"--{boundary}\r\n".encode() + head.encode() + data + b"\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


def json_body(image: bytes, labels: Any, **fields: Any) -> tuple[str, bytes]:
    """(content type, body) of a JSON request carrying the image base64-encoded."""
    payload = {"image": base64.b64encode(image).decode(), "labels": labels, **fields}
    return "application/json", json.dumps(payload).encode()


def post(url: str, path: str, content_type: str, body: bytes, *, timeout: float = 30.0) -> Reply:
    """POST `body` to `url` + `path` (raises OSError / http.client errors on a connection failure)."""
    return request(url, "POST", path, body=body, headers={"Content-Type": content_type}, timeout=timeout)


def request(
    url: str,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict | None = None,
    timeout: float = 30.0,
) -> Reply:
    """One HTTP request on a fresh connection; the reply with its body parsed as JSON when it is JSON."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        reply_headers = {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = raw.decode("utf-8", "replace")
    return Reply(response.status, parsed, reply_headers)
