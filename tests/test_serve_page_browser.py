"""The page of `zeroseg serve` in a real browser: Debian's headless Chromium, driven by Playwright.

Ray Serve runs the bundled model on a loopback cluster (conftest's `cluster` fixture, in the xdist
group "ray" with test_scale_ray_serve.py: one cluster at a time); the browser resolves no host
but 127.0.0.1, so the page provably loads nothing from elsewhere. Chromium is /usr/bin/chromium (the
`chromium` package, which `.ci/run` installs): without it the tests fail, they never skip, and
Playwright never downloads a browser of its own.

Screenshots go to the test's temporary folder; with ZEROSEG_WRITE_SCREENSHOTS=1 also to
docs/serve-page.png (the README's picture) and docs/serve-page-narrow.png (a 390-px phone width).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_scale_ray_serve import _free_port

from zeroseg.data.scenes import generate_scene
from zeroseg.infer.visualize import label_ids_from_png, voc_palette
from zeroseg.serve.model import ModelSpec
from zeroseg.serve.web import client
from zeroseg.serve.web.protocol import Limits, decode_labels

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.xdist_group("ray"),
    pytest.mark.slow,  # a Ray cluster and Serve start: ~40-55 s on 2 cores
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
LABELS = "red, green, blue, yellow, magenta, cyan"
MAX_PIXELS = 300 * 300
WAIT_MS = 90_000  # the longest any step may take (a request on two busy cores, the browser's start)
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def server(cluster):
    """The bundled model on Ray Serve at http://127.0.0.1:PORT, images capped at 300x300 pixels."""
    from zeroseg.serve.web.app import start_server

    spec = ModelSpec.from_options("bundled", None)
    url = start_server(
        spec, port=_free_port(), max_batch=2, batch_wait_ms=5, limits=Limits(max_pixels=MAX_PIXELS)
    )
    assert url.startswith("http://127.0.0.1:")
    return url


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's), no network but loopback."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), (
        f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does); the page's tests do not skip"
    )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=WAIT_MS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server):
    """A fresh tab on the page; at the end, no uncaught script error and no request off the server."""
    context = browser.new_context(viewport={"width": 1200, "height": 800}, device_scale_factor=1)
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    urls: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("request", lambda request: urls.append(request.url))
    tab.goto(server + "/")
    tab.wait_for_function("() => document.getElementById('model').dataset.backend !== undefined")
    yield tab
    context.close()
    assert errors == []
    assert urls and all(u.startswith(server + "/") for u in urls), urls


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A 256-px ShapeWorld scene as a PNG file (scene seed 0, not picked)."""
    path = tmp_path_factory.mktemp("page") / "scene.png"
    Image.fromarray(generate_scene(0, 256).image).save(path)
    return path


# ---- helpers -------------------------------------------------------------------------------------

READ_CANVAS = """(id) => {
    const canvas = document.getElementById(id);
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let text = "";
    for (let i = 0; i < data.length; i += 0x8000) {
        text += String.fromCharCode.apply(null, data.subarray(i, i + 0x8000));
    }
    return [canvas.width, canvas.height, btoa(text)];
}"""


def canvas_pixels(tab, canvas_id: str) -> np.ndarray:
    """(H, W, 4) RGBA bytes of a canvas, read exactly (getImageData, not a screenshot)."""
    width, height, data = tab.evaluate(READ_CANVAS, canvas_id)
    return np.frombuffer(base64.b64decode(data), dtype=np.uint8).reshape(height, width, 4)


def attempt(tab, action) -> tuple[str, str]:
    """Do `action()` (a click, a file chosen) and wait until the page has answered: (state, message)."""
    before = int(tab.get_attribute("#status", "data-finished") or 0)
    action()
    tab.wait_for_function(
        "(before) => Number(document.getElementById('status').dataset.finished || 0) > before", arg=before
    )
    return status(tab)


def status(tab) -> tuple[str, str]:
    """(state, message) of the status line."""
    return tab.get_attribute("#status", "data-state"), tab.inner_text("#message")


def legend(tab) -> list[tuple[str, float, str]]:
    """(class, fraction, shown share) per legend row, in the page's order."""
    rows = tab.query_selector_all("#legend li[data-class]")
    return [
        (
            r.get_attribute("data-class"),
            float(r.get_attribute("data-fraction")),
            r.inner_text().split("\n")[-1],
        )
        for r in rows
    ]


