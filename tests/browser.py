"""Open a local HTML page in the system's headless Chromium and report what a browser saw.

The browser is Debian's ``chromium`` (``apt-get install -y chromium``), driven by the ``playwright``
Python package; playwright's own browser download is never used. Every request whose URL is not
``file:`` or ``data:`` is aborted before it leaves the machine and recorded, so a page under test
cannot reach the network even by accident, and a test can tell that it tried.

:func:`browser_unavailable` says why no browser can be had (the test then skips with that reason);
:func:`open_page` loads a page, waits until it and its images have loaded, and returns a
:class:`PageReport`.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, ConsoleMessage, Error, Request, Route

__all__ = [
    "LOCAL_SCHEMES",
    "Heading",
    "LoadedImage",
    "PageReport",
    "browser_unavailable",
    "chromium_path",
    "is_local",
    "open_page",
    "open_pages",
]

#: URL schemes a page may load from; anything else would leave the machine and is aborted.
LOCAL_SCHEMES = frozenset({"file", "data"})

_INSTALL = "apt-get install -y chromium"

# Bring every image into view once (so that loading="lazy" ones start), wait until each has loaded
# or failed (at most `timeout` ms each), go back to the top, then describe them all.
_IMAGES_JS = """
async (timeout) => {
    const settle = (img) => img.complete ? Promise.resolve() : new Promise((done) => {
        img.addEventListener("load", done, {once: true});
        img.addEventListener("error", done, {once: true});
        setTimeout(done, timeout);
    });
    for (const img of Array.from(document.images)) {
        img.scrollIntoView({block: "center"});
        await settle(img);
    }
    window.scrollTo(0, 0);
    return Array.from(document.images).map((i) => ({
        src: i.currentSrc || i.src, w: i.naturalWidth, h: i.naturalHeight, complete: i.complete,
    }));
}
"""

_HEADINGS_JS = """
() => Array.from(document.querySelectorAll("h1, h2")).map((h) => ({
    tag: h.tagName.toLowerCase(), text: h.textContent.replace(/\\s+/g, " ").trim(),
}))
"""


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """One ``<img>`` as the browser has it after loading the page.

    Attributes:
        src: The URL it was loaded from (``currentSrc``, else ``src``).
        natural_width: Its intrinsic width in pixels (0: nothing decoded).
        natural_height: Its intrinsic height in pixels (0: nothing decoded).
        complete: The browser has finished with it (loaded, or given up).
    """

    src: str
    natural_width: int
    natural_height: int
    complete: bool

    @property
    def loaded(self) -> bool:
        """Finished and decoded to a picture of non-zero size."""
        return self.complete and self.natural_width > 0 and self.natural_height > 0


@dataclass(frozen=True, slots=True)
class Heading:
    """An ``<h1>`` or ``<h2>``: its tag and its text with whitespace collapsed."""

    tag: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PageReport:
    """What the browser saw on one page.

    Attributes:
        url: The ``file:`` URL opened.
        title: The document's title.
        headings: Every ``<h1>`` and ``<h2>``, in document order.
        images: Every ``<img>``, in document order.
        requests: Every request URL the page made, in order (``data:`` URLs may not appear:
            Chromium serves them without a request).
        blocked: The requests aborted because they would have left the machine.
        failed: ``"URL: reason"`` for each request that failed, blocked ones included.
        console_errors: The text of every console message of type ``error``.
        page_errors: Uncaught JavaScript exceptions.
        screenshot: Where the full-page screenshot was saved, if one was asked for.
        links: The ``href`` of every link, resolved to an absolute URL.
    """

    url: str
    title: str
    headings: tuple[Heading, ...]
    images: tuple[LoadedImage, ...]
    requests: tuple[str, ...]
    blocked: tuple[str, ...]
    failed: tuple[str, ...]
    console_errors: tuple[str, ...]
    page_errors: tuple[str, ...]
    screenshot: Path | None
    links: tuple[str, ...] = ()

    @property
    def broken_images(self) -> tuple[LoadedImage, ...]:
        """The images that did not load to a non-zero size."""
        return tuple(image for image in self.images if not image.loaded)

    @property
    def offsite_requests(self) -> tuple[str, ...]:
        """The requests that tried to leave the machine (every one of them was aborted)."""
        return tuple(url for url in self.requests if not is_local(url))

    @property
    def heading_texts(self) -> tuple[str, ...]:
        """The text of every heading, in order."""
        return tuple(heading.text for heading in self.headings)


def is_local(url: str) -> bool:
    """Whether ``url`` can be served without leaving the machine (a ``file:`` or ``data:`` URL)."""
    return urlsplit(url).scheme.lower() in LOCAL_SCHEMES


def chromium_path() -> str | None:
    """The system Chromium on ``PATH`` (Debian's ``chromium``), or None."""
    return shutil.which("chromium")


def browser_unavailable() -> str | None:
    """Why no browser can be had here (a reason to skip with), or None when it can."""
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if chromium_path() is None:
        missing.append(f"the chromium browser on PATH ({_INSTALL}, as .ci/run does when it runs as root)")
    if not missing:
        return None
    return "no headless browser to open the page in: missing " + " and ".join(missing)


def open_page(
    path: Path,
    screenshot: Path | None = None,
    *,
    viewport: tuple[int, int] = (1280, 800),
    timeout_s: float = 60.0,
) -> PageReport:
    """Open ``path`` in headless Chromium, wait for it to load, and report what it saw.

    Args:
        path: The HTML file.
        screenshot: Where to save a full-page PNG screenshot (folders created); None: none.
        viewport: The window's width and height in CSS pixels.
        timeout_s: How long loading may take, and each image at most.

    Returns:
        The report.

    Raises:
        RuntimeError: No browser can be had (see :func:`browser_unavailable`).
        FileNotFoundError: ``path`` is not a file.
    """
    return open_pages([path], [screenshot], viewport=viewport, timeout_s=timeout_s)[0]


def open_pages(
    paths: Sequence[Path],
    screenshots: Sequence[Path | None] | None = None,
    *,
    viewport: tuple[int, int] = (1280, 800),
    timeout_s: float = 60.0,
) -> list[PageReport]:
    """:func:`open_page` for many pages in one browser (one launch, a fresh page each)."""
    reason = browser_unavailable()
    executable = chromium_path()
    if reason is not None or executable is None:
        raise RuntimeError(reason)
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"no page at {path}")
    from playwright.sync_api import sync_playwright

    shots = list(screenshots) if screenshots is not None else [None] * len(paths)
    timeout_ms = timeout_s * 1000
    reports = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"], headless=True)
        try:
            for path, screenshot in zip(paths, shots, strict=True):
                context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
                try:
                    reports.append(_visit(context, path, screenshot, timeout_ms))
                finally:
                    context.close()
        finally:
            browser.close()
    return reports


