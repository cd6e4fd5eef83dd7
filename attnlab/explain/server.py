"""A web explorer and REST API over one model: type a text, see its attention.

    app = create_app("path/to/all-MiniLM-L6-v2")   # a FastAPI app
    serve("path/to/all-MiniLM-L6-v2", port=8000)   # the same, run by uvicorn

Endpoints (see ``/docs``): ``GET /`` the page (a text box and the three views of
:mod:`attnlab.explain.explorer`, fed from the API), ``POST /api/explain``, ``GET /api/methods``,
``GET /api/health``. Needs ``fastapi`` and ``uvicorn``.

Bad input gets a 4xx JSON ``{"detail": ...}`` and the server keeps serving: empty text or
malformed JSON 422, a text longer than ``max_tokens`` 413, an unknown method 400.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, field_validator
from torch import nn

from .explorer import encode_attentions, render_page
from .methods import METHODS

DEFAULT_METHODS = ("rollout", "raw")
INPUT_DESCRIPTIONS = {"ig": "Integrated Gradients on the token embeddings (captum)",
                      "occlusion": "leave one token out", "random": "the random baseline"}
FLOW_MAX_TOKENS = 48   # attention flow runs ~L^2 max-flows; beyond this it takes minutes
CHARS_PER_TOKEN = 64   # texts longer than max_tokens * this are refused before tokenizing


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
    text: str = Field(description="the text to explain", examples=["A man is eating food."])
    methods: list[str] = Field(default=list(DEFAULT_METHODS),
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


def create_app(model_dir_or_run_dir: str | Path, max_tokens: int | None = None) -> FastAPI:
    """The FastAPI app explaining one model.

    Args:
        model_dir_or_run_dir: a checkpoint directory (see :func:`load_explainable`).
        max_tokens: the longest input accepted (special tokens included); by default the
            model's number of positions.
    """
    ex = load_explainable(model_dir_or_run_dir)
    limit = max_tokens or ex.max_positions or 512
    if ex.max_positions and limit > ex.max_positions:
        raise ValueError(f"create_app: max_tokens={max_tokens} exceeds the model's {ex.max_positions} positions")
    lock = threading.Lock()  # one forward at a time: capture() swaps kernels while it runs
    app = FastAPI(title="attnlab explorer", description=f"Attention of {ex.name}, explained.")
    app.state.explainable, app.state.max_tokens = ex, limit

    @app.get("/", response_class=HTMLResponse, summary="The explorer page")
    def page() -> str:
        boxes = " ".join(
            f'<label><input type="checkbox" name="method" value="{m}"{" checked" if m in DEFAULT_METHODS else ""}>{m}</label>'
            for m in ex.subject.known_methods())
        return render_page(None, form=FORM.format(boxes=boxes), title=f"attnlab explorer: {ex.name}")

    @app.get("/api/health", summary="Liveness")
    def health() -> dict:
        return {"status": "ok", "model": ex.name, "max_tokens": limit}

    @app.get("/api/methods", response_model=list[MethodInfo], summary="Relevance methods")
    def methods() -> list[MethodInfo]:
        """The methods that apply to this model (a seq2seq model has fewer)."""
        return [MethodInfo(name=n, needs_grads=METHODS[n].needs_grads, description=METHODS[n].description)
                if n in METHODS else MethodInfo(name=n, needs_grads=n == "ig", description=INPUT_DESCRIPTIONS[n])
                for n in ex.subject.known_methods()]

    @app.post("/api/explain", response_model=ExplainResponse, summary="Attention maps and relevance of a text",
              responses={400: {"description": "unknown or unsuitable method"},
                         413: {"description": "text longer than max_tokens"},
                         422: {"description": "empty text or malformed JSON"}})
    def explain(req: ExplainRequest) -> dict:
        from .pipeline import explain_text

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
        with lock:
            try:
                res = explain_text(ex.subject, req.text, names)
            except ValueError as e:
                raise HTTPException(400, str(e)) from None
        info = res.info
        prediction = f"{res.target_description} = {info['target_value']:.4f}"
        if "output" in info:
            prediction = f"output {info['output']!r}; {prediction}"
        return {"title": ex.name, "tokens": res.tokens, "prediction": prediction,
                "attentions": encode_attentions(res.attentions()), "relevances": res.relevances}

    return app


def serve(model_dir_or_run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
          max_tokens: int | None = None) -> None:
    """Run the explorer with uvicorn until interrupted.

    Args:
        model_dir_or_run_dir: a checkpoint directory.
        host: the interface to bind ("0.0.0.0" for every one).
        port: the TCP port.
        max_tokens: the longest input accepted (default: the model's positions).
    """
    import uvicorn

    uvicorn.run(create_app(model_dir_or_run_dir, max_tokens=max_tokens), host=host, port=port)


__all__ = ["create_app", "serve", "load_explainable", "Explainable", "ExplainRequest", "ExplainResponse"]
