"""The /admin console: its files served without a key and under a strict CSP, and the
page itself driven in Debian's Chromium against a real server and a real receiver."""

from __future__ import annotations

import asyncio
import os
import re
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, async_playwright, expect

from dispatcher.api import console
from dispatcher.app import create_app
from tests.conftest import ADMIN_KEY, Api, Receiver, settings_for, wait_for
from tests.support.process import REPO_ROOT, Http
from tests.support.secrets import remember

CONSOLE = REPO_ROOT / "dispatcher" / "console"
# The README's picture is docs/console.png: CONSOLE_SCREENSHOT=docs/console.png makes it
# anew; otherwise the screenshot goes to the test's own folder.
SCREENSHOT_TO = "CONSOLE_SCREENSHOT"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
KEY_STORE = "dispatcher.console.key"
# Long enough for a delivery attempt on a loaded CI machine; conditions, not sleeps.
SLOW = 15_000

needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason="Debian's chromium is not at /usr/bin/chromium (CI installs it with apt-get; "
    "a browser is never downloaded)",
)


@pytest.fixture
async def admin(aiohttp_client: Any, tmp_path: Path) -> Api:
    return Api(await aiohttp_client(create_app(settings_for(tmp_path))))


# The files, without a browser


def test_create_app_serves_the_console(tmp_path: Path):
    app = create_app(settings_for(tmp_path))
    served = {route.resource.canonical for route in app.router.routes() if route.resource}
    assert {"/admin", "/admin/", "/admin/{file}"} <= served
    assert {route.handler for route in app.router.routes()} >= {console.index, console.static}


async def test_dispatcher_serve_serves_the_console(serve: Any, http: Http):
    """The installed `dispatcher serve`, as an operator runs it: the page, no key."""
    server = await serve()
    async with http.session.get(server.url + "/admin/app.js") as response:
        assert response.status == 200
        assert response.content_type == "text/javascript"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert await response.read() == (CONSOLE / "app.js").read_bytes()