def _visit(context: BrowserContext, path: Path, screenshot: Path | None, timeout_ms: float) -> PageReport:
    url = path.resolve().as_uri()
    requests: list[str] = []
    blocked: list[str] = []
    failed: list[str] = []
    console_errors: list[str] = []
    page_errors: list[str] = []

    def route(route: Route) -> None:
        if is_local(route.request.url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("blockedbyclient")

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location.get("url", "")
            console_errors.append(f"{message.text} ({where})" if where else message.text)

    def on_failed(request: Request) -> None:
        failed.append(f"{request.url}: {request.failure}")

    def on_page_error(error: Error) -> None:
        page_errors.append(str(error))

    context.set_default_timeout(timeout_ms)
    context.route("**/*", route)
    page = context.new_page()
    page.on("request", lambda request: requests.append(request.url))
    page.on("requestfailed", on_failed)
    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    raw: list[dict[str, Any]] = page.evaluate(_IMAGES_JS, timeout_ms)
    page.wait_for_load_state("networkidle")
    headings: list[dict[str, str]] = page.evaluate(_HEADINGS_JS)
    links: list[str] = page.evaluate("() => Array.from(document.links).map((a) => a.href)")
    title = page.title()
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=screenshot, full_page=True)
    return PageReport(
        url=url,
        title=title,
        headings=tuple(Heading(tag=h["tag"], text=h["text"]) for h in headings),
        images=tuple(
            LoadedImage(
                src=str(i["src"]),
                natural_width=int(i["w"]),
                natural_height=int(i["h"]),
                complete=bool(i["complete"]),
            )
            for i in raw
        ),
        requests=tuple(requests),
        blocked=tuple(blocked),
        failed=tuple(failed),
        console_errors=tuple(console_errors),
        page_errors=tuple(page_errors),
        screenshot=screenshot,
        links=tuple(links),
    )
