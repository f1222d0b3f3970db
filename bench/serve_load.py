"""`zeroseg-bench serve`: load and faults against `zeroseg serve` on 127.0.0.1.

N client threads (at most 16) send requests for T seconds (at most 120): good ones, cycling through K
generated images whose expected labels were computed beforehand by a local segmenter of the same
model, and, every `malformed_every`-th request, a malformed one (not an image, no classes, bg_thresh
out of range, bad JSON, a wrong content type, an unknown route, a body over the cap). Clients retry
connection errors and 500/502/503/504 (a dead replica, a full queue) with a bounded backoff. Optionally
one replica is killed mid-run (`ray.kill` on its actor). The result counts requests/s, p50/p99
latency (client-visible, retries included), the batch sizes the server reports, and the invariants:
no good request lost or answered wrongly, every malformed one answered 4xx.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from zeroseg.errors import ZerosegError
from zeroseg.serve.model import ModelSpec
from zeroseg.serve.web import client
from zeroseg.serve.web.protocol import Limits, decode_labels

MAX_CLIENTS, MAX_SECONDS = 16, 120.0
#: The malformed requests and the status each must get.
MALFORMED: dict[str, int] = {
    "not_an_image": 400, "no_labels": 400, "bad_bg_thresh": 400, "bad_json": 400, "wrong_content_type": 415,
    "unknown_route": 404, "body_over_cap": 413,
}  # fmt: skip


@dataclass
class ServeLoadSettings:
    """What `zeroseg-bench serve` runs."""

    checkpoint: str | None = "bundled"
    engine: str | None = None
    precision: str = "fp32"
    url: str | None = None  # target a running server instead of starting one
    ray: str = "local"
    port: int = 8000
    replicas: int = 2
    max_batch: int = 8
    batch_wait_ms: float = 10.0
    clients: int = 4
    seconds: float = 10.0
    images: int = 8
    image_size: tuple[int, int] = (96, 128)  # (height, width)
    labels: str = "red,green,blue,yellow"
    kill_replica: bool = False
    malformed_every: int = 5
    retries: int = 8
    timeout_s: float = 30.0
    seed: int = 0

    def validate(self) -> ServeLoadSettings:
        """One-line errors for values out of range."""
        if not 1 <= self.clients <= MAX_CLIENTS:
            raise ZerosegError(f"--clients must be in 1..{MAX_CLIENTS}, got {self.clients}")
        if not 0 < self.seconds <= MAX_SECONDS:
            raise ZerosegError(f"--seconds must be in (0, {MAX_SECONDS:g}], got {self.seconds}")
        if not 1 <= self.images <= 64:
            raise ZerosegError(f"--images must be in 1..64, got {self.images}")
        if not 0 <= self.retries <= 20:
            raise ZerosegError(f"--retries must be in 0..20, got {self.retries}")
        if self.malformed_every < 0:
            raise ZerosegError(
                f"--malformed-every must be zero (none) or positive, got {self.malformed_every}"
            )
        if self.url is not None and not self.url.startswith("http://"):
            raise ZerosegError(f"--url must be http://HOST:PORT, got {self.url!r}")
        return self


def make_images(count: int, size_hw: tuple[int, int], seed: int) -> list[bytes]:
    """`count` smooth random pictures as PNG bytes (every request for input i sends the same bytes);
    sizes that cannot fit are refused first (`check_image_budget`)."""
    from zeroseg.bench.common import check_image_budget

    check_image_budget(size_hw, count)
    rng = np.random.default_rng(seed)
    height, width = size_hw
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, (max(1, height // 12), max(1, width // 12), 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize((width, height), Image.BILINEAR).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def expected_labels(spec: ModelSpec, images: list[bytes], labels: str) -> list[np.ndarray]:
    """The labels a local segmenter of `spec` gives each image (what every answer must equal)."""
    from zeroseg.serve.web.protocol import decode_image, parse_labels

    segmenter = spec.build()
    classes = parse_labels(labels)
    return [segmenter([decode_image(data)], classes)[0].labels for data in images]


def malformed_request(kind: str, image: bytes, labels: str, cap: int) -> tuple[str, str, bytes]:
    """(path, content type, body) of a malformed request of `kind`."""
    if kind == "not_an_image":
        return ("/segment", *client.json_body(b"this is not an image", labels))
    if kind == "no_labels":
        return ("/segment", *client.multipart_body({"image": image, "labels": ""}))
    if kind == "bad_bg_thresh":
        return ("/segment", *client.json_body(image, labels, bg_thresh=1.5))
    if kind == "bad_json":
        return "/segment", "application/json", b'{"image": "abc", labels'
    if kind == "wrong_content_type":
        return "/segment", "text/plain", image
    if kind == "unknown_route":
        return ("/segmentation", *client.json_body(image, labels))
    return ("/segment", *client.json_body(image + b"\0" * (cap + 1), labels))


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.batch_sizes: Counter[int] = Counter()
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []

    def add(self, key: str, n: int = 1, failure: str | None = None) -> None:
        with self.lock:
            self.counts[key] += n
            if failure is not None and len(self.failures) < 20:
                self.failures.append(failure)


def _send(url: str, path: str, content_type: str, body: bytes, settings: ServeLoadSettings, stats: _Stats):
    """One request with the bounded retry; the final reply or the last connection error (a string)."""
    last: client.Reply | str = "not sent"
    for attempt in range(settings.retries + 1):
        if attempt:
            stats.add("retries")
            time.sleep(min(1.0, 0.05 * 2**attempt))
        try:
            last = client.post(url, path, content_type, body, timeout=settings.timeout_s)
        except (OSError, client.http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
            continue
        if last.status not in client.RETRY_STATUSES:
            return last
    return last


def _client_loop(url, settings, bodies, expected, names, counter, deadline, stats, cap) -> None:
    kinds = [k for k in MALFORMED if k != "body_over_cap" or cap <= 8 * 2**20]
    while time.perf_counter() < deadline:
        n = next(counter)
        if settings.malformed_every and n % settings.malformed_every == settings.malformed_every - 1:
            kind = kinds[(n // settings.malformed_every) % len(kinds)]
            reply = _send(url, *malformed_request(kind, bodies[0][2], settings.labels, cap), settings, stats)
            ok = isinstance(reply, client.Reply) and reply.status == MALFORMED[kind] and reply.is_json
            ok = ok and bool(reply.body.get("error"))
            stats.add("malformed")
            if not ok:
                status = reply.status if isinstance(reply, client.Reply) else reply
                stats.add("malformed_not_refused", failure=f"{kind}: got {status}, want {MALFORMED[kind]}")
            continue
        i = n % len(bodies)
        content_type, body, _ = bodies[i]
        start = time.perf_counter()
        reply = _send(url, "/segment", content_type, body, settings, stats)
        took = time.perf_counter() - start
        stats.add("good")
        if not isinstance(reply, client.Reply) or reply.status != 200:
            why = reply if isinstance(reply, str) else f"status {reply.status}: {str(reply.body)[:120]}"
            stats.add("lost", failure=f"input {i}: {why}")
            continue
        labels = decode_labels(reply.body["labels"])
        if reply.body["class_names"] != names or not np.array_equal(labels, expected[i]):
            diff = float(np.mean(labels != expected[i])) if labels.shape == expected[i].shape else 1.0
            stats.add("wrong", failure=f"input {i}: labels differ on {diff:.2%} of the pixels")
        with stats.lock:
            stats.latencies.append(took)
            stats.batch_sizes[int(reply.body.get("batch_size", 0))] += 1


def run_serve_load(settings: ServeLoadSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the load (and fault) test; the JSON-able result.

    Args:
        settings: what to run (`ServeLoadSettings.validate`d).
        log: progress lines.

    Returns:
        Settings, environment, requests/s, latency percentiles, batch sizes and the invariant counts.

    Raises:
        ZerosegError: bad settings, the server unreachable, or --kill-replica without Ray connected.
    """
    from zeroseg.bench.env import collect_env, mark_end

    settings.validate()
    spec = ModelSpec.from_options(settings.checkpoint, settings.engine, precision=settings.precision)
    images = make_images(settings.images, settings.image_size, settings.seed)
    log(f"expected labels of {len(images)} inputs from a local segmenter")
    expected = expected_labels(spec, images, settings.labels)
    env = collect_env()
    if settings.url is not None:
        return _measure(settings, settings.url, images, expected, env, log, started=False) | {
            "env": mark_end(env)
        }
    from zeroseg.serve.cluster import connected

    with connected(settings.ray):
        from zeroseg.serve.web.app import start_server, stop_server

        log(f"starting {settings.replicas} replica(s) on 127.0.0.1:{settings.port}")
        url = start_server(
            spec, port=settings.port, replicas=settings.replicas, max_batch=settings.max_batch,
            batch_wait_ms=settings.batch_wait_ms, limits=Limits(max_body_bytes=2**20),
        )  # fmt: skip
        try:
            result = _measure(settings, url, images, expected, env, log, started=True)
        finally:
            stop_server()
    return result | {"env": mark_end(env)}


