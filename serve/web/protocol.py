"""The HTTP contract of `zeroseg serve`, as plain functions (no Ray: unit-testable on their own).

Request, `POST /segment`, either body:
    multipart/form-data   fields: `image` (the file), `labels`, optional `bg_thresh`, `format`, `head`
    application/json      {"image": "<base64>", "labels": "cat,dog|puppy" or ["cat", "dog|puppy"],
                           "bg_thresh": 0.3, "format": "png" | "rle", "head": "paper" | "dense"}
`labels` has `--labels`' syntax (commas between classes, `|` between synonyms); a JSON list holds one
class per item. `head` is one of the heads `GET /metadata` lists (a checkpoint offers "paper", the
paper's, and "dense"; an exported engine only the one it was exported with; "segments" is accepted
for "paper"). Response (200):
    {"size": [W, H], "class_names": [...], "fractions": {name: share},
     "labels": {"format": "png", "bits": 8, "data": "<base64 label PNG>"}      (zeroseg segment's file)
            or {"format": "rle", "shape": [H, W], "values": [...], "lengths": [...]}  (row-major runs),
     "palette": [[R, G, B], ...]              (class id -> colour of zeroseg segment's PNGs: `voc_palette`)
     "head": "paper", "batch_size": n,                 (requests segmented together with this one)
     "segment_ms": t,                      (the segmenter's call for those requests, in milliseconds)
     "server_ms": t}               (the server, from the request's arrival to its answer; set by the app)
Errors are JSON `{"error": "<one line>", "status": code}`: 400 a bad field, 404 / 405 an unknown
route or method, 413 a body or image over its cap, 415 another content type.
`GET /` (and the page's own files, `zeroseg.serve.web.static`) is the page that calls this API.
The 200 body is built and read by `zeroseg.serve.web.answer` (its names are re-exported here).
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import functools
import io
import json
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image

from zeroseg.classes import parse_class_names, parse_labels_option
from zeroseg.data.images import decode_rgb
from zeroseg.errors import ZerosegError
from zeroseg.infer.base import SegmenterBase
from zeroseg.infer.factory import HEAD_ALIASES
from zeroseg.infer.labels import LabelSpace
from zeroseg.serve.web.answer import DEFAULT_HEAD, decode_labels, encode_result, encode_rle  # noqa: F401
from zeroseg.serve.web.static import PAGE_FILES

FORMATS: tuple[str, ...] = ("png", "rle")
ROUTES: dict[str, str] = {"/segment": "POST", "/healthz": "GET", "/metadata": "GET"}
#: What a request is, for the messages that refuse a malformed one.
REQUEST_SHAPE = (
    'send a JSON object {"image": "<base64>", "labels": "cat,dog" or ["cat", ["dog", "puppy"]], ...} '
    "or multipart/form-data"
)


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may carry."""

    max_body_bytes: int = 32 * 2**20
    max_pixels: int = 4096 * 4096
    max_classes: int = 1000


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = int(status)
        self.reason = " ".join(str(reason).split())


@dataclass(frozen=True)
class SegmentRequest:
    """A parsed, validated `POST /segment`."""

    image: Image.Image
    classes: list[list[str]]
    bg_thresh: float | None = None
    format: str = "png"
    head: str = DEFAULT_HEAD

    def vocabulary_key(self) -> tuple:
        """Requests with equal keys are segmented in one call."""
        return (tuple(tuple(c) for c in self.classes), self.bg_thresh, self.head)


def route(method: str, path: str) -> str:
    """The route a request names ('segment', 'healthz', 'metadata', or 'page': `GET /` and its files).

    Raises:
        RequestError: 404 for an unknown path, 405 for the wrong method.
    """
    path = "/" + path.strip("/")
    if path in PAGE_FILES:
        if method.upper() != "GET":
            raise RequestError(405, f"{path} takes GET, not {method.upper()}")
        return "page"
    if path not in ROUTES:
        raise RequestError(
            404, f"no route {path}: use POST /segment, GET /healthz, GET /metadata or GET / (the page)"
        )
    if method.upper() != ROUTES[path]:
        raise RequestError(405, f"{path} takes {ROUTES[path]}, not {method.upper()}")
    return path[1:]


def error_body(error: RequestError) -> dict[str, Any]:
    """The JSON body of a refused request."""
    return {"error": error.reason, "status": error.status}


_Parser = TypeVar("_Parser")