def check_against_zeroseg_segment(tab, cli, scene: Path, out: Path, head: str, server: str) -> None:
    """The legend equals the API's JSON for the same request; the overlay equals zeroseg segment's PNG."""
    thresh = tab.input_value("#thresh-value")
    fields = {"image": scene.read_bytes(), "labels": LABELS, "bg_thresh": thresh, "head": head}
    api = client.post(server, "/segment", *client.multipart_body(fields), timeout=WAIT_MS / 1000)
    assert api.status == 200, api.body
    assert api.body["head"] == head and api.body["server_ms"] >= api.body["segment_ms"] > 0
    shown = legend(tab)
    assert {name: share for name, share, _ in shown} == api.body["fractions"]  # exactly, as JSON numbers
    assert [s for _, s, _ in shown] == sorted(api.body["fractions"].values(), reverse=True)
    assert all(text == f"{100 * share:.1f} %" or text == "<0.1 %" for _, share, text in shown)
    result = cli(
        "segment", "bundled", scene, "--labels", LABELS, "--bg-thresh", thresh, "--head", head, "--out", out
    )
    assert result.code == 0, result.err
    with Image.open(out / f"{scene.stem}_labels.png") as written:
        ids = label_ids_from_png(np.asarray(written))
        colours = np.asarray(written.convert("RGB"))
    overlay = canvas_pixels(tab, "overlay-canvas")
    assert overlay.shape[:2] == ids.shape and (overlay[..., 3] == 255).all()
    np.testing.assert_array_equal(overlay[..., :3], colours)  # every pixel, the colour of its label
    np.testing.assert_array_equal(decode_labels(api.body["labels"]), ids)
    palette = np.asarray(api.body["palette"], dtype=np.uint8)
    np.testing.assert_array_equal(palette, voc_palette(len(api.body["class_names"])))
    image = canvas_pixels(tab, "image-canvas")
    np.testing.assert_array_equal(image[..., :3], np.asarray(Image.open(scene).convert("RGB")))
    box = tab.locator("#stage").bounding_box()  # pointing at a pixel names its class
    tab.mouse.move(box["x"] + box["width"] * 100.5 / 256, box["y"] + box["height"] * 130.5 / 256)
    assert tab.inner_text("#hover") == f"{api.body['class_names'][ids[130, 100]]} at (100, 130)"
    assert (
        f"head {head}" in tab.inner_text("#timing")
        and float(tab.get_attribute("#timing", "data-server-ms")) > 0
    )


GIVE_FILE = """([how, b64]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const files = new DataTransfer();
    files.items.add(new File([bytes], "given.png", { type: "image/png" }));
    const event = how === "drop"
        ? new DragEvent("drop", { dataTransfer: files, bubbles: true, cancelable: true })
        : new ClipboardEvent("paste", { clipboardData: files, bubbles: true, cancelable: true });
    document.getElementById(how === "drop" ? "drop" : "classes").dispatchEvent(event);
}"""


def give_file(tab, how: str, path: Path) -> None:
    """Drop a file on the drop zone, or paste it into the page (how: 'drop' or 'paste')."""
    tab.evaluate(GIVE_FILE, [how, base64.b64encode(path.read_bytes()).decode()])


def save_screenshot(tab, tmp_path: Path, name: str) -> None:
    """A screenshot in tmp_path, and in docs/ when ZEROSEG_WRITE_SCREENSHOTS=1."""
    path = tmp_path / name
    tab.screenshot(path=str(path), full_page=True)
    with Image.open(path) as shot:
        assert shot.width == tab.viewport_size["width"] and shot.height >= tab.viewport_size["height"] // 2
    if os.environ.get("ZEROSEG_WRITE_SCREENSHOTS") == "1":
        shutil.copyfile(path, DOCS / name)


# ---- the tests -----------------------------------------------------------------------------------


