"""The web dashboard in a real headless browser (the distribution's Chromium, driven by
Playwright) against the real stack: Envoy serving the page, the orchestrator, runners and
sandboxes behind it. Each page's screenshot goes to .prism/screenshots/ (printed at the end).

Sweeps are created through the API, then watched, sorted, filtered, plotted, downloaded from
and cancelled through the page, and checked through the API again."""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from gateway import dashboard
from prism.stack import ORCHESTRATOR
from tests.conftest import REPO, RunningStack, StackFactory

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / ".prism" / "screenshots"
HOSTILE = '<img src=x onerror="window.__pwned=1">'

# Slow enough (4 steps of 0.6 s, two trials at a time, six trials) that the page is open
# well before the sweep ends, so its trials are seen arriving.
TRAIN = """\
import json, os, time
p = json.loads(os.environ["PRISM_PARAMS"])
loss = abs(p["lr"] - 0.01) * 10 + 0.1 * p["layers"]
print("hello from trial", p)
for step in range(4):
    print("PRISM_METRIC " + json.dumps({"step": step, "loss": loss * (4 - step)}), flush=True)
    time.sleep(0.6)
os.makedirs("/workspace/output", exist_ok=True)
with open("/workspace/output/model.txt", "w") as f:
    f.write("lr=%s layers=%s" % (p["lr"], p["layers"]))
print(json.dumps({"loss": loss}))
"""

# Every string a trial controls, set to markup that would run if it were ever parsed as HTML.
HOSTILE_TRIAL = f"""\
import json, os
NAME = {HOSTILE!r}
print(NAME)
print("PRISM_METRIC " + json.dumps({{"step": 0, NAME: 1.0}}))
os.makedirs("/workspace/output", exist_ok=True)
with open("/workspace/output/" + NAME, "w") as f:
    f.write("harmless")
print(json.dumps({{"loss": 1.0, NAME: NAME}}))
"""

SLEEPER = "import time\ntime.sleep(120)\n"

QUICK = "import json\nprint(json.dumps({'loss': 1}))\n"

# Reports a metric every 0.4 s for 8 steps: long enough to restart the orchestrator midway.
STEPS = """\
import json, time
for step in range(8):
    print("PRISM_METRIC " + json.dumps({"step": step, "loss": 8 - step}), flush=True)
    time.sleep(0.4)
print(json.dumps({"loss": 0}))
"""

# Reports its loss, x, at steps 1 to 4: once a trial has finished, the rule (asha) prunes a
# worse one at its first step.
CURVE = """\
import json, os, time
x = json.loads(os.environ["PRISM_PARAMS"])["x"]
for step in range(1, 5):
    print("PRISM_METRIC " + json.dumps({"step": step, "loss": x}), flush=True)
    time.sleep(0.5)
print(json.dumps({"loss": x}))
"""

# Collects what the Content-Security-Policy refused, before any script of the page runs.
CSP_PROBE = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(e.violatedDirective + " " + e.blockedURI));
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def screenshots(request: pytest.FixtureRequest) -> Iterator[Path]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield SCREENSHOTS
    taken = sorted(p.name for p in SCREENSHOTS.glob("*.png"))
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\ndashboard screenshots in {SCREENSHOTS}: {', '.join(taken)}")


@contextmanager
def dashboard_tab(browser: Browser, gateway: str) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage) on the dashboard; no JS error, no CSP refusal."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000})
    context.add_init_script(CSP_PROBE)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(f"http://{gateway}/ui/")
    try:
        yield opened
        assert opened.evaluate("window.__csp") == []
        assert errors == []
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser, stack: RunningStack) -> Iterator[Page]:
    with dashboard_tab(browser, stack.gateway) as opened:
        yield opened


def sign_in(page: Page, token: str) -> None:
    page.fill("#token", token)
    page.click("#login-form button")


def create(stack: RunningStack, spec: dict[str, Any]) -> str:
    reply = stack.create(spec)
    assert reply.status == 200, reply.body
    return str(reply.body["id"])


