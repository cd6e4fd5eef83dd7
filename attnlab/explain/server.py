"""A web explorer and REST API over one model: type a text, see its attention.

    app = create_app("path/to/all-MiniLM-L6-v2")   # a FastAPI app
    serve("path/to/all-MiniLM-L6-v2", port=8000)   # the same, run by uvicorn on 127.0.0.1

Endpoints (see ``/docs``): ``GET /`` the page (a text box and the three views of
:mod:`attnlab.explain.explorer`, fed from the API), ``POST /api/explain``, ``GET /api/methods``,
``GET /api/health``. Needs ``fastapi`` and ``uvicorn``. Limits, headers and load figures: docs/serving.md.

Limits (arguments of :func:`create_app`): a body over ``max_body_bytes`` or a text over
``max_tokens`` 413; more than ``max_concurrent`` explanations in progress 503 with ``Retry-After``;
one past ``timeout_s`` 504. Explanations run one at a time on the model (``capture`` swaps
kernels) in one worker thread, the rest queued; a timed-out one is stopped at its next module call (a
forward pre-hook on every module), so its slot comes back. Other bad input gets a 4xx JSON
``{"detail": ...}`` (empty text, a wrong type, an unknown field, malformed JSON 422; an unknown
relevance method 400) and the server keeps serving. Every response carries nosniff, DENY framing,
no-referrer and a Content-Security-Policy; no CORS header unless ``cors_origins`` names origins.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import logging
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import Headers, MutableHeaders
from torch import nn

from .explorer import encode_attentions, render_page
from .methods import METHODS

DEFAULT_METHODS = ("rollout", "raw")
INPUT_DESCRIPTIONS = {"ig": "Integrated Gradients on the token embeddings (captum)",
                      "occlusion": "leave one token out", "random": "the random baseline"}
FLOW_MAX_TOKENS = 48   # attention flow runs ~L^2 max-flows; beyond this it takes minutes
CHARS_PER_TOKEN = 64   # texts longer than max_tokens * this are refused before tokenizing
MAX_BODY_BYTES = 64 * 1024  # 512 tokens of English is ~3 KB of JSON
MAX_CONCURRENT = 4
TIMEOUT_S = 60.0
DOCS_PATHS = ("/docs", "/redoc")  # FastAPI's pages load Swagger UI / ReDoc from a CDN
log = logging.getLogger(__name__)


@dataclass
class Explainable:
    """A model ready to explain: the pipeline's subject, its tokenizer and its limits."""

    subject: Any
    tokenizer: Any
    max_positions: int | None
    name: str

    @property
    def model(self) -> nn.Module:
        return self.subject.model


def load_explainable(directory: str | Path) -> Explainable:
    """Load what :func:`attnlab.explain.pipeline.load_subject` loads: a checkpoint directory
    (Hugging Face BERT format or attnlab's ``save_pretrained``) or a trainer run directory
    (a seq2seq recipe: relevance over the source tokens of the model's output)."""
    from .pipeline import load_subject

    subject = load_subject(directory)
    if subject.rnn:
        raise ValueError(f"{directory}: an RNN seq2seq run; the explorer draws self-attention, which an RNN "
                         "does not have (use attnlab explain)")
    tokenizer = subject.tokenizer
    limit = getattr(getattr(subject.model, "config", None), "max_len", None) or tokenizer.model_max_length
    return Explainable(subject, tokenizer, limit, subject.name)


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is a 422 naming it, not ignored

    text: str = Field(description="the text to explain", examples=["A man is eating food."])
    methods: list[str] = Field(default=list(DEFAULT_METHODS), max_length=16,
                               description="relevance methods, names from GET /api/methods")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is empty")
        return v


class SparseAttentions(BaseModel):
    """Per (layer, head, query row) the top-k keys; see attnlab.explain.explorer.encode_attentions."""

    layers: int
    heads: int
    length: int
    k: int
    thumbSize: int
    idx: str = Field(description="base64 little-endian uint16, layers*heads*length*k key indices")
    w: str = Field(description="base64 uint8, the same entries' weights / row maximum * 255")
    scale: str = Field(description="base64 float32, layers*heads*length row maxima")
    rest: str = Field(description="base64 float32, each row's mass outside its top k")
    thumb: str = Field(description="base64 uint8, layers*heads*thumbSize^2 downsampled maps")