def test_page_shows_the_labels_zeroseg_segment_writes(page, scene, cli, server, tmp_path):
    tab = page
    model = tab.inner_text("#model")
    assert "bundled" in model and "torch (cpu)" in model
    assert tab.is_visible("#head")
    # the bundled model's own head (the one its checkpoint records) first: the default
    assert tab.eval_on_selector_all("#head option", "o => o.map(x => x.value)") == ["dense", "paper"]
    tab.set_input_files("#file", str(scene))  # no classes yet: nothing is sent
    tab.fill("#classes", LABELS)
    state, message = attempt(tab, lambda: tab.click("#go"))
    assert state == "done" and "256×256 px" in message, message
    check_against_zeroseg_segment(tab, cli, scene, tmp_path / "dense", "dense", server)
    save_screenshot(tab, tmp_path, "serve-page.png")

    state, message = attempt(tab, lambda: tab.select_option("#head", "paper"))  # a new head re-runs it
    assert state == "done" and "head paper" in tab.inner_text("#timing"), message
    check_against_zeroseg_segment(tab, cli, scene, tmp_path / "paper", "paper", server)

    tab.set_viewport_size({"width": 390, "height": 844})  # a phone: one column, nothing wider than it
    tab.wait_for_timeout(200)
    assert tab.evaluate("document.documentElement.scrollWidth") <= 390
    box = tab.locator("#stage").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["width"] > 300
    save_screenshot(tab, tmp_path, "serve-page-narrow.png")


def test_bad_input_is_one_line_in_the_page_and_the_next_try_works(page, scene, tmp_path):
    tab = page
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"this is a text file, not an image\n")
    big = tmp_path / "big.png"
    Image.new("RGB", (320, 320), (40, 90, 160)).save(big)

    def refused(answer: tuple[str, str], fragment: str) -> None:
        state, message = answer
        assert state == "error" and fragment in message and "\n" not in message, answer
        assert "Traceback" not in tab.content()

    tab.fill("#classes", LABELS)  # with classes typed, a chosen file is segmented at once
    refused(attempt(tab, lambda: tab.set_input_files("#file", str(notes))), "not a readable image")
    refused(attempt(tab, lambda: tab.set_input_files("#file", str(big))), f"over the {MAX_PIXELS}-pixel cap")
    assert attempt(tab, lambda: give_file(tab, "drop", scene))[0] == "done"
    for classes, thresh, fragment in [
        ("", "0.5", "no classes"),
        (", ".join(f"class {i}" for i in range(1001)), "0.5", "1001 classes is over the cap of 1000"),
        (LABELS, "1.5", "bg_thresh must be in [0, 1]"),
        (LABELS, "-0.2", "bg_thresh must be in [0, 1]"),
    ]:
        tab.fill("#classes", classes)
        tab.fill("#thresh-value", thresh)
        refused(attempt(tab, lambda: tab.click("#go")), fragment)
    tab.fill("#classes", LABELS)
    tab.fill("#thresh-value", "0.5")
    state, message = attempt(tab, lambda: give_file(tab, "paste", scene))
    assert state == "done" and "given.png" in tab.inner_text("#file-name"), message

    tab.route("**/segment", lambda route: route.abort("connectionreset"))  # the server goes away
    refused(attempt(tab, lambda: tab.click("#go")), "connection to the server was lost")
    tab.unroute("**/segment")

    held = []
    tab.route("**/segment", lambda route: held.append(route))  # a slow answer: held until released
    tab.click("#go")
    tab.wait_for_function("() => document.getElementById('status').dataset.state === 'busy'")
    tab.wait_for_timeout(1200)
    message = tab.inner_text("#message")
    assert tab.is_visible("#progress") and ("Uploading" in message or "Segmenting" in message), message
    waited = re.search(r"\((\d+\.\d) s\)", message)
    assert waited and float(waited.group(1)) >= 1.0 and len(held) == 1, message  # the seconds waited so far
    state, message = attempt(tab, lambda: held[0].continue_())
    tab.unroute("**/segment")
    assert state == "done" and "256×256 px" in message and len(legend(tab)) >= 1, message
