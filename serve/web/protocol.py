"""The HTTP contract of `zeroseg serve`, as plain functions (no Ray: unit-testable on their own).

Request, `POST /segment`, either body:
    multipart/form-data   fields: `image` (the file), `labels`, optional `bg_thresh`, `format`
    application/json      {"image": "<base64>", "labels": "cat,dog|puppy" or ["cat", "dog|puppy"],
                           "bg_thresh": 0.3, "format": "png" | "rle"}
`labels` has `--labels`' syntax (commas between classes, `|` between synonyms); a JSON list holds one
class per item. Response (200):
    {"size": [W, H], "class_names": [...], "fractions": {name: share},
     "labels": {"format": "png", "bits": 8, "data": "<base64 label PNG>"}      (zeroseg segment's file)
            or {"format": "rle", "shape": [H, W], "values": [...], "lengths": [...]}  (row-major runs),
     "batch_size": n}                                     (requests segmented together with this one)
Errors are JSON `{"error": "<one line>", "status": code}`: 400 a bad field, 404 / 405 an unknown
route or method, 413 a body or image over its cap, 415 another content type.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import io
import json
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from zeroseg.classes import parse_class_names, parse_labels_option
from zeroseg.data.images import decode_rgb
from zeroseg.errors import ZerosegError
from zeroseg.infer.base import SegmenterBase
from zeroseg.infer.labels import LabelSpace, SegmentationResult
from zeroseg.infer.visualize import encode_label_png, label_ids_from_png, label_png_bits

FORMATS: tuple[str, ...] = ("png", "rle")
ROUTES: dict[str, str] = {"/segment": "POST", "/healthz": "GET", "/metadata": "GET"}


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

    def vocabulary_key(self) -> tuple:
        """Requests with equal keys are segmented in one call."""
        return (tuple(tuple(c) for c in self.classes), self.bg_thresh)


def route(method: str, path: str) -> str:
    """The route a request names ('segment', 'healthz', 'metadata').

    Raises:
        RequestError: 404 for an unknown path, 405 for the wrong method.
    """
    path = "/" + path.strip("/")
    if path not in ROUTES:
        raise RequestError(404, f"no route {path}: use POST /segment, GET /healthz or GET /metadata")
    if method.upper() != ROUTES[path]:
        raise RequestError(405, f"{path} takes {ROUTES[path]}, not {method.upper()}")
    return path[1:]


def error_body(error: RequestError) -> dict[str, Any]:
    """The JSON body of a refused request."""
    return {"error": error.reason, "status": error.status}


def parse_segment_request(content_type: str | None, body: bytes, limits: Limits = Limits()) -> SegmentRequest:
    """Parse and validate a `POST /segment` body.

    Args:
        content_type: the Content-Type header (multipart/form-data with its boundary, or JSON).
        body: the raw body.
        limits: the caps.

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
    )