# The number of points of each metric curve drawn so far (none before the first is drawn).
# In page.wait_for_function always inside a function ("() => ..."): Playwright evaluates a
# bare expression with eval() once it has to poll, which the page's CSP refuses.
CURVE_LENGTHS = (
    "(echarts.getInstanceByDom(document.getElementById('curves'))?.getOption()?.series ?? [])"
    ".map((s) => s.data.length)"
)


# Resolves once the page has painted twice: whatever was queued before it has run.
NEXT_FRAME = "new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"

# The text of a chart's tooltip once shown (a rich text on ECharts' canvas, never HTML).
TOOLTIP_TEXT = """(id) => echarts.getInstanceByDom(document.getElementById(id)).getZr().storage
  .getRoots().filter((e) => typeof e.style?.text === "string").map((e) => e.style.text)
  .join("\\n")"""


def hover_chart(page: Page, element_id: str) -> str:
    """Moves the mouse onto the middle of the parallel coordinates' first line, or of the
    chart (the curves' tooltip follows the axis); the tooltip's text. Tried again from
    off the chart a few times: the page redraws a live chart, which hides its tooltip."""
    chart = page.locator(f"#{element_id}")
    chart.scroll_into_view_if_needed()
    for _ in range(10):
        box = chart.bounding_box()
        assert box is not None
        points = page.evaluate(
            """(id) => echarts.getInstanceByDom(document.getElementById(id)).getZr().storage
              .getDisplayList().find((e) => e.type === "polyline")?.shape.points ?? null""",
            element_id,
        )
        page.mouse.move(0, 0)
        if points:
            (x0, y0), (x1, y1) = points[0], points[1]
            page.mouse.move(box["x"] + (x0 + x1) / 2, box["y"] + (y0 + y1) / 2, steps=4)
        else:
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
        try:
            page.wait_for_function(
                f"(id) => ({TOOLTIP_TEXT})(id).length > 0", arg=element_id, timeout=3000
            )
        except PlaywrightTimeoutError:
            continue
        text: str = page.evaluate(TOOLTIP_TEXT, element_id)
        return text
    raise AssertionError(f"no tooltip on #{element_id} after 10 tries")


def chart_option(page: Page, element_id: str) -> dict[str, Any]:
    """What the chart draws, from ECharts' own API."""
    option: dict[str, Any] = page.evaluate(
        "(id) => echarts.getInstanceByDom(document.getElementById(id)).getOption()", element_id
    )
    return option


def trial_rows(page: Page) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = page.evaluate(
        """() => {
          const names = [...document.querySelectorAll('#trials thead th')]
            .map((th) => th.dataset.key);
          return [...document.querySelectorAll('#trials tbody tr')].map((tr) =>
            Object.fromEntries([...tr.cells].map((td, i) => [names[i], td.textContent])
              .concat([['row', tr.dataset.index], ['class', tr.className]])));
        }"""
    )
    return rows


def test_the_page_needs_no_token_and_the_api_stays_closed(stack: RunningStack) -> None:
    base = f"http://{stack.gateway}"
    with urllib.request.urlopen(f"{base}/ui/", timeout=30) as reply:
        assert reply.status == 200
        assert reply.headers["content-type"] == "text/html; charset=utf-8"
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["referrer-policy"] == "no-referrer"
        assert reply.headers["content-security-policy"] == dashboard.CONTENT_SECURITY_POLICY
        assert reply.read() == (dashboard.UI_DIR / "index.html").read_bytes()
    with urllib.request.urlopen(f"{base}/ui", timeout=30) as reply:  # redirected to /ui/
        assert reply.url == f"{base}/ui/"
    for served in dashboard.files():
        with urllib.request.urlopen(base + served.url, timeout=30) as reply:
            assert reply.headers["content-type"] == served.content_type
            assert reply.read() == served.path.read_bytes(), served.url
    # The redirect and the 404 carry the security headers too.
    connection = http.client.HTTPConnection(stack.gateway, timeout=30)
    connection.request("GET", "/ui")
    redirect = connection.getresponse()
    assert redirect.status == 301 and redirect.headers["location"].endswith("/ui/")
    assert redirect.headers["content-security-policy"] == dashboard.CONTENT_SECURITY_POLICY
    assert redirect.headers["x-content-type-options"] == "nosniff"
    connection.close()
    # Only GETs of the dashboard's files are open; the API is as closed as before, however the
    # path is spelled (a dot segment, percent-encoded or not) and for HEAD too.
    for method, path, status in [
        ("GET", "/v1/sweeps", 401),
        ("HEAD", "/v1/sweeps", 401),
        ("GET", "/", 401),
        ("POST", "/ui/", 401),
        ("HEAD", "/ui/", 401),
        ("GET", "/ui/../v1/sweeps", 401),
        ("HEAD", "/ui/../v1/sweeps", 401),
        ("GET", "/ui/%2e%2e/v1/sweeps", 401),
        ("GET", "/ui/..%2fv1/sweeps", 404),
        ("GET", "/ui/..%2Fv1/sweeps", 404),
        ("GET", "/ui/missing.js", 404),
    ]:
        data = None if method in ("GET", "HEAD") else b"{}"
        request = urllib.request.Request(base + path, method=method, data=data)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == status, (method, path)
        if status == 404:  # the dashboard's own 404, not the API's
            assert refused.value.headers["x-content-type-options"] == "nosniff"
            assert refused.value.headers["content-type"] == "application/json"
            assert json.load(refused.value)["message"] == "no such file in the dashboard"
        refused.value.close()


