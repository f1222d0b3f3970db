"""What the page of `zeroseg serve` needs from the API, without Ray or a browser: its routes and files,
the `head` field, the palette and the timings in a 200 answer, one segmenter per head.

The page itself runs in a real browser in test_serve_page_browser.py.
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image
from test_serve_protocol import FakeSegmenter, _result, png

from zeroseg.infer.visualize import encode_label_png, voc_palette
from zeroseg.serve.model import ModelSpec
from zeroseg.serve.web import client
from zeroseg.serve.web.protocol import (
    RequestError,
    decode_labels,
    encode_result,
    parse_head,
    parse_segment_request,
    route,
    segment_batch,
)
from zeroseg.serve.web.static import PAGE_FILES, PAGE_HEADERS, page_file

BOTH = ("paper", "dense")


# ---- routes and files ---------------------------------------------------------------------------


def test_the_page_and_its_files_are_get_routes():
    for path in ("/", "", "/index.html", "/page.js", "/page.css", "/page.js/"):
        assert route("GET", path) == "page"
    with pytest.raises(RequestError) as info:
        route("POST", "/")
    assert info.value.status == 405
    with pytest.raises(RequestError) as info:
        route("GET", "/page.png")
    assert info.value.status == 404 and "GET / (the page)" in info.value.reason


def test_page_files_ship_in_the_package_and_load_nothing_from_elsewhere():
    html = page_file("/").body.decode()
    assert page_file("/index.html").body.decode() == html and page_file("/").content_type.startswith(
        "text/html"
    )
    assert 'src="page.js"' in html and 'href="page.css"' in html
    assert page_file("/page.js").content_type.startswith("text/javascript")
    assert page_file("/page.css").content_type.startswith("text/css")
    for path in PAGE_FILES:
        text = page_file(path).body.decode()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path  # no CDN, no network
        assert "@import" not in text
    # the Content-Security-Policy allows no inline code: every script and style is a file
    assert not re.search(r"<script(?![^>]*\bsrc=)", html) and "<style" not in html and " style=" not in html
    assert "default-src 'self'" in PAGE_HEADERS["Content-Security-Policy"]
    js = page_file("/page.js").body.decode()
    for needed in ('"metadata"', '"segment"', '"rle"', '"bg_thresh"', '"head"', "palette", "fractions"):
        assert needed in js, needed
    with pytest.raises(KeyError):
        page_file("/secret.py")


# ---- the request's head --------------------------------------------------------------------------


def test_head_field_defaults_to_the_papers_and_must_be_one_the_model_offers():
    assert parse_head(None) == parse_head("") == "paper"
    assert parse_head("Dense", BOTH) == "dense" and parse_head(" segments ", BOTH) == "paper"
    with pytest.raises(RequestError, match="exported engine runs only the head it was exported with") as info:
        parse_head("dense")
    assert info.value.status == 400
    with pytest.raises(RequestError, match="paper or dense"):
        parse_head("mask", BOTH)
    ct, body = client.multipart_body({"image": png(), "labels": "cat", "head": "dense"})
    request = parse_segment_request(ct, body, heads=BOTH)
    assert request.head == "dense"
    assert parse_segment_request(*client.json_body(png(), "cat"), heads=BOTH).head == "paper"
    with pytest.raises(RequestError) as info:
        parse_segment_request(ct, body)  # a server with one head (an engine)
    assert info.value.status == 400 and "\n" not in info.value.reason
    assert request.vocabulary_key() != parse_segment_request(*client.json_body(png(), "cat")).vocabulary_key()


# ---- the answer: palette, head, timings ----------------------------------------------------------


def test_answer_carries_the_palette_of_zeroseg_segments_label_pngs():
    labels = np.random.default_rng(1).integers(0, 4, (5, 9))
    names = ("background", "cat", "dog", "bird")
    body = encode_result(_result(labels, names), "rle", head="dense", segment_ms=12.34567)
    assert body["palette"] == voc_palette(4).tolist() and body["head"] == "dense"
    assert body["segment_ms"] == 12.346
    with Image.open(io.BytesIO(encode_label_png(labels, num_labels=4))) as written:  # zeroseg segment's file
        assert np.asarray(written.getpalette()[: 3 * 4]).reshape(4, 3).tolist() == body["palette"]
        rgb = np.asarray(written.convert("RGB"))
    np.testing.assert_array_equal(np.asarray(body["palette"])[decode_labels(body["labels"])], rgb)
    many = [f"c{i}" for i in range(1001)]  # 16-bit label PNGs have no palette: the overlay's colours
    assert encode_result(_result(np.zeros((2, 2)), many))["palette"] == voc_palette(1001).tolist()
    assert encode_result(_result(labels, names))["segment_ms"] is None


def test_a_batch_is_split_by_head_and_each_answer_names_its_head_and_time():
    heads = {"paper": FakeSegmenter(), "dense": FakeSegmenter()}
    requests = [
        parse_segment_request(*client.json_body(png(seed=i), "cat,dog", head=head), heads=BOTH)
        for i, head in enumerate(["paper", "dense", "segments", "dense", ""])
    ]
    answers = segment_batch(heads, requests)
    assert [len(c) for c in (heads["paper"].calls, heads["dense"].calls)] == [1, 1]
    assert [status for status, _ in answers] == [200] * 5
    assert [body["head"] for _, body in answers] == ["paper", "dense", "paper", "dense", "paper"]
    assert [body["batch_size"] for _, body in answers] == [3, 2, 3, 2, 3]
    assert all(body["segment_ms"] >= 0 and body["palette"][0] == [0, 0, 0] for _, body in answers)
    [(status, body)] = segment_batch({"paper": FakeSegmenter()}, requests[1:2])
    assert status == 400 and "head must be paper" in body["error"]
    [(status, body)] = segment_batch(FakeSegmenter(), requests[:1])  # one segmenter: the paper's head
    assert status == 200 and body["head"] == "paper"


# ---- one segmenter per head ----------------------------------------------------------------------


def test_a_checkpoint_offers_both_heads_sharing_one_model_and_an_engine_one(world, tmp_path):
    from zeroseg.export.core.manifest import BundleManifest, write_manifest
    from zeroseg.infer.segmenter import Segmenter

    for head in ("paper", "dense"):  # an engine offers the head its manifest records
        bundle = tmp_path / head
        bundle.mkdir()
        empty: dict = {}
        write_manifest(bundle, BundleManifest(empty, empty, empty, empty, empty, empty, empty, empty, empty,
                                              head=head))  # fmt: skip
        assert ModelSpec(engine=str(bundle)).heads() == (head,)
    spec = ModelSpec.from_options(world.checkpoint, None)
    assert spec.heads() == BOTH
    built = spec.build_heads()
    assert list(built) == list(BOTH)
    assert built["dense"].model is built["paper"].model
    assert built["dense"].vocabulary is built["paper"].vocabulary
    assert (built["paper"].head_mode, built["dense"].head_mode) == BOTH
    data = png(40, 56, seed=5)
    request = parse_segment_request(
        *client.json_body(data, "cat,dog", bg_thresh=0.3, head="dense"), heads=BOTH
    )
    [(status, body)] = segment_batch(built, [request])
    (want,) = Segmenter(world.checkpoint, head="dense")([request.image], [["cat"], ["dog"]], bg_thresh=0.3)
    assert status == 200 and body["head"] == "dense"
    np.testing.assert_array_equal(decode_labels(body["labels"]), want.labels)
    assert base64.b64decode(body["labels"]["data"]) == encode_label_png(want.labels, num_labels=3)