async def test_the_console_page_needs_no_key_and_carries_a_strict_policy(admin: Api):
    for path in ("/admin", "/admin/", "/admin/index.html"):
        async with admin.client.get(path) as response:  # no Authorization header
            assert response.status == 200, path
            assert response.content_type == "text/html"
            page = await response.text()
            headers = response.headers
        assert '<script type="module" src="/admin/app.js">' in page
        policy = dict(
            part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";")
        )
        assert policy["default-src"] == "'self'"
        assert policy["script-src"] == "'self'"
        assert policy["style-src"] == "'self'"
        assert policy["connect-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-cache"


async def test_each_file_has_its_type_and_revalidates(admin: Api):
    types = {"app.js": "text/javascript", "app.css": "text/css"}
    for name, content_type in types.items():
        async with admin.client.get(f"/admin/{name}") as response:
            assert response.status == 200
            assert response.content_type == content_type
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "Content-Security-Policy" in response.headers
            assert await response.read() == (CONSOLE / name).read_bytes()
            etag = response.headers["ETag"]
        async with admin.client.get(f"/admin/{name}", headers={"If-None-Match": etag}) as again:
            assert again.status == 304
            assert await again.read() == b""


@pytest.mark.parametrize(
    "path",
    [
        "/admin/nope.js",
        "/admin/..%2fsettings.py",
        "/admin/%2e%2e%2fsettings.py",
        "/admin/..%5csettings.py",
        "/admin/.hidden.js",
        "/admin/index.html%00.js",
        "/admin/app.js/",
        "/admin/app.js.map",
    ],
)
async def test_only_the_shipped_files_are_served(admin: Api, path: str):
    async with admin.client.get(path) as response:
        assert response.status == 404, path
        assert response.content_type == "application/problem+json"
        body = await response.json()
    assert body["status"] == 404
    assert "import" not in str(body)


@pytest.mark.parametrize("path", ["/admin/../settings.py", "/admin/../api/console.py"])
async def test_a_dot_dot_sent_as_is_does_not_leave_the_folder(admin: Api, path: str):
    """Sent on a raw socket: an HTTP client would tidy the `..` away before sending."""
    server = admin.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = (await asyncio.wait_for(reader.read(), timeout=10)).decode(errors="replace")
    writer.close()
    await writer.wait_closed()
    assert answer.startswith("HTTP/1.1 404"), answer[:200]
    assert "application/problem+json" in answer
    assert "import " not in answer and "Settings" not in answer


async def test_the_key_still_guards_the_api(admin: Api):
    async with admin.client.get("/v1/jobs") as response:
        assert response.status == 401


class Markup(HTMLParser):
    """What the CSP would refuse or a reviewer would worry about in index.html."""

    def __init__(self) -> None:
        super().__init__()
        self.inline_scripts = 0
        self.inline_styles: list[str] = []
        self.handlers: list[str] = []
        self.urls: list[str] = []
        self.labels: set[str] = set()
        self.inputs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and not found.get("src"):
            self.inline_scripts += 1
        if tag == "style" or "style" in found:
            self.inline_styles.append(tag)
        self.handlers += [name for name in found if name.startswith("on")]
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "label":
            self.labels.add(found.get("for") or "")
        if tag in ("input", "select", "textarea"):
            self.inputs.add(found.get("id") or "")


def test_the_files_hold_nothing_the_policy_refuses_or_that_parses_data_as_html():
    markup = Markup()
    markup.feed((CONSOLE / "index.html").read_text())
    assert markup.inline_scripts == 0
    assert markup.inline_styles == []
    assert markup.handlers == []
    assert all(not re.match(r"(https?:)?//", url) for url in markup.urls), markup.urls
    assert markup.inputs and markup.inputs <= markup.labels, "every input needs a label"
    script = (CONSOLE / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "localStorage" not in script and "document.cookie" not in script
    assert "https://" not in script and "http://" not in (CONSOLE / "app.css").read_text()


# The console in a browser


@dataclass
class Console:
    server: TestServer
    api: Api

    @property
    def url(self) -> str:
        return str(self.server.make_url("/admin"))


@pytest.fixture
async def served(aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path) -> Console:
    """A real server on loopback; no retries, so a failing callback is failed at once."""
    app = create_app(settings_for(tmp_path, retry_schedule="", delivery_timeout=30))
    server = await aiohttp_server(app, host="127.0.0.1")
    return Console(server, Api(await aiohttp_client(server)))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        found = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield found
        finally:
            await found.close()


@dataclass
class Watched:
    """A page and what it did: full loads, errors, every URL it asked for."""

    page: Page
    loads: list[str]
    errors: list[str]
    requests: list[str]
    sockets: list[str]


async def open_console(browser: Browser, url: str) -> Watched:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    watched = Watched(page, [], [], [], [])
    page.on("load", lambda p: watched.loads.append(p.url))
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    page.on("console", lambda m: m.type == "error" and watched.errors.append(m.text))
    page.on("request", lambda request: watched.requests.append(request.url))
    page.on("websocket", lambda socket: watched.sockets.append(socket.url))
    await page.goto(url)
    await expect(page.locator("html")).to_have_attribute("data-ready", "true")
    # Set once at load: still there at the end means the page never reloaded.
    await page.evaluate("window.__consoleLoadMark = 'first load'")
    return watched


async def sign_in(page: Page, key: str = ADMIN_KEY) -> None:
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("signout-button")).to_be_visible()
    await expect(page.get_by_test_id("live-state")).to_have_text("live", timeout=SLOW)


async def assert_never_reloaded(watched: Watched) -> None:
    assert await watched.page.evaluate("window.__consoleLoadMark") == "first load"
    assert len(watched.loads) == 1, watched.loads


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def failed_delivery(api: Api, receiver: Receiver, **payload: Any) -> dict[str, Any]:
    job = await api.submit(type="echo", payload=payload, callback_url=receiver.url)
    found = await api.settled_delivery(job["id"])
    assert found["status"] == "failed", found
    return found


HOSTILE_BODY = '<b id="injected">oops</b><img src=x onerror="window.pwned=1">'


@needs_chromium
async def test_a_failed_delivery_is_replayed_and_seen_succeeding_without_a_reload(
    served: Console, make_receiver: Any, browser: Browser, tmp_path: Path
):
    receiver = await make_receiver((500, {}, HOSTILE_BODY), 200)
    delivery = await failed_delivery(served.api, receiver, note="<script>window.pwned=2</script>")
    assert delivery["attempt_count"] == 1
    watched = await open_console(browser, served.url)
    page = watched.page

    await sign_in(page)
    job_row = page.locator(f'[data-testid="job-row"][data-job-id="{delivery["job_id"]}"]')
    await expect(job_row).to_be_visible()

    await page.get_by_test_id("nav-deliveries").click()
    await expect(page.locator("#view-title")).to_have_text("Failed deliveries")
    row = page.locator(f'[data-testid="delivery-row"][data-delivery-id="{delivery["id"]}"]')
    await expect(row.get_by_test_id("delivery-row-status")).to_have_text("failed")
    await expect(row).to_contain_text("HTTP 500")

    await row.get_by_role("link", name=delivery["id"]).click()
    await expect(page.locator("#view-title")).to_contain_text(delivery["id"])
    attempts = page.get_by_test_id("attempt")
    await expect(attempts).to_have_count(1)
    await expect(attempts.first.get_by_test_id("attempt-status-code")).to_have_text("500")
    await expect(attempts.first.get_by_test_id("attempt-body")).to_have_text(HOSTILE_BODY)
    await expect(page.get_by_test_id("delivery-status")).to_have_text("failed")

    # The receiver holds the replayed attempt, so the page is seen pending first and must
    # find out by itself (it polls) when the attempt is answered.
    receiver.hang = asyncio.Event()
    await page.get_by_test_id("replay-delivery").click()
    await expect(page.get_by_test_id("delivery-status")).to_have_text("pending")
    await expect(page.get_by_test_id("delivery-polling")).to_be_visible()
    await receiver.wait_for_requests(2)
    receiver.hang.set()
    await expect(page.get_by_test_id("delivery-status")).to_have_text("succeeded", timeout=SLOW)
    await expect(page.get_by_test_id("delivery-polling")).to_be_hidden()
    await expect(attempts).to_have_count(2)
    second = attempts.nth(1)
    await expect(second.get_by_test_id("attempt-status-code")).to_have_text("200")
    await expect(second.get_by_test_id("attempt-trigger")).to_have_text("manual")
    replayed = await served.api.delivery(delivery["id"])
    await expect(second.get_by_test_id("attempt-by")).to_have_text(replayed["attempts"][1]["by"])
    await expect(page.get_by_test_id("status")).to_contain_text("now succeeded")
    assert len(await receiver.wait_for_requests(2)) == 2
    await assert_never_reloaded(watched)

    # Hostile text stayed text: nothing it held became an element or ran.
    assert await page.locator("#injected").count() == 0
    assert await page.locator("#attempts img").count() == 0
    assert await page.evaluate("window.pwned") is None
    screenshot = Path(os.environ.get(SCREENSHOT_TO) or tmp_path / "console.png")
    await page.screenshot(path=str(screenshot))
    assert png_size(screenshot) == (1280, 800)
    print(f"screenshot: {screenshot}")

    # Jobs are live: a job submitted now shows up and settles with no reload.
    await page.get_by_test_id("nav-jobs").click()
    await expect(job_row).to_be_visible()
    later = await served.api.submit(type="echo", payload={"n": 2})
    new_row = page.locator(f'[data-testid="job-row"][data-job-id="{later["id"]}"]')
    await expect(new_row.get_by_test_id("job-status")).to_have_text("succeeded", timeout=SLOW)
    await page.get_by_label("Type").fill("no-such-type")
    await page.get_by_role("button", name="Apply").click()
    await expect(page.get_by_test_id("empty")).to_have_text("No jobs match.")
    await assert_never_reloaded(watched)

    # The key was only ever in this tab's session storage and the stream's ?token=.
    assert await page.evaluate(f"sessionStorage.getItem('{KEY_STORE}')") == ADMIN_KEY
    assert await page.evaluate("localStorage.length") == 0
    assert await page.context.cookies() == []
    assert not [url for url in watched.requests if ADMIN_KEY in url]
    assert all("/v1/events/ws?token=" in url for url in watched.sockets), watched.sockets
    assert ADMIN_KEY not in page.url
    assert watched.errors == []

    await page.get_by_test_id("signout-button").click()
    await expect(page.get_by_label("API key")).to_be_visible()
    await expect(page.get_by_test_id("nav-jobs")).to_be_hidden()
    assert await page.evaluate(f"sessionStorage.getItem('{KEY_STORE}')") is None


@needs_chromium
async def test_bulk_replay_counts_first_and_endpoints_enable_and_rotate(
    served: Console, make_receiver: Any, browser: Browser
):
    receiver = await make_receiver(500)
    first = await failed_delivery(served.api, receiver, n=1)
    second = await failed_delivery(served.api, receiver, n=2)
    status, endpoint = await served.api.call(
        "POST", "/v1/endpoints", json={"url": receiver.url, "description": "<i>orders</i>"}
    )
    assert status == 201, endpoint
    status, _ = await served.api.call(
        "PATCH", f"/v1/endpoints/{endpoint['id']}", json={"disabled": True}
    )
    assert status == 200
    watched = await open_console(browser, served.url)
    page = watched.page

    # A wrong key is refused and kept nowhere.
    await page.get_by_label("API key").fill("dk_not-a-key-at-all-0000000000")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("status")).to_contain_text("refused")
    assert await page.evaluate(f"sessionStorage.getItem('{KEY_STORE}')") is None
    watched.errors.clear()  # Chromium reports the refused request itself as an error
    await sign_in(page)

    await page.get_by_test_id("nav-deliveries").click()
    await expect(page.get_by_test_id("delivery-row")).to_have_count(2)

    # The bulk replay counts first and changes nothing until confirmed.
    await page.get_by_test_id("bulk-dry-run").click()
    await expect(page.get_by_test_id("bulk-result")).to_have_text("2 deliveries match.")
    for found in (first, second):
        unchanged = await served.api.delivery(found["id"])
        assert (unchanged["status"], unchanged["attempt_count"]) == ("failed", 1)
    assert len(receiver.requests) == 2
    await page.get_by_test_id("bulk-confirm").click()
    await expect(page.get_by_test_id("bulk-done")).to_have_text("Replayed 2 deliveries.")
    await receiver.wait_for_requests(4)

    async def failed_twice() -> bool:
        found = [await served.api.delivery(d["id"]) for d in (first, second)]
        return all(d["status"] == "failed" and d["attempt_count"] == 2 for d in found)

    await wait_for(failed_twice)

    # Replay the selected one only.
    await page.get_by_test_id("nav-deliveries").click()
    row = page.locator(f'[data-testid="delivery-row"][data-delivery-id="{first["id"]}"]')
    await expect(row).to_be_visible()
    await row.get_by_label(f"Select {first['id']}").check()
    await expect(page.get_by_test_id("replay-selected")).to_have_text("Replay selected (1)")
    await page.get_by_test_id("replay-selected").click()
    await expect(page.get_by_test_id("status")).to_have_text("Replayed 1 of 1 deliveries.")
    await receiver.wait_for_requests(5)
    assert (await served.api.delivery(second["id"]))["attempt_count"] == 2

    # Endpoints: enable the disabled one, then rotate its secret, shown once.
    await page.get_by_test_id("nav-endpoints").click()
    ep_row = page.locator(f'[data-testid="endpoint-row"][data-endpoint-id="{endpoint["id"]}"]')
    await expect(ep_row.get_by_test_id("endpoint-state")).to_contain_text("disabled")
    await expect(ep_row).to_contain_text("<i>orders</i>")
    await ep_row.get_by_test_id("enable-endpoint").click()
    await expect(ep_row.get_by_test_id("endpoint-state")).to_have_text("enabled")
    status, shown = await served.api.call("GET", f"/v1/endpoints/{endpoint['id']}")
    assert status == 200 and shown["disabled"] is False
    await ep_row.get_by_test_id("rotate-endpoint").click()
    await ep_row.get_by_test_id("rotate-confirm").click()
    secret = page.get_by_test_id("new-secret-value")
    await expect(secret).to_have_value(re.compile(r"^whsec_"))
    new_secret = await secret.input_value()
    remember(new_secret)
    assert new_secret != endpoint["secret"]
    await page.get_by_test_id("hide-secret").click()
    await expect(page.get_by_test_id("new-secret")).to_have_count(0)

    # Readable in a narrow window: the page itself never scrolls sideways.
    await page.set_viewport_size({"width": 400, "height": 800})
    await expect(ep_row).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 400
    await page.get_by_test_id("nav-deliveries").click()
    await expect(page.get_by_test_id("deliveries-table")).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 400

    await assert_never_reloaded(watched)
    assert watched.errors == []
