"""Where an ONNX Runtime engine spends its time: a per-op profile of one bench row's graph.

`ort_profile` captures the feed the row's segmenter gives its end-to-end graph on one real call,
opens a **separate** session on the same graph file with the same options plus
`SessionOptions.enable_profiling` (the timed session is never profiled, so profiling cannot slow the
bench's own numbers), runs it `1 + runs` times and reads ONNX Runtime's JSON trace (Chrome trace
format): every node's `*_kernel_time` event (category "Node", `args.op_name`, `dur` in µs) inside
each "model_run" event after the first (the first run, with its allocations, is left out).
`summarize_trace` sums them per op type and per node: the share of the kernels' time each takes.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TOP_NODES = 8


def summarize_trace(events: Sequence[dict[str, Any]], *, skip_runs: int = 1) -> dict[str, Any]:
    """Per op type and per node: ms per run and share of the kernels' time, from a trace's events.

    The first `skip_runs` "model_run" events and the kernels inside them are left out.
    """
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])  # fmt: skip
    kept = runs[skip_runs:] if len(runs) > skip_runs else runs
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in kept]
    by_op: dict[str, float] = defaultdict(float)
    count: dict[str, set] = defaultdict(set)
    by_node: dict[tuple[str, str], float] = defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        if windows and not any(a <= e["ts"] <= b for a, b in windows):
            continue
        op = str(e.get("args", {}).get("op_name", "?"))
        node = str(e["name"]).removesuffix("_kernel_time")
        by_op[op] += e["dur"]
        count[op].add(node)
        by_node[(node, op)] += e["dur"]
    n = max(1, len(kept))
    total = sum(by_op.values())
    share = (lambda us: us / total) if total else (lambda us: 0.0)
    ops = [{"op": op, "ms_per_run": us / n / 1e3, "share": share(us), "nodes": len(count[op])}
           for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])]  # fmt: skip
    top = sorted(by_node.items(), key=lambda kv: -kv[1])[:TOP_NODES]
    return {
        "runs": len(kept),
        "model_run_ms": sum(b - a for a, b in windows) / n / 1e3 if windows else None,
        "kernel_ms_per_run": total / n / 1e3,
        "by_op": ops,
        "top_nodes": [
            {"node": node, "op": op, "ms_per_run": us / n / 1e3, "share": share(us)} for (node, op), us in top
        ],  # fmt: skip
    }


class _FeedRecorder:
    """Stands in for a segmenter's ONNX Runtime session for one call: runs it and keeps the last feed."""

    def __init__(self, session) -> None:
        self.session, self.feed = session, None

    def run(self, output_names, feed, *args, **kwargs):
        self.feed = dict(feed)
        return self.session.run(output_names, feed, *args, **kwargs)


def captured_feed(seg, images: Sequence, classes) -> dict:
    """The end-to-end graph's feed of `seg(images, classes)` (one real call through the segmenter)."""
    recorder = _FeedRecorder(seg.session)
    seg.session = recorder
    try:
        seg(list(images), classes, batch_size=len(images))
    finally:
        seg.session = recorder.session
    if recorder.feed is None:
        raise RuntimeError("the segmenter never ran its graph")
    return recorder.feed


def ort_profile(
    seg,
    images: Sequence,
    classes,
    *,
    runs: int = 3,
    session_env: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, Any]:
    """Profile `seg`'s end-to-end graph (an `OnnxSegmenter`) on `images` (see the module docstring).

    Args:
        seg: the row's segmenter (its bundle, precision and threads are reused).
        images: the batch to profile (the bench uses one image: the batch-1 row).
        classes: the vocabulary of the bench's calls.
        runs: profiled runs after the discarded first one.
        session_env: a context the profiling session is created in (e.g. the environment variable
            an A/B row sets while its own session is created).
    """
    import onnxruntime as ort

    from zeroseg.export.onnx.runtime import session_options

    feed = captured_feed(seg, images, classes)
    graph = Path(seg.bundle) / seg.manifest.graph_file("segmenter", seg.precision)
    with tempfile.TemporaryDirectory(prefix="zeroseg-ort-profile-") as tmp:
        opts = session_options(seg.threads)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        with session_env():
            session = ort.InferenceSession(str(graph), sess_options=opts, providers=list(seg.providers))
        for _ in range(1 + runs):
            session.run(None, feed)
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
    summary = summarize_trace(events, skip_runs=1)
    return {"graph": graph.name, "precision": seg.precision, "batch_size": len(images),
            "threads": opts.intra_op_num_threads, **summary}  # fmt: skip