def _json_fields(body: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(400, f"body is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(fields, dict):
        raise RequestError(400, 'JSON body must be an object: {"image": ..., "labels": ...}')
    return fields


def _multipart_fields(content_type: str, body: bytes) -> dict[str, Any]:
    if "boundary=" not in content_type:
        raise RequestError(400, "multipart body without a boundary in its Content-Type")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise RequestError(400, "malformed multipart body")
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
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
        elif isinstance(value, list) and all(isinstance(v, str | list) for v in value):
            classes = parse_class_names(
                [v.split("|") if isinstance(v, str) else [str(s) for s in v] for v in value]
            )
        else:
            raise RequestError(400, "labels must be a string or a list of class names")
        LabelSpace.build(classes, bg_prompt=False)
    except ZerosegError as exc:
        raise RequestError(400, f"labels: {str(exc).replace('--labels ', '')}") from None
    if len(classes) > limits.max_classes:
        raise RequestError(400, f"{len(classes)} classes is over the cap of {limits.max_classes}")
    return classes


def parse_bg_thresh(value: Any) -> float | None:
    """The optional background threshold, a number in [0, 1].

    Raises:
        RequestError: 400 for a non-number or a value outside [0, 1].
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RequestError(400, f"bg_thresh must be a number in [0, 1], got {value!r}")
    try:
        thresh = float(value)
    except (TypeError, ValueError):
        raise RequestError(400, f"bg_thresh must be a number in [0, 1], got {value!r}") from None
    if not math.isfinite(thresh) or not 0.0 <= thresh <= 1.0:
        raise RequestError(400, f"bg_thresh must be in [0, 1], got {value!r}")
    return thresh


def parse_format(value: Any) -> str:
    """The response's label format: png (default) or rle."""
    if value is None or value == "":
        return "png"
    text = str(value).strip().lower()
    if text not in FORMATS:
        raise RequestError(400, f"format must be png or rle, got {value!r}")
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


def encode_rle(labels: np.ndarray) -> dict[str, Any]:
    """Row-major run-length encoding of a label map: values and run lengths."""
    flat = np.asarray(labels).ravel()
    if flat.size == 0:
        return {"format": "rle", "shape": list(np.shape(labels)), "values": [], "lengths": []}
    starts = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    return {
        "format": "rle",
        "shape": list(np.shape(labels)),
        "values": flat[starts].tolist(),
        "lengths": lengths.tolist(),
    }


def encode_result(result: SegmentationResult, fmt: str = "png", *, batch_size: int = 1) -> dict[str, Any]:
    """The 200 body of a segmented image (see the module docstring).

    Args:
        result: the segmenter's result.
        fmt: png (base64 of the label PNG `zeroseg segment` writes) or rle.
        batch_size: how many requests were segmented in the same batch.

    Returns:
        The JSON-able response.
    """
    names = list(result.class_names)
    height, width = result.labels.shape
    if fmt == "rle":
        labels = encode_rle(result.labels)
    else:
        data = encode_label_png(result.labels, num_labels=len(names))
        labels = {
            "format": "png",
            "bits": label_png_bits(len(names)),
            "data": base64.b64encode(data).decode(),
        }
    return {
        "size": [width, height],
        "class_names": names,
        "fractions": result.fractions(),
        "labels": labels,
        "batch_size": int(batch_size),
    }


def decode_labels(labels: dict[str, Any]) -> np.ndarray:
    """The (H, W) class ids of a response's `labels` (either format): what a client does."""
    if labels.get("format") == "rle":
        values = np.asarray(labels["values"], dtype=np.int64)
        lengths = np.asarray(labels["lengths"], dtype=np.int64)
        return np.repeat(values, lengths).reshape(labels["shape"])
    with Image.open(io.BytesIO(base64.b64decode(labels["data"]))) as img:
        return label_ids_from_png(np.asarray(img))


def segment_batch(segmenter: SegmenterBase, requests: Sequence[SegmentRequest]) -> list[tuple[int, dict]]:
    """Segment a batch of requests: one call per vocabulary (and threshold); (status, body) per request.

    Args:
        segmenter: any `SegmenterBase` (its text cache holds each vocabulary's embeddings).
        requests: parsed requests, in arrival order.

    Returns:
        (200, `encode_result`) per request, whose `batch_size` is the number of requests segmented in
        the same call, or (400, `error_body`) for a group the segmenter refused.
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, request in enumerate(requests):
        groups[request.vocabulary_key()].append(i)
    answers: list[tuple[int, dict]] = [(500, {})] * len(requests)
    for indices in groups.values():
        first = requests[indices[0]]
        images = [requests[i].image for i in indices]
        try:
            results = segmenter(images, first.classes, bg_thresh=first.bg_thresh, batch_size=len(indices))
        except ZerosegError as exc:
            for i in indices:
                answers[i] = (400, error_body(RequestError(400, str(exc))))
            continue
        for i, result in zip(indices, results, strict=True):
            answers[i] = (200, encode_result(result, requests[i].format, batch_size=len(indices)))
    return answers
