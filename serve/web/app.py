"""`zeroseg serve`: the Ray Serve deployment behind `POST /segment`, `GET /healthz`, `GET /metadata`
and the page at `GET /` (`zeroseg.serve.web.static`).

Each replica builds one segmenter per head its model offers, sharing one model
(`ModelSpec.build_heads`); `@serve.batch` gathers concurrent requests (up to `max_batch`, waiting at
most `batch_wait_ms`) and `segment_batch` segments each vocabulary's requests in one call, on a
worker thread so that health checks keep answering. Text embeddings come
from the segmenter's own cache (one entry per vocabulary). Parsing, validation and encoding are the
plain functions of `zeroseg.serve.web.protocol`; this module only moves bytes in and JSON out.

The HTTP proxy binds 127.0.0.1 unless told otherwise. A replica that dies is replaced by Serve; the
requests it held fail with Serve's own 500 (not JSON), and a full queue answers 503: clients retry
both, with a bound (`zeroseg.serve.web.client.RETRY_STATUSES`). Importing this module imports Ray.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import platform
import time
from collections import OrderedDict
from dataclasses import asdict

from zeroseg.errors import ZerosegError
from zeroseg.serve.cluster import LOOPBACK, actor_cpus, check_port, cluster_cpus, import_ray
from zeroseg.serve.model import ModelSpec
from zeroseg.serve.web.protocol import (
    Limits,
    RequestError,
    error_body,
    parse_segment_request,
    route,
    segment_batch,
)
from zeroseg.serve.web.static import PAGE_HEADERS, page_file

import_ray()  # first: Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported
serve = importlib.import_module("ray.serve")

APP_NAME = "zeroseg"
DEPLOYMENT_NAME = "Segment"
#: Vocabularies listed by /metadata (the torch segmenter's text cache keeps as many).
VOCABULARIES_KEPT = 16


class SegmentServer:
    """One replica: a segmenter, the batcher and the three routes."""

    def __init__(
        self, spec: ModelSpec, limits: Limits, max_batch: int, batch_wait_s: float, threads: int
    ) -> None:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.spec = spec
        self.limits = limits
        self.segmenters = spec.build_heads(threads)
        self.segmenter = next(iter(self.segmenters.values()))
        self.threads = threads
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.batched.set_max_batch_size(max_batch)
        self.batched.set_batch_wait_timeout_s(batch_wait_s)
        self.vocabularies: OrderedDict[tuple, None] = OrderedDict()
        self.served = 0
        try:
            self.replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a replica (a direct unit test)
            self.replica = str(os.getpid())

    async def __call__(self, request):
        """Answer one HTTP request (a Starlette `Request`); a bad request is a 4xx answer, never an error."""
        from starlette.responses import JSONResponse, Response

        started = time.perf_counter()
        headers = {"X-Zeroseg-Replica": self.replica}
        try:
            kind = route(request.method, request.url.path)
            if kind == "page":
                page = page_file(request.url.path)
                return Response(page.body, media_type=page.content_type, headers={**headers, **PAGE_HEADERS})
            if kind == "healthz":
                return JSONResponse({"status": "ok", "replica": self.replica}, headers=headers)
            if kind == "metadata":
                return JSONResponse(self.metadata(), headers=headers)
            body = await read_body(request, self.limits.max_body_bytes)
            content_type = request.headers.get("content-type")
            parsed = await asyncio.to_thread(
                parse_segment_request, content_type, body, self.limits, heads=tuple(self.segmenters)
            )
            status, payload = await self.batched(parsed)
        except RequestError as exc:
            status, payload = exc.status, error_body(exc)
        if status == 200:
            headers["X-Batch-Size"] = str(payload["batch_size"])
            payload = {**payload, "server_ms": round(1000.0 * (time.perf_counter() - started), 3)}
        return JSONResponse(payload, status_code=status, headers=headers)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def batched(self, requests: list) -> list[tuple[int, dict]]:
        """The batch `@serve.batch` gathered, segmented on a worker thread."""
        for request in requests:
            self.vocabularies[request.vocabulary_key()] = None
            self.vocabularies.move_to_end(request.vocabulary_key())
        while len(self.vocabularies) > VOCABULARIES_KEPT:
            self.vocabularies.popitem(last=False)
        self.served += len(requests)
        return await asyncio.to_thread(segment_batch, self.segmenters, requests)

    def metadata(self) -> dict:
        """What `GET /metadata` answers: the model, backend, heads, vocabularies seen, limits, versions."""
        import importlib.metadata

        def version(dist: str) -> str | None:
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                return None

        vocabulary = getattr(self.segmenter, "vocabulary", None)
        return {
            "model": self.spec.describe(),
            "backend": self.spec.describe()["backend"],
            "heads": list(self.segmenters),
            "short_side": self.segmenter.short_side,
            "default_bg_thresh": self.segmenter.default_bg_thresh,
            "vocabularies": [[c[0] for c in key[0]] for key in self.vocabularies],
            "text_cache_misses": getattr(vocabulary, "misses", None),
            "batching": {"max_batch_size": self.max_batch, "batch_wait_ms": self.batch_wait_s * 1000.0},
            "limits": asdict(self.limits),
            "replica": self.replica,
            "threads": self.threads,
            "requests_served": self.served,
            "versions": {
                "python": platform.python_version(),
                **{d: version(d) for d in ("zeroseg", "ray", "torch", "onnxruntime", "numpy")},
            },
        }


async def read_body(request, cap: int) -> bytes:
    """The request body, refused (413) as soon as it passes `cap` bytes (Content-Length first)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap:
        raise RequestError(413, f"body of {int(length)} bytes is over the {cap}-byte cap")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise RequestError(413, f"body is over the {cap}-byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


def start_server(
    spec: ModelSpec,
    *,
    host: str = LOOPBACK,
    port: int = 8000,
    replicas: int = 1,
    max_batch: int = 8,
    batch_wait_ms: float = 10.0,
    limits: Limits = Limits(),
    cpus_per_replica: float | None = None,
    max_queued: int = 64,
) -> str:
    """Deploy the app on the connected Ray cluster and wait until it answers.

    Args:
        spec: the model every replica builds.
        host / port: where Serve's HTTP proxy listens (default loopback only).
        replicas: replica count; each gets a share of the cluster's CPUs unless `cpus_per_replica`.
        max_batch / batch_wait_ms: `@serve.batch`'s max_batch_size and batch_wait_timeout_s (in ms).
        limits: body, pixel and class caps.
        cpus_per_replica: CPUs reserved per replica (default: `actor_cpus`).
        max_queued: requests queued beyond the replicas' capacity before Serve answers 503.

    Returns:
        The base URL, e.g. http://127.0.0.1:8000.

    Raises:
        ZerosegError: a bad option, the port taken, or a replica that failed to start.
    """
    for value, option in ((replicas, "--replicas"), (max_batch, "--max-batch")):
        if value <= 0:
            raise ZerosegError(f"{option} must be positive, got {value}")
    if batch_wait_ms < 0:
        raise ZerosegError(f"--batch-wait-ms must be zero or positive, got {batch_wait_ms}")
    check_port(host, port)
    import_ray()
    cpus = cpus_per_replica if cpus_per_replica is not None else actor_cpus(cluster_cpus(), replicas)
    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
    deployment = serve.deployment(
        SegmentServer,
        name=DEPLOYMENT_NAME,
        num_replicas=replicas,
        ray_actor_options={"num_cpus": cpus},
        max_ongoing_requests=max(8, 2 * max_batch),
        max_queued_requests=max_queued,
    )
    app = deployment.bind(spec, limits, max_batch, batch_wait_ms / 1000.0, max(1, int(cpus)))
    try:
        serve.run(app, name=APP_NAME, route_prefix="/")
    except Exception as exc:  # Serve reports a failed replica constructor as RuntimeError / DeploymentFailed
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
        raise ZerosegError(f"the server did not start: {first}") from None
    return f"http://{host}:{port}"


def stop_server() -> None:
    """Shut Serve down (its proxy and replicas) on the connected cluster."""
    serve.shutdown()


def replica_actor_names() -> list[tuple[str, str]]:
    """(name, namespace) of this app's live replica actors (what a fault test kills)."""
    ray = import_ray()
    prefix = f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT_NAME}#"
    return sorted(
        (a["name"], a["namespace"])
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(prefix)
    )


def kill_replica(name: str, namespace: str = "serve") -> None:
    """Kill one replica actor without restart (Serve's controller starts a replacement)."""
    ray = import_ray()
    ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