def _client_errors(parse: _Parser) -> _Parser:
    """Make any failure of a body parser a 4xx `RequestError`, never a 500.

    Parsing is a pure function of the request: whatever it fails on (a shape nobody foresaw), the same
    body fails again, so it is the client's error and must not be retried as a 5xx would be.
    """

    @functools.wraps(parse)  # type: ignore[arg-type]
    def parse_or_refuse(*args: Any, **kwargs: Any) -> Any:
        try:
            return parse(*args, **kwargs)  # type: ignore[operator]
        except RequestError:
            raise
        except MemoryError:
            raise RequestError(413, "request too large to parse: send a smaller image or body") from None
        except RecursionError:
            raise RequestError(400, f"request nested too deeply: {REQUEST_SHAPE}") from None
        except Exception as exc:  # noqa: BLE001 - see the docstring: a body's failure is the client's
            raise RequestError(400, f"malformed request ({type(exc).__name__}): {REQUEST_SHAPE}") from None

    return parse_or_refuse  # type: ignore[return-value]


@_client_errors
def parse_segment_request(
    content_type: str | None,
    body: bytes,
    limits: Limits = Limits(),
    *,
    heads: Sequence[str] = (DEFAULT_HEAD,),
) -> SegmentRequest:
    """Parse and validate a `POST /segment` body.

    Args:
        content_type: the Content-Type header (multipart/form-data with its boundary, or JSON).
        body: the raw body.
        limits: the caps.
        heads: the heads the server's model offers (`head` must name one; the first is the default).

    Returns:
        The request, its image decoded upright RGB (as `zeroseg segment` decodes files).

    Raises:
        RequestError: 413 (body or image over the cap), 415 (content type), 400 (anything else).
    """
    if len(body) > limits.max_body_bytes:
        raise RequestError(413, f"body of {len(body)} bytes is over the {limits.max_body_bytes}-byte cap")
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "application/json":
        fields = _json_fields(body)
    elif kind == "multipart/form-data":
        fields = _multipart_fields(content_type or "", body)
    else:
        raise RequestError(
            415, f"content type {kind or 'missing'}: send multipart/form-data or application/json"
        )
    if "image" not in fields or fields["image"] in (None, b"", ""):
        raise RequestError(400, "no image: send the image as the 'image' field")
    image = fields["image"]
    if isinstance(image, str):
        try:
            image = base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                400, "image is not valid base64 (JSON bodies carry the file base64-encoded)"
            ) from None
    if not isinstance(image, bytes):
        raise RequestError(400, "image must be a base64 string (JSON) or a file field (multipart)")
    classes = parse_labels(fields.get("labels"), limits)
    return SegmentRequest(
        image=decode_image(image, limits),
        classes=classes,
        bg_thresh=parse_bg_thresh(fields.get("bg_thresh")),
        format=parse_format(fields.get("format")),
        head=parse_head(fields.get("head"), heads),
    )


def _refuse_constant(name: str) -> Any:
    """`json.loads`' hook for NaN / Infinity / -Infinity, which are not JSON."""
    raise RequestError(400, f"body is not valid JSON: {name} is not a JSON number (send a finite number)")


def _json_fields(body: bytes) -> dict[str, Any]:
    """The fields of a JSON body; its nesting is bounded by the parser's own recursion guard (a
    request is at most 3 levels deep: object, labels list, synonyms list), every other field is checked
    by type where it is read."""
    try:
        fields = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise RequestError(400, f"JSON body nested too deeply: {REQUEST_SHAPE}") from None
    except (UnicodeDecodeError, ValueError) as exc:  # also over 4300 digits in one integer
        raise RequestError(400, f"body is not valid JSON ({type(exc).__name__}): {REQUEST_SHAPE}") from None
    if not isinstance(fields, dict):
        raise RequestError(400, 'JSON body must be an object: {"image": ..., "labels": ...}')
    return fields


def _multipart_fields(content_type: str, body: bytes) -> dict[str, Any]:
    if "boundary=" not in content_type:
        raise RequestError(400, "multipart body without a boundary in its Content-Type")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    try:  # the email parser recurses into nested multiparts and raises many types on odd headers
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        parts = list(message.iter_parts()) if message.is_multipart() else None
    except Exception as exc:  # noqa: BLE001 - any failure here is a malformed body (400)
        raise RequestError(400, f"malformed multipart body ({type(exc).__name__})") from None
    if parts is None:
        raise RequestError(400, "malformed multipart body")
    fields: dict[str, Any] = {}
    for part in parts:
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        data = part.get_payload(decode=True) or b""
        if name == "image":
            fields[name] = data
        else:
            try:
                fields[name] = data.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(400, f"field {name!r} is not UTF-8 text") from None
    return fields


def parse_labels(value: Any, limits: Limits = Limits()) -> list[list[str]]:
    """The class entries of a `labels` field ('cat,dog|puppy' or a JSON list).

    Raises:
        RequestError: 400 with the reason (none given, a class twice, 'background' misplaced, too many).
    """
    if value is None or (isinstance(value, str | list) and not value):
        raise RequestError(400, 'no classes: send labels, e.g. "cat,dog|puppy"')
    try:
        if isinstance(value, str):
            classes = parse_labels_option(value, None)
        elif isinstance(value, list) and all(
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v)) for v in value
        ):
            classes = parse_class_names([v.split("|") if isinstance(v, str) else v for v in value])
        else:
            raise RequestError(
                400, "labels must be a string or a list of class names (each a string or a list of synonyms)"
            )
        if any(not _is_text(name) for entry in classes for name in entry):
            raise RequestError(400, "labels: class names must be valid Unicode text")
        LabelSpace.build(classes, bg_prompt=False)
    except ZerosegError as exc:
        raise RequestError(400, f"labels: {str(exc).replace('--labels ', '')}") from None
    if len(classes) > limits.max_classes:
        raise RequestError(400, f"{len(classes)} classes is over the cap of {limits.max_classes}")
    return classes


