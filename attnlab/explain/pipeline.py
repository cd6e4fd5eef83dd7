"""From a checkpoint or a run directory and a text to relevances, files and faithfulness scores.

    s = load_subject("path/to/all-MiniLM-L6-v2")          # or a trainer run dir (seq2seq)
    ex = explain_text(s, "A man is playing a guitar.", ("rollout", "chefer", "ig"))
    ex.tokens, ex.relevances["ig"]                          # one float per token
    write_outputs(ex, "out/")                               # relevances.json, explorer.html, figures

Faithfulness tables and head reports over many texts: :mod:`attnlab.explain.evaluation`.

Methods: every attention method of :data:`~attnlab.explain.methods.METHODS` plus "ig",
"occlusion" and "random". For a seq2seq model relevances are over the SOURCE tokens: the
cross-attention maps (mean over heads, layers and output positions) carried back through the
encoder's rollout ("rollout"), or Chefer et al.'s encoder-decoder rules over the encoder's,
the decoder's and the cross-attention ("chefer", :func:`~attnlab.explain.methods.grad_rollout_seq2seq`).
"""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..io import write_json
from .attribution import integrated_gradients, occlusion, random_relevance
from .capture import Capture, capture
from .explorer import write_explorer
from .methods import METHODS, fuse_heads, grad_rollout_seq2seq, rollout, token_relevance
from .targets import Target, make_target

INPUT_METHODS = ("ig", "occlusion", "random")
SEQ2SEQ_ATTENTION = ("raw", "rollout", "chefer", "attn_x_grad")
RNN_ATTENTION = ("raw",)  # an RNN's one map per step over the source: no layers to roll out, no grads
DEFAULT_METHODS = ("rollout", "chefer", "ig")
SPECIAL = {"[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>", "<eos>", "<bos>", ""}


@dataclass
class Subject:
    """A model to explain. ``kind``: "encoder", "classifier" or "seq2seq"; ``data`` holds a
    seq2seq run's tokenizers (``src_tok``, ``tgt_tok``), ``recipe``/``cfg`` its recipe and config;
    ``rnn`` marks an RNN seq2seq model (attention over encoder states, one map per output step);
    ``labels`` a classifier's class names (index = class id), when known; ``methods`` the
    methods that apply when the task says (e.g. input methods only for a model without attention)."""

    model: nn.Module
    tokenizer: Any
    kind: str
    name: str
    data: Any = None
    recipe: Any = None
    cfg: Any = None
    notes: list[str] = field(default_factory=list)
    rnn: bool = False
    labels: list[str] | None = None
    methods: tuple[str, ...] | None = None

    def known_methods(self) -> tuple[str, ...]:
        """The method names that apply to this model."""
        if self.methods is not None:
            return self.methods
        if self.rnn:
            return RNN_ATTENTION + INPUT_METHODS
        return (SEQ2SEQ_ATTENTION if self.kind == "seq2seq" else tuple(METHODS)) + INPUT_METHODS

    def check_methods(self, methods: Sequence[str]) -> tuple[str, ...]:
        """``methods`` deduplicated; one that does not apply to this model raises (see :func:`check_methods`)."""
        return check_methods(methods, "RNN seq2seq" if self.rnn else self.kind, self.known_methods())


@dataclass
class Explanation:
    """Relevances of one text: ``relevances[method]`` has one float per token of ``tokens``
    (the source tokens of a seq2seq model). ``info`` holds the target value, the output of a
    seq2seq model and Integrated Gradients' completeness check."""

    tokens: list[str]
    target_description: str
    relevances: dict[str, list[float]]
    capture: Capture
    kind: str = "encoder"
    info: dict[str, Any] = field(default_factory=dict)

    def attentions(self) -> tuple[Tensor, ...]:
        """Layers x (H, L, L) self-attention over ``tokens`` (the encoder's, for seq2seq; none for
        an RNN, whose only map is the decoder's attention over the source)."""
        if self.kind == "seq2seq" and self.capture.encoder_attentions is None:
            return ()
        return self.capture.maps("encoder" if self.kind == "seq2seq" else "self")


# ----------------------------------------------------------------------------- loading