class ExplainResponse(BaseModel):
    title: str
    tokens: list[str]
    prediction: str | None = Field(description="the model's output in words (an embedding model: its norm)")
    attentions: SparseAttentions
    relevances: dict[str, list[float]] = Field(description="per method, one score per token (source tokens for seq2seq)")


class MethodInfo(BaseModel):
    name: str
    needs_grads: bool
    description: str


FORM = """<form id="explain-form"><textarea id="text" placeholder="Type a sentence">The quick brown fox jumps over the lazy dog.</textarea>
<div>{boxes} <button id="explain" type="submit">Explain</button><span id="status"></span></div></form>"""


# ----------------------------------------------------------------------------- limits


class ExplanationTimeout(Exception):
    """Raised inside a model call once its request's deadline has passed."""


class _Gate:
    """Explanations in progress: at most ``slots`` admitted (running, or waiting for the model);
    a slot comes back when the work ends, not when its request gives up waiting."""

    def __init__(self, slots: int):
        self.slots, self.in_flight = slots, 0
        self.mean_s = 0.1  # moving average of an explanation's seconds, for Retry-After
        self._lock = threading.Lock()  # entered from the event loop, left from the worker thread

    def try_enter(self) -> bool:
        with self._lock:
            if self.in_flight >= self.slots:
                return False
            self.in_flight += 1
            return True

    def leave(self, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.mean_s = 0.8 * self.mean_s + 0.2 * seconds

    def retry_after(self) -> int:
        """Seconds until the work now admitted should be done (one at a time), at least 1."""
        return max(1, math.ceil(self.mean_s * self.in_flight))


class _Deadline:
    """The deadline of the explanation running on the model; a pre-hook on every module checks it."""

    def __init__(self, model: nn.Module):
        self.at = math.inf
        self.stopping = False
        for m in model.modules():
            m.register_forward_pre_hook(self._check)

    def _check(self, module: nn.Module, args: Any) -> None:
        if self.stopping or time.monotonic() > self.at:
            raise ExplanationTimeout("the server stopped" if self.stopping else "deadline passed")


class _BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is a 413, by its Content-Length before
    any of it is read, or as soon as a streamed (chunked) body passes the limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:  # h11 refuses bad ones
            detail = f"request body of {length} bytes is larger than this server takes ({self.max_bytes})"
            return await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
        seen = 0

        async def receive_limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # FastAPI re-raises an HTTPException from reading the body
                raise HTTPException(413, f"request body is larger than this server takes ({self.max_bytes} bytes)")
            return message

        await self.app(scope, receive_limited, send)


class _SecurityHeaders:
    """ASGI middleware: the security headers on every response the app sends."""

    HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope["path"].startswith(DOCS_PATHS)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in self.HEADERS.items():
                    headers[k] = v
                if "content-security-policy" not in headers:  # the page sets its own
                    headers["Content-Security-Policy"] = ("frame-ancestors 'none'" if docs
                                                          else "default-src 'none'; frame-ancestors 'none'")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def page_csp(page: str) -> str:
    """The explorer page's Content-Security-Policy: its inline ``<script>`` and ``<style>``
    allowed by SHA-256 hash (no 'unsafe-inline'), requests to this server only, no framing."""

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
                        for b in bodies) or "'none'"

    return (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
            "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def bind_warning(host: str, port: int) -> str | None:
    """What to tell the user before binding ``host``: None for a loopback address."""
    if is_loopback(host):
        return None
    return (f"binding {host}:{port}, not a loopback address: anyone who can reach this machine can use the "
            "explorer and its API, which have no authentication (the default, 127.0.0.1, is this machine only)")


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body, with an unknown field's message naming the fields there are."""
    errors = jsonable_encoder(exc.errors())
    for e in errors:
        if e.get("type") == "extra_forbidden":
            e["msg"] = (f"unknown field {e['loc'][-1]!r}; the fields are "
                        + ", ".join(ExplainRequest.model_fields))
    return JSONResponse({"detail": errors}, status_code=422)


# ----------------------------------------------------------------------------- the app


def create_app(model_dir_or_run_dir: str | Path, max_tokens: int | None = None, *,
               max_body_bytes: int = MAX_BODY_BYTES, max_concurrent: int = MAX_CONCURRENT,
               timeout_s: float = TIMEOUT_S, cors_origins: Sequence[str] = ()) -> FastAPI:
    """The FastAPI app explaining one model.

    Args:
        model_dir_or_run_dir: a checkpoint directory (see :func:`load_explainable`).
        max_tokens: the longest input accepted (special tokens included); by default the
            model's number of positions.
        max_body_bytes: the largest request body accepted (413 beyond).
        max_concurrent: explanations in progress at once (one runs on the model at a time, the
            others wait their turn); one more is answered 503 with Retry-After.
        timeout_s: seconds an explanation may take from admission, waiting included (504 beyond).
        cors_origins: origins allowed to call the API from a browser (none by default: no
            Access-Control-Allow-Origin header).
    """
    for name, value in (("max_tokens", max_tokens or 1), ("max_body_bytes", max_body_bytes),
                        ("max_concurrent", max_concurrent)):
        if value < 1:
            raise ValueError(f"create_app: {name} must be at least 1, got {value}")
    if not timeout_s > 0:
        raise ValueError(f"create_app: timeout_s must be positive, got {timeout_s}")
    ex = load_explainable(model_dir_or_run_dir)
    limit = max_tokens or ex.max_positions or 512
    if ex.max_positions and limit > ex.max_positions:
        raise ValueError(f"create_app: max_tokens={max_tokens} exceeds the model's {ex.max_positions} positions")
    gate, deadline = _Gate(max_concurrent), _Deadline(ex.model)
    # One worker: one forward at a time, since capture() swaps kernels while it runs; the gate
    # bounds its queue. Four workers behind a lock (one malloc arena each) left MiniLM's RSS +24 MiB
    # after a 50x4 burst and creeping 1-4 MiB a burst; one worker: +7 MiB, then flat.
    pool = ThreadPoolExecutor(1, thread_name_prefix="attnlab-explain")

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        deadline.stopping = True  # a running explanation stops at its next module call
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="attnlab explorer", description=f"Attention of {ex.name}, explained.", lifespan=lifespan,
                  exception_handlers={RequestValidationError: _validation_error})
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type"])
    app.add_middleware(_SecurityHeaders)  # added last: outermost, so 413s and CORS answers get them too
    app.state.explainable, app.state.max_tokens, app.state.gate = ex, limit, gate
    app.state.limits = {"max_tokens": limit, "max_body_bytes": max_body_bytes, "max_concurrent": max_concurrent,
                        "timeout_s": timeout_s, "cors_origins": tuple(cors_origins)}
    boxes = " ".join(
        f'<label><input type="checkbox" name="method" value="{m}"{" checked" if m in DEFAULT_METHODS else ""}>{m}</label>'
        for m in ex.subject.known_methods())
    html = render_page(None, form=FORM.format(boxes=boxes), title=f"attnlab explorer: {ex.name}")
    csp = page_csp(html)

    @app.get("/", response_class=HTMLResponse, summary="The explorer page")
    async def page() -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": csp})

    @app.get("/api/health", summary="Liveness and load")
    async def health() -> dict:
        return {"status": "ok", "model": ex.name, "max_tokens": limit, "in_flight": gate.in_flight,
                "max_concurrent": max_concurrent}

    @app.get("/api/methods", response_model=list[MethodInfo], summary="Relevance methods")
    async def methods() -> list[MethodInfo]:
        """The methods that apply to this model (a seq2seq model has fewer)."""
        return [MethodInfo(name=n, needs_grads=METHODS[n].needs_grads, description=METHODS[n].description)
                if n in METHODS else MethodInfo(name=n, needs_grads=n == "ig", description=INPUT_DESCRIPTIONS[n])
                for n in ex.subject.known_methods()]

    def work(text: str, names: tuple[str, ...], until: float) -> JSONResponse:
        """In the worker thread: the explanation, encoded and serialised; frees its slot when done.
        Its ``Server-Timing`` header says how long it waited for the worker and how long it ran."""
        from . import pipeline

        start = time.monotonic()
        try:
            if start > until:
                raise ExplanationTimeout("deadline passed while waiting for the model")
            deadline.at = until
            try:
                res = pipeline.explain_text(ex.subject, text, names)
            finally:
                deadline.at = math.inf
            info = res.info
            prediction = f"{res.target_description} = {info['target_value']:.4f}"
            if "output" in info:
                prediction = f"output {info['output']!r}; {prediction}"
            resp = JSONResponse({"title": ex.name, "tokens": res.tokens, "prediction": prediction,
                                 "attentions": encode_attentions(res.attentions()), "relevances": res.relevances})
            queued_ms, ran_ms = (start - until + timeout_s) * 1e3, (time.monotonic() - start) * 1e3
            resp.headers["Server-Timing"] = f"queue;dur={queued_ms:.1f}, explain;dur={ran_ms:.1f}"
            return resp
        finally:
            gate.leave(time.monotonic() - start)

    @app.post("/api/explain", response_model=ExplainResponse, summary="Attention maps and relevance of a text",
              responses={400: {"description": "unknown or unsuitable method"},
                         413: {"description": "request body over max_body_bytes, or text over max_tokens"},
                         422: {"description": "empty text, a wrong type, an unknown field or malformed JSON"},
                         503: {"description": "max_concurrent explanations in progress; see Retry-After"},
                         504: {"description": "the explanation took longer than timeout_s"}})
    async def explain(req: ExplainRequest) -> JSONResponse:
        try:
            names = ex.subject.check_methods(req.methods)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        if len(req.text) > limit * CHARS_PER_TOKEN:
            raise HTTPException(413, f"text of {len(req.text)} characters is longer than this server takes")
        n = len(ex.tokenizer.encode(req.text))
        if n > limit:
            raise HTTPException(413, f"text is {n} tokens; the limit is {limit}")
        if n > FLOW_MAX_TOKENS and "flow" in names:
            raise HTTPException(400, f"method 'flow' is limited to {FLOW_MAX_TOKENS} tokens (this text: {n})")
        if not gate.try_enter():
            wait = gate.retry_after()
            raise HTTPException(503, f"busy: {max_concurrent} explanations in progress (max_concurrent); "
                                     f"retry after {wait} s", headers={"Retry-After": str(wait)})
        until = time.monotonic() + timeout_s
        try:
            job = asyncio.get_running_loop().run_in_executor(pool, work, req.text, names, until)
        except RuntimeError:  # the pool is shut down: the server is stopping
            gate.leave(0.0)
            raise HTTPException(503, "the server is stopping", headers={"Retry-After": "1"}) from None
        job.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even after a 504
        try:
            return await asyncio.wait_for(asyncio.shield(job), timeout_s)
        except (asyncio.TimeoutError, ExplanationTimeout):
            raise HTTPException(504, f"the explanation took longer than {timeout_s:g} s (timeout_s)") from None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        except Exception as e:  # noqa: BLE001 - a 500 inside the middleware, so it gets the headers
            log.exception("explanation failed")
            raise HTTPException(500, f"the explanation failed: {type(e).__name__} (see the server log)") from None

    return app


def run(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run ``app`` with uvicorn until interrupted (no ``Server`` header)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)


def serve(model_dir_or_run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
          max_tokens: int | None = None, **limits: Any) -> None:
    """Run the explorer with uvicorn until interrupted.

    Args:
        model_dir_or_run_dir: a checkpoint directory.
        host: the interface to bind; another than loopback warns (there is no authentication).
        port: the TCP port.
        max_tokens: the longest input accepted (default: the model's positions).
        limits: ``max_body_bytes``, ``max_concurrent``, ``timeout_s``, ``cors_origins`` of :func:`create_app`.
    """
    import warnings

    app = create_app(model_dir_or_run_dir, max_tokens=max_tokens, **limits)
    if (note := bind_warning(host, port)) is not None:
        warnings.warn(note, stacklevel=2)
    run(app, host, port)


__all__ = ["create_app", "serve", "run", "load_explainable", "bind_warning", "is_loopback", "page_csp",
           "Explainable", "ExplainRequest", "ExplainResponse", "ExplanationTimeout"]