def test_a_wrong_token_is_refused_and_another_can_be_entered(
    page: Page, stack: RunningStack, screenshots: Path
) -> None:
    expect(page.locator("#login")).to_be_visible()
    page.screenshot(path=screenshots / "1-token.png", full_page=True)
    sign_in(page, "not-the-token")
    expect(page.locator("#notice")).to_contain_text("refused the token (401")
    expect(page.locator("#login")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('prism.token')") is None
    page.screenshot(path=screenshots / "2-token-refused.png", full_page=True)
    sign_in(page, stack.token)
    expect(page.locator("#sweeps")).to_be_visible()
    expect(page.locator("#notice")).to_be_hidden()


def test_a_sweep_live_with_its_plot_curves_logs_and_artifacts(
    page: Page, stack: RunningStack, screenshots: Path
) -> None:
    sign_in(page, stack.token)
    expect(page.locator("#sweeps")).to_be_visible()
    sweep_id = create(
        stack,
        {
            "task": "dashboard: tune lr and depth",
            "script": TRAIN,
            "parameters": {"grid": {"lr": [0.1, 0.01, 0.001], "layers": [1, 2]}},
            "objective": {"metric": "loss", "goal": "minimize"},
            "maxParallel": 2,
        },
    )
    # The list polls: the new sweep appears without a reload, running.
    row = page.locator(f'#sweeps tr[data-sweep="{sweep_id}"]')
    expect(row).to_contain_text("running")
    page.screenshot(path=screenshots / "3-sweeps.png", full_page=True)

    row.locator("a").click()
    expect(page.locator("#trials tbody tr")).to_have_count(6)
    seen_first = trial_rows(page)
    # The stream brings the rest in: every trial finishes on the open page.
    expect(page.locator("#view h1")).to_contain_text("done", timeout=90_000)
    expect(page.locator("#trials tbody tr td:nth-child(2)", has_text="finished")).to_have_count(6)
    assert sum(r["state"] == "finished" for r in seen_first) < 6

    sweep = stack.finished(sweep_id)
    best = sweep["bestTrial"]["index"]
    expect(page.locator("#trials tr.best")).to_have_attribute("data-index", str(best))
    expect(page.locator(".summary .best-value")).to_contain_text("loss = ")

    plot = chart_option(page, "plot")
    assert [axis["name"] for axis in plot["parallelAxis"]] == ["layers", "lr", "loss"]
    lines = plot["series"][0]["data"]
    assert len(lines) == 6
    assert [line["name"] for line in lines].count(f"trial {best} (best)") == 1
    page.wait_for_function(f"() => ({CURVE_LENGTHS}).length === 6")
    curves = chart_option(page, "curves")
    assert all(len(series["data"]) == 4 for series in curves["series"])
    assert page.locator("#metric-choice").input_value() == "loss"

    # Sorted by the objective, ascending: the best trial comes first; then the other way.
    page.click('#trials th[data-key="objective"]')
    assert trial_rows(page)[0]["row"] == str(best)
    page.click('#trials th[data-key="objective"]')
    assert trial_rows(page)[-1]["row"] == str(best)
    page.select_option("#outcome-filter", "failed")
    expect(page.locator("#trials tbody tr")).to_have_count(0)
    page.select_option("#outcome-filter", "succeeded")
    expect(page.locator("#trials tbody tr")).to_have_count(6)
    page.screenshot(path=screenshots / "4-sweep.png", full_page=True)

    page.click(f'#trials tr[data-index="{best}"]')
    expect(page.locator("#trial pre.stdout")).to_contain_text("hello from trial")
    params = sweep["trials"][best]["params"]
    with page.expect_download() as downloading:
        page.click("#trial .artifacts button")
    download = downloading.value
    assert download.suggested_filename == "model.txt"
    saved = Path(download.path()).read_text()
    assert saved == f"lr={params['lr']} layers={int(params['layers'])}"
    page.screenshot(path=screenshots / "5-trial.png", full_page=True)

    # Two quick clicks: the first row's answer, arriving last, does not replace the second's.
    other = (best + 1) % 6
    held: list[Route] = []
    page.route(re.compile(rf"/trials/{other}$"), lambda route: held.append(route))
    page.click(f'#trials tr[data-index="{other}"]')
    for _ in range(100):  # until the request reaches the handler
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1
    page.click(f'#trials tr[data-index="{best}"]')
    expect(page.locator("#trial h2")).to_have_text(f"Trial {best}")
    with page.expect_response(re.compile(rf"/trials/{other}$")):
        held[0].continue_()
    page.evaluate(NEXT_FRAME)
    expect(page.locator("#trial h2")).to_have_text(f"Trial {best}")
    expect(page.locator("#trials tr.selected")).to_have_attribute("data-index", str(best))


def test_a_pruned_trial_shows_as_pruned_with_its_step(
    page: Page, stack: RunningStack, screenshots: Path
) -> None:
    # One trial at a time, each asked for once the one before has ended: the search and
    # the rule's decisions follow from the seed alone.
    sweep_id = create(
        stack,
        {
            "task": "dashboard: prune the losing trials",
            "script": CURVE,
            "parameters": {"random": {"parameters": {"x": {"int": [0, 9]}}}},
            "objective": {"metric": "loss"},
            "maxParallel": 1,
            "search": {"sampler": "random", "trials": 6, "seed": 1},
            "earlyStopping": {"rule": "asha", "minResource": 1, "reductionFactor": 2},
        },
    )
    sweep = stack.finished(sweep_id, timeout=180)
    pruned = [t for t in sweep["trials"] if t["outcome"] == "pruned"]
    assert pruned and sweep["counts"]["pruned"] == len(pruned), sweep["counts"]
    sign_in(page, stack.token)
    page.goto(f"http://{stack.gateway}/ui/#/sweeps/{sweep_id}")
    expect(page.locator("#trials tbody tr")).to_have_count(6)
    expect(page.locator(".summary .counts")).to_contain_text(f"{len(pruned)} pruned")
    expect(page.locator(".summary")).to_contain_text("random sampler, 6 trials at most; asha")
    expect(page.locator(".summary")).not_to_contain_text("null")
    page.select_option("#outcome-filter", "pruned")
    expect(page.locator("#trials tbody tr")).to_have_count(len(pruned))
    expect(page.locator("#trials tbody td.outcome-pruned")).to_have_count(len(pruned))
    rows = trial_rows(page)
    assert [r["pruned"] for r in rows] == [str(t["prunedStep"]) for t in pruned]
    page.click(f'#trials tr[data-index="{pruned[0]["index"]}"]')
    facts = page.locator("#trial dl")
    expect(facts).to_contain_text(f"pruned at step{pruned[0]['prunedStep']}")
    expect(page.locator("#trial pre.intermediate")).to_contain_text("step 1: ")
    # The optimisation history: a point a succeeded trial, and the best value so far.
    history = chart_option(page, "history")
    points, best = history["series"][0]["data"], history["series"][1]["data"]
    assert [p[1] for p in points] == [h["value"] for h in sweep["history"]]
    assert [b[1] for b in best] == [h["bestValue"] for h in sweep["history"]]
    page.screenshot(path=screenshots / "9-pruned.png", full_page=True)


def test_the_cancel_button_cancels_a_running_sweep(
    page: Page, stack: RunningStack, screenshots: Path
) -> None:
    sweep_id = create(
        stack,
        {
            "task": "dashboard: cancel me",
            "script": SLEEPER,
            "parameters": {"list": [{"i": 0}, {"i": 1}]},
            "limits": {"wallSeconds": 300},
        },
    )
    sign_in(page, stack.token)
    page.goto(f"http://{stack.gateway}/ui/#/sweeps/{sweep_id}")
    expect(page.locator("#trials tbody tr td:nth-child(2)", has_text="running")).to_have_count(
        2, timeout=60_000
    )
    page.click("#cancel")
    expect(page.locator("#view h1")).to_contain_text("cancelled", timeout=60_000)
    expect(page.locator("#cancel")).to_be_disabled()
    assert stack.finished(sweep_id)["state"] == "cancelled"
    expect(page.locator("#trials tbody tr td:nth-child(3)", has_text="cancelled")).to_have_count(2)
    page.screenshot(path=screenshots / "6-cancelled.png", full_page=True)


def test_what_a_trial_writes_is_shown_as_text_and_never_runs(
    page: Page, stack: RunningStack, screenshots: Path
) -> None:
    sweep_id = create(
        stack,
        {
            "task": HOSTILE,
            "script": HOSTILE_TRIAL,
            "parameters": {"list": [{"note": HOSTILE}]},
            "objective": {"metric": "loss"},
        },
    )
    assert stack.finished(sweep_id)["state"] == "done"
    sign_in(page, stack.token)
    expect(page.locator(f'#sweeps tr[data-sweep="{sweep_id}"] td:nth-child(2)')).to_have_text(
        HOSTILE
    )
    page.goto(f"http://{stack.gateway}/ui/#/sweeps/{sweep_id}")
    page.click('#trials tr[data-index="0"]')
    expect(page.locator("#trial pre.stdout")).to_contain_text(HOSTILE)
    expect(page.locator("#trial .artifact-name")).to_have_text(HOSTILE)
    expect(page.locator("#trial pre.result")).to_contain_text(json.dumps(HOSTILE))
    expect(page.locator(".summary")).to_contain_text(HOSTILE)
    expect(page.locator("#metric-choice option")).to_have_text([HOSTILE])
    with page.expect_download() as downloading:
        page.click("#trial .artifacts button")
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", downloading.value.suggested_filename)
    assert Path(downloading.value.path()).read_text() == "harmless"
    # The charts' tooltips show what the trial wrote (a parameter's value on the parallel
    # coordinates, the metric's name on the curves), painted as text (renderMode richText).
    images = page.evaluate("document.images.length")
    page.wait_for_function(f"() => ({CURVE_LENGTHS}).length === 1")
    assert HOSTILE in hover_chart(page, "plot")
    assert HOSTILE in hover_chart(page, "curves")
    page.screenshot(path=screenshots / "7-hostile.png", full_page=True)
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.images.length") == images
    assert page.locator("#view img, #notice img").count() == 0


def test_a_sweep_that_cannot_be_read_leaves_the_list_up(page: Page, stack: RunningStack) -> None:
    sweep_id = create(
        stack, {"task": "dashboard: unreadable", "script": QUICK, "objective": {"metric": "loss"}}
    )
    stack.finished(sweep_id)
    # Reading the sweep whole (for its best value) fails: the list shows it, best left empty.
    whole = re.compile(rf"/v1/sweeps/{sweep_id}$")
    page.route(whole, lambda route: route.fulfill(status=500, json={"message": "too large"}))
    sign_in(page, stack.token)
    row = page.locator(f'#sweeps tr[data-sweep="{sweep_id}"]')
    expect(row).to_contain_text("done")
    expect(row.locator(".best-value")).to_have_text("")
    # It is read again at the next poll.
    page.unroute(whole)
    expect(row.locator(".best-value")).to_have_text("loss = 1 (trial 0)")


def test_a_malformed_link_shows_no_such_sweep(page: Page, stack: RunningStack) -> None:
    sign_in(page, stack.token)
    expect(page.locator("#sweeps")).to_be_visible()
    page.goto(f"http://{stack.gateway}/ui/#/sweeps/%E0")
    expect(page.locator("#notice")).to_contain_text("No such sweep")
    page.click("text=all sweeps")
    expect(page.locator("#sweeps")).to_be_visible()


def test_the_curves_keep_within_the_page_budget(page: Page, stack: RunningStack) -> None:
    sweep_id = create(stack, {"task": "dashboard: many metrics", "script": QUICK})
    # Its events, as the stream would bring them: 3 trials of 1,000 steps of 100 metrics each,
    # 300,000 values, past the page's 200,000.
    names = [f"m{i:02}" for i in range(100)]
    blocks: list[dict[str, Any]] = []
    for step in range(1000):
        for trial in range(3):
            values = {"step": step, **dict.fromkeys(names, float(step))}
            event = {"seq": len(blocks) + 1, "kind": "metric", "trialIndex": trial}
            blocks.append({**event, "data": {"values": values}})
    blocks.append({"seq": len(blocks) + 1, "kind": "sweep_finished", "final": True})
    body = "".join(f"data: {json.dumps(block)}\n\n" for block in blocks)
    page.route(
        re.compile(rf"/v1/sweeps/{sweep_id}/events"),
        lambda route: route.fulfill(body=body, content_type="text/event-stream"),
    )
    sign_in(page, stack.token)
    page.goto(f"http://{stack.gateway}/ui/#/sweeps/{sweep_id}")
    expect(page.locator("#live")).to_contain_text("stream ended", timeout=60_000)
    page.evaluate(NEXT_FRAME)
    lengths = page.evaluate(CURVE_LENGTHS)
    # Each point holds 100 values: 2,000 points at most, every trial still drawn.
    assert len(lengths) == 3 and all(lengths) and sum(lengths) <= 2000, lengths


def test_the_page_rides_out_an_orchestrator_restart(
    browser: Browser, make_stack: StackFactory, screenshots: Path
) -> None:
    stack = make_stack(runners=1)
    sweep_id = create(stack, {"task": "dashboard: restart", "script": STEPS})
    with dashboard_tab(browser, stack.gateway) as page:
        sign_in(page, stack.token)
        page.goto(f"http://{stack.gateway}/ui/#/sweeps/{sweep_id}")
        page.wait_for_function(f"() => ({CURVE_LENGTHS}).length === 1")
        # The table drawn from a read before the kill (a busy machine may draw the curve,
        # from the event stream, first).
        expect(page.locator('#trials tr[data-index="0"]')).to_be_visible()
        stack.stack.kill(ORCHESTRATOR)
        # The sweep's page reads again: the gateway answers 503 while nothing is there.
        page.click('#trials tr[data-index="0"]')
        expect(page.locator("#notice")).to_contain_text("503")
        page.screenshot(path=screenshots / "8-unavailable.png", full_page=True)
        stack.stack.start(ORCHESTRATOR)
        stack.stack.wait_ready(ORCHESTRATOR)
        expect(page.locator("#view h1")).to_contain_text("done", timeout=60_000)
        expect(page.locator("#notice")).to_be_hidden()
        # The stream resumed after the last event seen: the curve has every recorded step once
        # (the runner sends metrics live only, so steps printed while no orchestrator was there
        # were never recorded).
        recorded = recorded_steps(stack, sweep_id)
        page.wait_for_function(f"(n) => ({CURVE_LENGTHS})[0] === n", arg=len(recorded))
        assert [x for x, _ in chart_option(page, "curves")["series"][0]["data"]] == recorded


def recorded_steps(stack: RunningStack, sweep_id: str) -> list[int]:
    """The steps of the sweep's metric events, as the orchestrator recorded them."""
    request = urllib.request.Request(
        f"http://{stack.gateway}/v1/sweeps/{sweep_id}/events",
        headers={"Authorization": f"Bearer {stack.token}"},
    )
    steps = []
    with urllib.request.urlopen(request, timeout=60) as reply:
        for raw in reply:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            event = json.loads(line.removeprefix("data:"))
            if event["kind"] == "metric":
                steps.append(int(event["data"]["values"]["step"]))
            if event["final"]:
                break
    return steps
