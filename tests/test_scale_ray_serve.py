"""segment-dataset on a Ray actor pool and `zeroseg serve` on Ray Serve, on one loopback cluster.

One `ray.init` for the module (2 CPUs, no dashboard, 127.0.0.1 only, asserted: conftest's `cluster`
fixture), shut down at its end. Skipped when Ray is not installed (make test installs it).
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error
from PIL import Image
from test_segment_dataset import LABELS, check_equal_to_segment, make_folder

pytest.importorskip("ray", reason="Ray is not installed (pip install 'zeroseg[ray]')")

from zeroseg.serve.dataset.run import read_index, segment_dataset  # noqa: E402
from zeroseg.serve.model import ModelSpec  # noqa: E402
from zeroseg.serve.web import client  # noqa: E402
from zeroseg.serve.web.protocol import Limits, decode_labels  # noqa: E402

#: One cluster for the module: run it on one xdist worker (`--dist loadgroup`), Ray Serve's pydantic
#: deprecation warnings are Ray's own.
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.xdist_group("ray"),
    pytest.mark.slow,  # a Ray cluster and Serve start: ~40-55 s on 2 cores
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
CLASSES = [["cat"], ["dog", "puppy"], ["traffic light"]]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("ray_dataset") / "images"
    return root, make_folder(root)


@pytest.fixture(scope="module")
def ray_run(cluster, world, folder, tmp_path_factory):
    """One Ray run over the folder (2 actors, batches of 2); its first batch kills its actor."""
    root, _ = folder
    base = tmp_path_factory.mktemp("ray_out")
    marker = base / "crashed"
    spec = ModelSpec.from_options(world.checkpoint, None)
    summary = segment_dataset(
        spec, [str(root)], base / "out", CLASSES, bg_thresh=0.3, batch_size=2, ray_address="local", actors=2,
        progress=False, crash_once=str(marker),
    )  # fmt: skip
    return base / "out", summary, marker


def test_ray_run_writes_what_zeroseg_segment_writes(ray_run, folder, cli, world, tmp_path):
    out, summary, marker = ray_run
    root, ids = folder
    assert marker.exists()  # an actor died mid-batch; Ray restarted it and retried the batch
    assert (summary.total, summary.done, summary.skipped, summary.failed) == (5, 5, 0, 1)
    segmented = tmp_path / "segment"
    for rel in ids:
        args = ["segment", world.checkpoint, root / rel, "--labels", LABELS, "--bg-thresh", "0.3"]
        assert cli(*args, "--out", (segmented / rel).parent).code == 0
    check_equal_to_segment(out, segmented, ids)
    rows = read_index(out / "_zeroseg" / "index.jsonl")
    assert [r["id"] for r in rows] == sorted([*ids, "broken.png"])  # every image once, despite the retry
    [broken] = [r for r in rows if r["status"] != "ok"]
    assert broken["id"] == "broken.png" and "not a readable image" in broken["error"]


def test_ray_resume_redoes_only_the_deleted_output(ray_run, cli, folder, world, tmp_path):
    out, _, _ = ray_run
    root, _ = folder
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    want = (copy / "sub" / "photo_labels.png").read_bytes()
    (copy / "sub" / "photo_labels.png").unlink()
    kept = {p: p.stat().st_mtime_ns for p in copy.rglob("*_labels.png")}
    args = ["segment-dataset", root, "--out", copy, "--checkpoint", world.checkpoint, "--labels", LABELS]
    result = cli(*args, "--bg-thresh", "0.3", "--ray", "local", "--actors", "1", "--resume")
    assert result.code == 0, result.err
    assert "skipped 3 already complete" in result.out and "segmented 2 images" in result.out  # + broken.png
    assert (copy / "sub" / "photo_labels.png").read_bytes() == want
    assert all(p.stat().st_mtime_ns == m for p, m in kept.items())
    assert len(read_index(copy / "_zeroseg" / "index.jsonl")) == 5
    assert_one_line_error(cli(*args, "--ray", "local", "--resume"), "other classes")


# ---- zeroseg serve ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(cluster, world):
    from zeroseg.serve.web.app import start_server

    spec = ModelSpec.from_options(world.checkpoint, None)
    limits = Limits(max_body_bytes=256 * 1024, max_pixels=300 * 300)
    return start_server(spec, port=_free_port(), replicas=2, max_batch=4, batch_wait_ms=20, limits=limits)


def _png(h: int, w: int, seed: int) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, h // 6), max(1, w // 6), 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((w, h), Image.BILINEAR).save(buf, format="PNG")
    return buf.getvalue()


def test_healthz_and_metadata(server):
    assert server.startswith("http://127.0.0.1:")
    health = client.request(server, "GET", "/healthz")
    assert health.status == 200 and health.body["status"] == "ok"
    meta = client.request(server, "GET", "/metadata")
    assert meta.status == 200 and meta.body["backend"] == "torch (cpu)"
    assert (
        meta.body["limits"]["max_body_bytes"] == 256 * 1024 and meta.body["batching"]["max_batch_size"] == 4
    )
    assert meta.body["versions"]["ray"] and meta.body["model"]["checkpoint"].endswith("ckpt.pt")


def test_a_good_request_equals_the_segmenter(server, world):
    import io

    from zeroseg.infer.segmenter import Segmenter

    data = _png(45, 61, seed=7)
    (want,) = Segmenter(world.checkpoint)(
        [Image.open(io.BytesIO(data)).convert("RGB")], CLASSES, bg_thresh=0.3
    )
    form = client.post(
        server, "/segment", *client.multipart_body({"image": data, "labels": LABELS, "bg_thresh": "0.3"})
    )
    assert form.status == 200, form.body
    assert form.body["size"] == [61, 45] and form.body["class_names"] == list(want.class_names)
    np.testing.assert_array_equal(decode_labels(form.body["labels"]), want.labels)
    assert form.body["fractions"] == pytest.approx(want.fractions())
    assert int(form.headers["x-batch-size"]) == form.body["batch_size"] >= 1
    rle = client.post(server, "/segment", *client.json_body(data, LABELS, bg_thresh=0.3, format="rle"))
    assert rle.status == 200 and rle.body["labels"]["format"] == "rle"
    np.testing.assert_array_equal(decode_labels(rle.body["labels"]), want.labels)
    meta = [client.request(server, "GET", "/metadata").body for _ in range(4)]
    assert any(["cat", "dog", "traffic light"] in m["vocabularies"] for m in meta)


def _bad_requests(image: bytes) -> list[tuple[str, str, str, bytes, int]]:
    big = _png(320, 320, seed=1)
    return [
        ("not an image", "/segment", *client.json_body(b"not an image at all", "cat"), 400),
        ("no classes", "/segment", *client.multipart_body({"image": image, "labels": ""}), 400),
        ("bg_thresh outside [0, 1]", "/segment", *client.json_body(image, "cat", bg_thresh=-1), 400),
        ("bad format", "/segment", *client.json_body(image, "cat", format="gif"), 400),
        ("bad JSON", "/segment", "application/json", b"{", 400),
        ("wrong content type", "/segment", "text/plain", image, 415),
        ("over the pixel cap", "/segment", *client.json_body(big, "cat"), 413),
        ("body over the cap", "/segment", *client.json_body(image + bytes(300 * 1024), "cat"), 413),
        ("unknown route", "/segmentation", *client.json_body(image, "cat"), 404),
    ]


def test_bad_requests_get_4xx_with_a_reason_and_the_server_keeps_serving(server):
    image = _png(30, 40, seed=2)
    for name, path, content_type, body, status in _bad_requests(image):
        reply = client.post(server, path, content_type, body)
        assert reply.status == status, (name, reply.status, reply.body)
        assert reply.is_json and reply.body["error"] and "\n" not in reply.body["error"], name
    assert client.request(server, "GET", "/segment").status == 405
    assert client.post(server, "/segment", *client.json_body(image, "cat,dog")).status == 200


def test_load_with_a_replica_killed_and_malformed_requests(server, bench_cli, world, tmp_path):
    result_file = tmp_path / "serve.json"
    options = "--clients 3 --seconds 5 --images 4 --image-size 48x40 --kill-replica --malformed-every 3"
    args = [
        "--url",
        server,
        "--checkpoint",
        world.checkpoint,
        "--labels",
        "cat,dog,bird",
        "--json",
        result_file,
    ]
    result = bench_cli("serve", *args, *options.split())
    assert result.code == 0, result.out + result.err
    data = json.loads(result_file.read_text())
    assert data["lost"] == 0 and data["wrong"] == 0 and data["malformed_not_refused"] == 0
    assert data["good_requests"] > 0 and data["malformed_requests"] > 0
    assert data["killed_replica"] is not None and data["killed_replica"]["replicas_before"] == 2
    assert sum(data["batch_sizes"].values()) == data["good_requests"]
    assert data["latency_ms"]["p50"] > 0 and data["env"]["cpu"]
