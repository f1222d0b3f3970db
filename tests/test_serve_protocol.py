"""zeroseg.serve without Ray: request parsing and validation, responses, batching, data set sources."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeroseg.errors import ZerosegError
from zeroseg.infer.labels import SegmentationResult
from zeroseg.infer.visualize import encode_label_png
from zeroseg.serve.cluster import actor_cpus, check_address
from zeroseg.serve.dataset.sources import list_items, read_image
from zeroseg.serve.web import client
from zeroseg.serve.web.protocol import (
    Limits,
    RequestError,
    decode_labels,
    encode_result,
    encode_rle,
    parse_segment_request,
    route,
    segment_batch,
)


def png(h: int = 24, w: int = 32, seed: int = 0) -> bytes:
    """A small random RGB PNG."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ---- requests ---------------------------------------------------------------------------------


def test_multipart_and_json_bodies_parse_to_the_same_request():
    ct, body = client.multipart_body(
        {"image": png(), "labels": "cat, dog|puppy", "bg_thresh": "0.25", "format": "RLE"}
    )
    a = parse_segment_request(ct, body)
    b = parse_segment_request(*client.json_body(png(), ["cat", "dog|puppy"], bg_thresh=0.25, format="rle"))
    assert a.classes == b.classes == [["cat"], ["dog", "puppy"]]
    assert a.bg_thresh == b.bg_thresh == 0.25 and a.format == b.format == "rle"
    assert a.vocabulary_key() == b.vocabulary_key()
    np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))
    defaults = parse_segment_request(*client.json_body(png(), "cat"))
    assert defaults.bg_thresh is None and defaults.format == "png" and defaults.image.size == (32, 24)


def _json(**fields) -> tuple[str, bytes]:
    return "application/json", json.dumps(fields).encode()


IMAGE = json.loads(client.json_body(png(), "x")[1])["image"]


def _form(**fields) -> tuple[str, bytes]:
    return client.multipart_body({"image": png(), **fields})