def _is_text(name: str) -> bool:
    """Whether `name` is encodable text (JSON's \\ud800 escapes decode to lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: Any, width: int = 40) -> str:
    """`repr(value)` cut to `width` characters, for a one-line message."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def parse_bg_thresh(value: Any) -> float | None:
    """The optional background threshold, a number in [0, 1].

    Raises:
        RequestError: 400 for a non-number or a value outside [0, 1].
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise RequestError(400, f"bg_thresh must be a number in [0, 1], got {_shown(value)}")
    try:
        thresh = float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer too large for a float
        raise RequestError(400, f"bg_thresh must be a number in [0, 1], got {_shown(value)}") from None
    if not math.isfinite(thresh) or not 0.0 <= thresh <= 1.0:
        raise RequestError(400, f"bg_thresh must be in [0, 1], got {_shown(value)}")
    return thresh


def parse_format(value: Any) -> str:
    """The response's label format: png (default) or rle."""
    if value is None or value == "":
        return "png"
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in FORMATS:
        raise RequestError(400, f"format must be png or rle, got {_shown(value)}")
    return text


def parse_head(value: Any, heads: Sequence[str] = (DEFAULT_HEAD,)) -> str:
    """The head a request names, one of the model's `heads` (default: the first).

    Raises:
        RequestError: 400 for a head this model does not offer.
    """
    if value is None or value == "":
        return heads[0]
    text = str(value).strip().lower()
    text = HEAD_ALIASES.get(text, text)
    if text not in heads:
        why = " (an exported engine runs only the head it was exported with)" if len(heads) == 1 else ""
        raise RequestError(400, f"head must be {' or '.join(heads)} for this model{why}, got {value!r}")
    return text


def decode_image(data: bytes, limits: Limits = Limits()) -> Image.Image:
    """Image bytes -> upright RGB; the pixel cap is checked from the header before decoding.

    Raises:
        RequestError: 413 over the pixel cap, 400 not a readable image.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
    except Image.DecompressionBombError:
        raise RequestError(413, f"image is over the {limits.max_pixels}-pixel cap") from None
    except Exception:  # PIL raises many types for garbage (UnidentifiedImageError, SyntaxError, ...)
        raise RequestError(400, "image is not a readable image file (PNG, JPEG, WebP, BMP, TIFF)") from None
    if width * height > limits.max_pixels:
        raise RequestError(413, f"image of {width}x{height} pixels is over the {limits.max_pixels}-pixel cap")
    try:
        return decode_rgb(data, "image")
    except ZerosegError as exc:
        raise RequestError(400, str(exc)) from None


def segment_batch(
    segmenter: SegmenterBase | Mapping[str, SegmenterBase], requests: Sequence[SegmentRequest]
) -> list[tuple[int, dict]]:
    """Segment a batch of requests: one call per vocabulary (threshold, head); (status, body) per request.

    Args:
        segmenter: any `SegmenterBase` (its text cache holds each vocabulary's embeddings), or one per
            head the server offers ({"segments": ..., "dense": ...}).
        requests: parsed requests, in arrival order.

    Returns:
        (200, `encode_result`) per request, whose `batch_size` is the number of requests segmented in
        the same call, or (400, `error_body`) for a group the segmenter refused.
    """
    models = segmenter if isinstance(segmenter, Mapping) else {DEFAULT_HEAD: segmenter}
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, request in enumerate(requests):
        groups[request.vocabulary_key()].append(i)
    answers: list[tuple[int, dict]] = [(500, {})] * len(requests)
    for indices in groups.values():
        first = requests[indices[0]]
        images = [requests[i].image for i in indices]
        start = time.perf_counter()
        try:
            model = models.get(first.head)
            if model is None:
                raise ZerosegError(f"head must be {' or '.join(models)} for this model, got {first.head!r}")
            results = model(images, first.classes, bg_thresh=first.bg_thresh, batch_size=len(indices))
        except ZerosegError as exc:
            for i in indices:
                answers[i] = (400, error_body(RequestError(400, str(exc))))
            continue
        took = 1000.0 * (time.perf_counter() - start)
        for i, result in zip(indices, results, strict=True):
            answers[i] = (200, encode_result(
                result, requests[i].format, batch_size=len(indices), head=first.head, segment_ms=took
            ))  # fmt: skip
    return answers