def load_subject(model_or_run_dir: str | Path) -> Subject:
    """A checkpoint directory (Hugging Face BERT format or attnlab's, with its tokenizer) or a
    trainer run directory of any recipe (``config.yaml``; its task says what the model is)."""
    path = Path(model_or_run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model or run directory")
    if (path / "config.yaml").is_file():
        return _load_run(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: neither a checkpoint (config.json) nor a run directory (config.yaml)")
    from ..data import load_tokenizer
    from ..models.pretrained import load_pretrained

    model = load_pretrained(path).eval()
    tok = load_tokenizer(path)
    with torch.no_grad():
        out = model(**dict(tok("a", return_tensors="pt")))
    logits = getattr(out, "logits", None)
    if logits is not None and logits.dim() != 2:
        raise ValueError(f"{path}: a language model ({type(model).__name__}); explain handles encoders, "
                         "classifiers and seq2seq run directories")
    kind = "classifier" if logits is not None else "encoder"
    name = path.parent.name if path.name == "model" else path.name
    return Subject(model, tok, kind, name)


def _load_run(path: Path) -> Subject:
    """A run of any recipe, through what its task says (:meth:`Recipe.explain_info`)."""
    from ..models.rnn_attention import RNNSeq2Seq
    from ..recipes import load_run_config

    recipe, cfg = load_run_config(path)
    info = recipe.explain_info(cfg, path)
    model = info["model"].eval()
    return Subject(model, info["tokenizer"], info["kind"], path.name, info.get("data"), recipe, cfg,
                   rnn=isinstance(model, RNNSeq2Seq), labels=info.get("labels"), methods=info.get("methods"))


# ----------------------------------------------------------------------------- one example


@dataclass
class Example:
    """One text prepared for a model: forward arguments (batch of one), tokens, the target,
    the special positions (never removed, never ranked), the id that removes a token, the
    IG baseline id and, for seq2seq, the output explained."""

    inputs: dict[str, Tensor]
    tokens: list[str]
    target: Target
    special: Tensor
    replace_id: int
    baseline_id: int
    output: str | None = None


def prepare(subject: Subject, text: str, target: str | None = None, pair: str | None = None) -> Example:
    """Tokenize ``text`` and build its target (see :func:`attnlab.explain.targets.make_target`).

    For seq2seq, ``pair`` is a reference output to score; without it the greedy output is used.
    """
    if not text.strip():
        raise ValueError("the text is empty")
    if subject.kind == "seq2seq":
        return _prepare_seq2seq(subject, text, target, pair)
    tok, model = subject.tokenizer, subject.model
    inputs = dict(tok(text, return_tensors="pt"))
    limit = getattr(getattr(model, "config", None), "max_len", None)
    n = inputs["input_ids"].shape[1]
    if limit and n > limit:
        # Longer than the learned position table: stretch it by linear interpolation (the
        # approach used to resize BERT/ViT tables) to the next power of two.
        from ..models.positions import extend_positions

        new = 1 << (n - 1).bit_length()
        try:
            extend_positions(model, new, method="interpolate")
        except ValueError as e:
            raise ValueError(f"the text is {n} tokens; the model takes {limit} and its positions "
                             f"cannot be extended: {e}") from None
        subject.notes.append(f"the text is {n} tokens: position table extended from {limit} to {new} "
                             "by linear interpolation")
    tokens = [t or "" for t in tok.convert_ids_to_tokens(inputs["input_ids"][0].tolist())]
    if pair and target is None and subject.kind == "encoder":
        target = "cosine"
    pair_inputs = dict(tok(pair, return_tensors="pt")) if pair else None
    tgt = make_target(target, subject.kind, model, inputs, pair_inputs=pair_inputs)
    if pair and (target or "").partition(":")[0] != "cosine":
        raise ValueError("--pair goes with --target cosine (or a seq2seq reference output)")
    special = torch.tensor([t in SPECIAL for t in tokens])
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    replace = next((i for i in (tok.token_to_id("[MASK]"), tok.token_to_id("[UNK]")) if i is not None), pad)
    return Example(inputs, tokens, tgt, special, replace, pad)


def _prepare_seq2seq(subject: Subject, text: str, target: str | None, pair: str | None) -> Example:
    from ..data.subword import BOS_ID, EOS_ID, PAD_ID, UNK_ID
    from ..recipes.seq2seq import encode_source, encode_target

    data, model = subject.data, subject.model
    src = encode_source(data.src_tok, text)  # ends with EOS
    if pair is not None:
        out_ids = encode_target(data.tgt_tok, pair)
    else:
        out_ids = subject.recipe.decode_ids(model, data, [text], beam=1, length_penalty=1.0, dcfg=subject.cfg.decode)[0]
    output = data.tgt_tok.decode(out_ids)
    inputs = {"input_ids": torch.tensor([src]), "attention_mask": torch.ones(1, len(src), dtype=torch.long),
              "decoder_input_ids": torch.tensor([[BOS_ID] + out_ids])}  # (1, S), (1, S), (1, T)
    tgt = make_target(target, "seq2seq", model, inputs, output_ids=out_ids + [EOS_ID], output_text=output)
    tokens = [t or "" for t in data.src_tok.convert_ids_to_tokens(src)]
    special = torch.tensor([i == EOS_ID for i in src])
    return Example(inputs, tokens, tgt, special, UNK_ID, PAD_ID, output)


@contextmanager
def _source_embedding(subject: Subject):
    """The module whose output IG attributes. A seq2seq model with a shared vocabulary embeds
    source and target with one module; captum would hook both calls, so for the call the source
    gets an alias module holding the same weight."""
    model = subject.model
    if subject.kind != "seq2seq":
        yield model.embeddings.token
        return
    shared = model.src_embed
    alias = nn.Embedding.from_pretrained(shared.weight, freeze=False, padding_idx=shared.padding_idx)
    alias.weight = shared.weight  # the very parameter, not a copy
    model.src_embed = alias
    try:
        yield alias
    finally:
        model.src_embed = shared


def default_methods(subject: Subject) -> tuple[str, ...]:
    """What ``attnlab explain`` runs without ``--method``: every method that applies to a
    classifier; rollout, chefer and ig otherwise (where flow and occlusion grow costly)."""
    if subject.kind == "classifier":
        return subject.known_methods()
    return tuple(m for m in DEFAULT_METHODS if m in subject.known_methods()) or subject.known_methods()


def check_methods(methods: Sequence[str], kind: str, known: Sequence[str]) -> tuple[str, ...]:
    """The method names, deduplicated; an unknown one raises with the nearest name.

    Args:
        methods: the names asked for.
        kind: the model's kind ("encoder", "classifier", "seq2seq", "vit", "cnn"), for the message.
        known: the names that apply (e.g. :meth:`Subject.known_methods`).
    """
    known = tuple(known)
    out = tuple(dict.fromkeys(m.strip() for m in methods if m.strip()))
    if not out:
        raise ValueError("no methods given")
    for m in out:
        if m not in known:
            near = difflib.get_close_matches(m, known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(f"unknown method {m!r} for {kind} models{hint}; known: {', '.join(known)}")
    return out


def explain_text(
    subject: Subject,
    text: str,
    methods: Sequence[str] = DEFAULT_METHODS,
    target: str | None = None,
    pair: str | None = None,
    *,
    ig_steps: int = 64,
    seed: int = 0,
) -> Explanation:
    """Per-token relevances of ``text`` by each method.

    Args:
        subject: from :func:`load_subject`.
        text: the input (the source sentence of a seq2seq model).
        methods: attention methods (rollout, chefer, raw, flow, attn_x_grad, ...), "ig",
            "occlusion", "random".
        target: the explained scalar (see :mod:`attnlab.explain.targets`); None: the default.
        pair: the pair text of the cosine target; for seq2seq a reference output to score.
        ig_steps: Integrated Gradients' quadrature points.
        seed: seed of the random baseline.
    """
    methods = subject.check_methods(methods)
    ex = prepare(subject, text, target, pair)
    return _explain(subject, ex, methods, ig_steps=ig_steps, seed=seed)


def _explain(subject: Subject, ex: Example, methods: Sequence[str], *, ig_steps: int = 64, seed: int = 0) -> Explanation:
    model, fn = subject.model, ex.target.fn
    if subject.rnn or all(m in INPUT_METHODS for m in methods):
        # No attention method asked (or an RNN, whose per-step maps are stacked after use): no
        # gradients w.r.t. the maps are needed.
        cap = capture(model, ex.inputs, tokens=ex.tokens)
        with torch.no_grad():
            value = float(fn(model(**ex.inputs)))
    else:
        cap = capture(model, ex.inputs, target=fn, tokens=ex.tokens)
        value = float(cap.target)
    info: dict[str, Any] = {"target_value": value}
    if subject.notes:
        info["notes"] = list(subject.notes)
    if ex.output is not None:
        info["output"] = ex.output
    rel: dict[str, list[float]] = {}
    for m in methods:
        if m == "random":
            r = random_relevance(len(ex.tokens), seed)
        elif m == "occlusion":
            r = occlusion(model, ex.inputs, fn, ex.replace_id, positions=~ex.special)
        elif m == "ig":
            with _source_embedding(subject) as emb:
                r, delta = integrated_gradients(model, ex.inputs, fn, emb, ex.baseline_id, steps=ig_steps,
                                                keep=ex.special, internal_batch_size=32)
            info["ig"] = _ig_check(model, ex, r, delta, value)
        elif subject.kind == "seq2seq":
            r = _seq2seq_attention(m, cap, ex.target.position)
        else:
            r = token_relevance(m, cap.maps("self"), cap.grads("self"), ex.target.position)
        rel[m] = [float(x) for x in r.detach().double().cpu()]
    return Explanation(ex.tokens, ex.target.description, rel, cap, subject.kind, info)


def _ig_check(model: nn.Module, ex: Example, attr: Tensor, delta: float, fx: float) -> dict[str, float]:
    """Completeness of IG: Σ attributions against f(x) − f(baseline), f(x) already computed."""
    ids = ex.inputs["input_ids"]
    base = torch.where(ex.special[None], ids, torch.full_like(ids, ex.baseline_id))  # (1, L)
    with torch.no_grad():
        fb = float(ex.target.fn(model(**{**ex.inputs, "input_ids": base})))
    return {"sum": float(attr.sum()), "f_x": fx, "f_baseline": fb, "delta": delta}


def _seq2seq_attention(name: str, cap: Capture, position: int | str = "mean") -> Tensor:
    """(S,) source relevance of one output token (``position``) or of the whole output ("mean")
    from cross- and encoder attention (an RNN's: its decoder's weights over the source)."""

    def row(m: Tensor) -> Tensor:  # (T, S) -> (S,)
        return m.mean(0) if position == "mean" else m[position]

    if cap.encoder_attentions is None:  # RNN: one (B, T, S) map, "raw" only
        return row(cap.self_attentions[0][0])
    enc, cross = cap.maps("encoder"), cap.maps("cross")  # layers x (H, S, S), layers x (H, T, S)

    if name == "raw":
        return row(cross[-1].mean(0))
    if name == "attn_x_grad":  # the registry's own defaults (the positive part), as on the encoder path
        return row(METHODS[name](cross, cap.grads("cross")))
    if name == "rollout":
        C = torch.stack([fuse_heads(c) for c in cross]).mean(0)  # (T, S)
        return row(C.double() @ rollout(enc).double())
    # chefer: Chefer et al. 2021's encoder-decoder rules (eqs. 5-10) over all three kinds of map.
    R_ts = grad_rollout_seq2seq([m.double() for m in enc], [g.double() for g in cap.grads("encoder")],
                                [m.double() for m in cap.maps("self")], [g.double() for g in cap.grads("self")],
                                [m.double() for m in cross], [g.double() for g in cap.grads("cross")])
    return row(R_ts)  # (T, S) -> (S,)


# ----------------------------------------------------------------------------- files


def write_outputs(explanation: Explanation, out_dir: str | Path, title: str = "attnlab explain") -> dict[str, Path]:
    """Write ``relevances.json``, ``saliency.png`` and, for a model with self-attention,
    ``explorer.html``, ``heads.png`` (last layer) and ``rollout.png``. Returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ex = explanation
    paths = {"relevances": out / "relevances.json", "explorer": out / "explorer.html"}
    data = {"tokens": ex.tokens, "target": ex.target_description, "methods": ex.relevances}
    write_json(paths["relevances"], data)
    from . import figures  # matplotlib: imported only when figures are drawn

    paths["saliency"] = figures.plot_saliency(ex.tokens, ex.relevances, out / "saliency.png")
    maps = list(ex.attentions())
    if not maps:  # an RNN: no self-attention to draw
        del paths["explorer"]
        return paths
    prediction = ex.target_description + (f"; output {ex.info['output']!r}" if "output" in ex.info else "")
    write_explorer(paths["explorer"], ex.tokens, maps, ex.relevances, title=title, prediction=prediction)
    paths["heads"] = figures.plot_head_grid(maps[-1], ex.tokens, out / "heads.png", "last layer, every head")
    paths["rollout"] = figures.plot_rollout(rollout(maps), ex.tokens, out / "rollout.png")
    return paths


__all__ = ["Subject", "Explanation", "Example", "load_subject", "prepare", "explain_text", "check_methods",
           "write_outputs", "DEFAULT_METHODS", "INPUT_METHODS", "SPECIAL"]
