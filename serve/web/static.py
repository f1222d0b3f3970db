"""The page `zeroseg serve` answers `GET /` with: three files under `page/`, shipped as package data.

The page is plain HTML, JavaScript and CSS (no build step, nothing fetched from another origin): it
reads `GET /metadata`, posts `POST /segment` and draws the answer's labels in the answer's palette.
`PAGE_HEADERS` go with every file: a Content-Security-Policy that allows only this origin's scripts,
styles and requests (no inline code), and no caching (a restarted server serves its own page).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

#: URL path -> (file under page/, content type).
PAGE_FILES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
}
#: Headers sent with every page file.
PAGE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class PageFile:
    """One file of the page, ready to send."""

    body: bytes
    content_type: str


@functools.cache
def page_file(path: str) -> PageFile:
    """The file served at URL `path` ('/', '/page.js', ...), read from the package once.

    Raises:
        KeyError: `path` is not one of `PAGE_FILES` (`zeroseg.serve.web.protocol.route` answers 404 first).
    """
    name, content_type = PAGE_FILES["/" + path.strip("/")]
    body = resources.files(__package__).joinpath("page", name).read_bytes()
    return PageFile(body, content_type)