def _measure(settings, url, images, expected, env, log, *, started: bool) -> dict[str, Any]:
    try:
        meta = client.request(url, "GET", "/metadata", timeout=settings.timeout_s)
    except OSError as exc:
        raise ZerosegError(f"no server answers at {url} ({exc}); start zeroseg serve or drop --url") from None
    if meta.status != 200 or not meta.is_json:
        raise ZerosegError(f"{url}/metadata answered {meta.status}: is this a zeroseg server?")
    cap = int(meta.body["limits"]["max_body_bytes"])
    kill = _killer(settings) if settings.kill_replica else None
    names = ["background", *[c.split("|")[0].strip() for c in settings.labels.split(",")]]
    bodies = []
    for i, data in enumerate(images):  # alternate the two request encodings
        if i % 2:
            bodies.append((*client.json_body(data, settings.labels), data))
        else:
            bodies.append((*client.multipart_body({"image": data, "labels": settings.labels}), data))
    stats, counter = _Stats(), itertools.count()
    for ct, body, _ in bodies:  # warm-up: each replica's text cache, not counted
        client.post(url, "/segment", ct, body, timeout=settings.timeout_s)
    log(f"{settings.clients} clients for {settings.seconds:g} s against {url}")
    start = time.perf_counter()
    deadline = start + settings.seconds
    threads = [
        threading.Thread(target=_client_loop, args=(url, settings, bodies, expected, names, counter, deadline,
                                                    stats, cap), daemon=True)
        for _ in range(settings.clients)
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    killed = kill(start) if kill is not None else None
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    lat = np.asarray(stats.latencies) * 1000.0
    counts = stats.counts
    answered = counts["good"] - counts["lost"] + counts["malformed"]
    return {
        "schema": "zeroseg-bench/serve/v1",
        "command": "serve",
        "settings": asdict(settings),
        "url": url,
        "server_started_by_bench": started,
        "server": meta.body,
        "seconds": elapsed,
        "requests": counts["good"] + counts["malformed"],
        "good_requests": counts["good"],
        "malformed_requests": counts["malformed"],
        "requests_per_s": answered / elapsed,
        "good_per_s": (counts["good"] - counts["lost"]) / elapsed,
        "latency_ms": {
            "p50": float(np.percentile(lat, 50)) if lat.size else None,
            "p99": float(np.percentile(lat, 99)) if lat.size else None,
            "mean": float(lat.mean()) if lat.size else None,
        },
        "batch_sizes": {str(k): v for k, v in sorted(stats.batch_sizes.items())},
        "mean_batch_size": (
            sum(k * v for k, v in stats.batch_sizes.items()) / max(1, sum(stats.batch_sizes.values()))
        ),
        "retries": counts["retries"],
        "errors": counts["lost"] + counts["wrong"] + counts["malformed_not_refused"],
        "lost": counts["lost"],
        "wrong": counts["wrong"],
        "malformed_not_refused": counts["malformed_not_refused"],
        "failures": stats.failures,
        "killed_replica": killed,
    }


def _killer(settings: ServeLoadSettings):
    """A function that, from the run's start, waits until mid-run and kills one replica."""
    from zeroseg.serve.cluster import import_ray

    if not import_ray().is_initialized():
        raise ZerosegError(
            "--kill-replica needs Ray connected: let the bench start the server, or pass --ray"
        )
    from zeroseg.serve.web.app import kill_replica, replica_actor_names

    def kill(start: float) -> dict[str, Any] | None:
        time.sleep(max(0.0, start + settings.seconds / 2 - time.perf_counter()))
        replicas = replica_actor_names()
        if not replicas:
            return None
        name, namespace = replicas[0]
        kill_replica(name, namespace)
        return {"name": name, "at_s": time.perf_counter() - start, "replicas_before": len(replicas)}

    return kill


def report_lines(result: dict[str, Any]) -> list[str]:
    """The summary a person reads."""
    lat = result["latency_ms"]
    p50 = "-" if lat["p50"] is None else f"{lat['p50']:.0f}"
    p99 = "-" if lat["p99"] is None else f"{lat['p99']:.0f}"
    killed = result["killed_replica"]
    return [
        f"{result['requests']} requests in {result['seconds']:.1f} s: {result['requests_per_s']:.2f} req/s "
        f"({result['good_per_s']:.2f} good/s), latency p50 {p50} ms, p99 {p99} ms",
        f"batch sizes {result['batch_sizes']} (mean {result['mean_batch_size']:.2f}), "
        f"retries {result['retries']}",
        f"lost {result['lost']}, wrong {result['wrong']}, "
        f"malformed not refused {result['malformed_not_refused']} of {result['malformed_requests']}"
        + (f"; killed {killed['name']} at {killed['at_s']:.1f} s" if killed else ""),
        *[f"failure: {f}" for f in result["failures"]],
    ]