BAD_REQUESTS = {
    "not an image": (client.json_body(b"GIF89a but not really", "cat"), 400, "not a readable image"),
    "bad base64": (_json(image="%%%", labels="cat"), 400, "base64"),
    "no image": (_json(labels="cat"), 400, "no image"),
    "image not a string": (_json(image=5, labels="cat"), 400, "base64 string"),
    "no labels": (_json(image=IMAGE), 400, "no classes"),
    "empty labels": (_form(labels=" "), 400, "no class"),
    "a class twice": (_json(image=IMAGE, labels="cat,Cat"), 400, "more than once"),
    "background not first": (_json(image=IMAGE, labels="cat,background"), 400, "background"),
    "labels not text": (_json(image=IMAGE, labels=5), 400, "labels must be"),
    "bg_thresh above 1": (_json(image=IMAGE, labels="cat", bg_thresh=1.5), 400, "[0, 1]"),
    "bg_thresh negative": (_form(labels="cat", bg_thresh="-0.1"), 400, "[0, 1]"),
    "bg_thresh not a number": (_json(image=IMAGE, labels="cat", bg_thresh="high"), 400, "number"),
    "bg_thresh nan": (_form(labels="cat", bg_thresh="nan"), 400, "[0, 1]"),
    "bg_thresh bool": (_json(image=IMAGE, labels="cat", bg_thresh=True), 400, "number"),
    "bad format": (_json(image=IMAGE, labels="cat", format="jpeg"), 400, "png or rle"),
    "bad json": (("application/json", b'{"image": '), 400, "not valid json"),
    "json not an object": (("application/json", b"[1, 2]"), 400, "object"),
    "wrong content type": (("text/plain", b"hello"), 415, "multipart/form-data or application/json"),
    "no content type": ((None, b"hello"), 415, "missing"),
    "multipart without boundary": (("multipart/form-data", b"x"), 400, "boundary"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_are_refused_with_a_status_and_a_one_line_reason(case):
    (content_type, body), status, fragment = BAD_REQUESTS[case]
    with pytest.raises(RequestError) as info:
        parse_segment_request(content_type, body)
    assert info.value.status == status, info.value.reason
    assert fragment.lower() in info.value.reason.lower() and "\n" not in info.value.reason


def _raw(text: str) -> tuple[str, bytes]:
    return "application/json", text.replace("IMG", IMAGE).encode()


def _multipart(raw: bytes, boundary: str = "b") -> tuple[str, bytes]:
    return f"multipart/form-data; boundary={boundary}", raw


_NESTED_MULTIPART = b"".join(
    b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(3000)
)

#: Bodies of every shape a client can get wrong; each must be a 4xx, never an exception (a 500).
MALFORMED_BODIES = {
    "nested arrays": ("application/json", b"[" * 100_000),
    "nested objects": ("application/json", b'{"a":' * 100_000),
    "nested labels": _raw('{"image": "IMG", "labels": ' + "[" * 50_000 + '"cat"' + "]" * 50_000 + "}"),
    "labels three deep": _raw('{"image": "IMG", "labels": [[["cat"]]]}'),
    "synonym an object": _raw('{"image": "IMG", "labels": [["cat", {"a": 1}]]}'),
    "synonym a number": _raw('{"image": "IMG", "labels": [["cat", 1]]}'),
    "labels an object": _raw('{"image": "IMG", "labels": {"cat": 1}}'),
    "labels a lone surrogate": _raw('{"image": "IMG", "labels": "ca\\ud800t"}'),
    "integer of 4000 digits": _raw('{"image": "IMG", "labels": "cat", "bg_thresh": ' + "9" * 4000 + "}"),
    "integer of 5000 digits": _raw('{"image": "IMG", "labels": "cat", "bg_thresh": ' + "9" * 5000 + "}"),
    "float overflow": _raw('{"image": "IMG", "labels": "cat", "bg_thresh": 1e999}'),
    "NaN literal": _raw('{"image": "IMG", "labels": "cat", "bg_thresh": NaN}'),
    "Infinity literal": _raw('{"image": "IMG", "labels": "cat", "bg_thresh": Infinity}'),
    "-Infinity in an unused field": _raw('{"image": "IMG", "labels": "cat", "x": [-Infinity]}'),
    "bg_thresh a list": _raw('{"image": "IMG", "labels": "cat", "bg_thresh": [0.5]}'),
    "bg_thresh an object": _raw('{"image": "IMG", "labels": "cat", "bg_thresh": {}}'),
    "format an object": _raw('{"image": "IMG", "labels": "cat", "format": {"png": 1}}'),
    "format a list": _raw('{"image": "IMG", "labels": "cat", "format": ["png"]}'),
    "image an object": _raw('{"image": {"data": "IMG"}, "labels": "cat"}'),
    "image a list": _raw('{"image": ["IMG"], "labels": "cat"}'),
    "image null": _raw('{"image": null, "labels": "cat"}'),
    "not UTF-8": ("application/json", b'{"image": "\xff\xfe", "labels": "cat"}'),
    "latin-1": ("application/json", '{"image": "IMG", "labels": "caf\u00e9"}'.encode("latin-1")),
    "empty": ("application/json", b""),
    "whitespace": ("application/json", b" \r\n "),
    "null": ("application/json", b"null"),
    "a string": ("application/json", b'"IMG"'),
    "truncated": _raw('{"image": "IMG", "labels": ["cat", '),
    "multipart nested 3000 deep": _multipart(_NESTED_MULTIPART, "b0"),
    "multipart empty boundary": _multipart(b"", ""),
    "multipart quote boundary": _multipart(b"x", '"'),
    "multipart field not UTF-8": _multipart(
        b'--b\r\nContent-Disposition: form-data; name="labels"\r\n\r\n\xff\r\n--b--\r\n'
    ),
    "multipart garbage disposition": _multipart(b'--b\r\nContent-Disposition: =;;;"\r\n\r\ncat\r\n--b--\r\n'),
    "multipart huge bg_thresh": _multipart(
        b'--b\r\nContent-Disposition: form-data; name="bg_thresh"\r\n\r\n' + b"9" * 5000 + b"\r\n--b--\r\n"
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALFORMED_BODIES))
def test_malformed_bodies_of_any_shape_are_4xx_never_an_exception(case):
    content_type, body = MALFORMED_BODIES[case]
    with pytest.raises(RequestError) as info:
        parse_segment_request(content_type, body)
    assert 400 <= info.value.status < 500 and info.value.reason and "\n" not in info.value.reason


def test_mutated_bodies_are_parsed_or_refused_with_a_4xx():
    """Truncations, byte flips and insertions of valid JSON and multipart bodies: a request or a 4xx."""
    rng = np.random.default_rng(0)
    valid = [
        client.json_body(png(8, 8), ["cat", ["dog", "puppy"]], bg_thresh=0.5, format="rle"),
        client.multipart_body({"image": png(8, 8), "labels": "cat,dog|puppy", "bg_thresh": "0.5"}),
    ]
    specials = [b"[", b"{", b"]", b"}", b'"', b"\\", b"\xff", b"\x00", b"NaN", b"1e999", b"--", b"\r\n"]
    for i in range(400):
        content_type, body = valid[i % 2]
        data = bytearray(body)
        at = int(rng.integers(0, len(data)))
        kind = i % 4
        if kind == 0:
            data = data[:at]
        elif kind == 1:
            data[at] = int(rng.integers(0, 256))
        else:
            data[at:at] = specials[int(rng.integers(0, len(specials)))] * int(rng.integers(1, 2000))
        try:
            parse_segment_request(content_type, bytes(data))
        except RequestError as exc:
            assert 400 <= exc.status < 500 and "\n" not in exc.reason, (i, exc.reason)


def test_an_unforeseen_failure_while_parsing_is_a_400_not_a_500(monkeypatch):
    from zeroseg.serve.web import protocol

    def broken(*args, **kwargs):
        raise KeyError("a parser bug")

    monkeypatch.setattr(protocol, "parse_labels", broken)
    with pytest.raises(RequestError) as info:
        parse_segment_request(*client.json_body(png(), "cat"))
    assert info.value.status == 400 and "KeyError" in info.value.reason


def test_caps_on_body_pixels_and_classes_are_413_and_400():
    ct, body = client.json_body(png(64, 64), "cat")
    with pytest.raises(RequestError) as info:
        parse_segment_request(ct, body, Limits(max_body_bytes=len(body) - 1))
    assert info.value.status == 413 and "cap" in info.value.reason
    with pytest.raises(RequestError) as info:
        parse_segment_request(ct, body, Limits(max_pixels=64 * 64 - 1))
    assert info.value.status == 413 and "64x64" in info.value.reason
    with pytest.raises(RequestError) as info:
        parse_segment_request(*client.json_body(png(), "a,b,c"), Limits(max_classes=2))
    assert info.value.status == 400 and "3 classes" in info.value.reason
    assert parse_segment_request(
        ct, body, Limits(max_body_bytes=len(body), max_pixels=64 * 64)
    ).image.size == (64, 64)


def test_routes_and_methods():
    assert route("POST", "/segment") == "segment" and route("get", "/healthz/") == "healthz"
    assert route("GET", "/metadata") == "metadata"
    for method, path, status in (("GET", "/segment", 405), ("POST", "/healthz", 405), ("GET", "/x", 404)):
        with pytest.raises(RequestError) as info:
            route(method, path)
        assert info.value.status == status


# ---- responses --------------------------------------------------------------------------------


def _result(labels: np.ndarray, names=("background", "cat", "dog")) -> SegmentationResult:
    return SegmentationResult(labels.astype(np.int32), tuple(names), np.zeros(0), np.zeros(0))


def test_png_response_carries_the_label_png_zeroseg_segment_writes_and_rle_round_trips():
    labels = np.random.default_rng(0).integers(0, 3, (7, 11))
    body = encode_result(_result(labels), "png", batch_size=3)
    assert body["size"] == [11, 7] and body["class_names"] == ["background", "cat", "dog"]
    assert body["batch_size"] == 3 and body["labels"]["bits"] == 8
    import base64

    assert base64.b64decode(body["labels"]["data"]) == encode_label_png(labels, num_labels=3)
    np.testing.assert_array_equal(decode_labels(body["labels"]), labels)
    rle = encode_result(_result(labels), "rle")["labels"]
    assert rle["shape"] == [7, 11] and sum(rle["lengths"]) == 77
    np.testing.assert_array_equal(decode_labels(rle), labels)
    json.dumps(body)  # JSON-able
    assert encode_rle(np.full((2, 3), 2)) == {"format": "rle", "shape": [2, 3], "values": [2], "lengths": [6]}
    many = np.arange(300 * 2).reshape(2, 300) % 300  # 16-bit label PNGs survive too
    names = ["background", *[f"c{i}" for i in range(299)]]
    np.testing.assert_array_equal(decode_labels(encode_result(_result(many, names))["labels"]), many)


class FakeSegmenter:
    """Records its calls; refuses the vocabulary 'bad'."""

    def __init__(self):
        self.calls = []

    def __call__(self, images, classes, *, bg_thresh=None, batch_size=8):
        self.calls.append((len(images), classes, bg_thresh))
        if classes[0][0] == "bad":
            raise ZerosegError("the model cannot name 'bad'")
        names = ("background", *(c[0] for c in classes))
        return [_result(np.zeros((im.height, im.width), dtype=np.int32), names) for im in images]


def test_a_batch_is_segmented_once_per_vocabulary_and_a_refused_group_fails_alone():
    requests = [
        parse_segment_request(*client.json_body(png(seed=i), labels, bg_thresh=thresh))
        for i, (labels, thresh) in enumerate(
            [("cat,dog", None), ("bad", None), ("cat,dog", None), ("cat,dog", 0.5), ("cat, dog", None)]
        )
    ]
    fake = FakeSegmenter()
    answers = segment_batch(fake, requests)
    assert sorted(c[0] for c in fake.calls) == [1, 1, 3]
    assert [status for status, _ in answers] == [200, 400, 200, 200, 200]
    assert [body.get("batch_size") for _, body in answers] == [3, None, 3, 1, 3]
    assert "cannot name" in answers[1][1]["error"] and answers[1][1]["status"] == 400


def test_a_segmented_request_equals_the_segmenter(world):
    from zeroseg.infer.segmenter import Segmenter

    segmenter = Segmenter(world.checkpoint)
    request = parse_segment_request(*client.json_body(png(40, 56, seed=3), "cat,dog|puppy", bg_thresh=0.3))
    [(status, body)] = segment_batch(segmenter, [request])
    (want,) = segmenter([request.image], [["cat"], ["dog", "puppy"]], bg_thresh=0.3)
    assert status == 200
    np.testing.assert_array_equal(decode_labels(body["labels"]), want.labels)
    assert body["fractions"] == want.fractions()


# ---- data set sources and cluster options -----------------------------------------------------


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_sources_folder_tars_and_list_files(tmp_path):
    (tmp_path / "f" / "sub").mkdir(parents=True)
    (tmp_path / "f" / "a.png").write_bytes(png(seed=1))
    (tmp_path / "f" / "sub" / "b.png").write_bytes(png(seed=2))
    (tmp_path / "f" / "notes.txt").write_text("not an image")
    items = list_items([str(tmp_path / "f")])
    assert [(i.id, i.out) for i in items] == [("a.png", "a"), ("sub/b.png", "sub/b")]
    assert items[0].source == str(tmp_path / "f" / "a.png")
    _tar(tmp_path / "s1.tar", {"x/c.png": png(seed=3), "readme.md": b"#"})
    _tar(tmp_path / "s2.tar", {"d.jpg": b"corrupt"})
    tars = list_items([str(tmp_path / "s*.tar")])
    assert [(i.id, i.out) for i in tars] == [("s1.tar::x/c.png", "s1/x/c"), ("s2.tar::d.jpg", "s2/d")]
    np.testing.assert_array_equal(
        np.asarray(read_image(tars[0])), np.asarray(Image.open(io.BytesIO(png(seed=3))))
    )
    with pytest.raises(ZerosegError, match="not a readable image"):
        read_image(tars[1])
    listing = tmp_path / "list.txt"
    listing.write_text(f"# images\nf/a.png\n{tmp_path / 'f' / 'sub' / 'b.png'}\n\n")
    listed = list_items([str(listing)])
    assert [(i.id, i.out) for i in listed] == [
        (str(tmp_path / "f" / "sub" / "b.png"), "sub/b"),
        ("f/a.png", "a"),
    ]


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: [str(d / "missing")], "not found"),
        (lambda d: [str(d / "nothing*.tar")], "no files match"),
        (lambda d: [], "no source"),
        (lambda d: [str(d / "empty")], "no images"),
        (lambda d: [str(d / "clash")], "same outputs"),
        (lambda d: [str(d / "one.png")], "is an image"),
        (lambda d: [str(d / "one.tar"), str(d / "clash")], "mixes"),
        (lambda d: [str(d / "clash"), str(d / "empty")], "one folder"),
        (lambda d: [str(d / "bad.tar")], "cannot index"),
        (lambda d: [str(d / "twice.txt")], "twice"),
    ],
)
def test_bad_sources_are_one_line_errors(tmp_path, make, fragment):
    (tmp_path / "empty").mkdir()
    (tmp_path / "clash").mkdir()
    (tmp_path / "clash" / "a.png").write_bytes(png())
    (tmp_path / "clash" / "a.jpg").write_bytes(png())
    (tmp_path / "one.png").write_bytes(png())
    _tar(tmp_path / "one.tar", {"a.png": png()})
    (tmp_path / "bad.tar").write_bytes(b"\x1f\x8b compressed, not a tar" * 40)
    (tmp_path / "twice.txt").write_text("one.png\none.png\n")
    with pytest.raises(ZerosegError) as info:
        list_items(make(tmp_path))
    assert fragment.lower() in str(info.value).lower() and "\n" not in str(info.value)


def test_ray_addresses_and_actor_shares():
    for ok in ("local", "auto", "ray://head:10001", "10.0.0.1:6379"):
        assert check_address(ok) == ok
    for bad in ("", "ray://head", "head:port", "ray://:1", "head:70000"):
        with pytest.raises(ZerosegError, match="--ray"):
            check_address(bad)
    assert actor_cpus(2, 1) == 1.0 and actor_cpus(2, 2) == 0.75  # two actors never take both CPUs
    assert actor_cpus(1, 64) == 0.05
    with pytest.raises(ZerosegError):
        actor_cpus(2, 0)
