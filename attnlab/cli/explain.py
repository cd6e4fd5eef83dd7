"""`attnlab explain` (and `explain eval`), `heads` and `serve`."""

from __future__ import annotations

from pathlib import Path

import typer

from .base import _guarded, app, command, fail


def _texts(data: Path, limit: int | None, debug: bool) -> list[str]:
    """The non-blank lines of --data (plain or .gz), at most --limit of them."""
    from attnlab.data.readers import read_lines

    if limit is not None and limit < 1:
        fail(f"--limit: must be at least 1, got {limit}")
    texts = [t for t in _guarded(debug, lambda: read_lines(data)) if t.strip()]
    if not texts:
        fail(f"{data}: no non-blank lines")
    return texts[:limit] if limit else texts


@command(app)
def explain(
    args: list[str] = typer.Argument(..., metavar='MODEL_OR_RUN_DIR "TEXT" | eval MODEL_OR_RUN_DIR'),
    method: str | None = None,
    methods: str | None = None,
    out: Path | None = None,
    target: str | None = None,
    pair: str | None = None,
    data: Path | None = None,
    limit: int | None = None,
    sanity: int = 8,
    protocol: str = "default",
    random_draws: int = 5,
    debug: bool = False,
) -> None:
    """Explain a model's output on a text: one relevance score per token by each method.

    attnlab explain MODEL_OR_RUN_DIR "A man is playing a guitar." --method rollout,chefer,ig --out DIR
    writes relevances.json, explorer.html and figures. MODEL_OR_RUN_DIR is a checkpoint directory
    (Hugging Face BERT or attnlab format: an encoder or a classifier) or a seq2seq run directory
    of `attnlab train` (relevance over the source tokens of the greedy output).

    attnlab explain eval MODEL_OR_RUN_DIR --data FILE --methods rollout,ig,random [--out DIR]
    scores the methods' faithfulness (comprehensiveness, sufficiency, AOPC, deletion and
    insertion AUC) over the lines of FILE and ranks them, with the model-randomisation check.

    Methods: rollout, chefer, raw, flow, attn_x_grad (attention), ig, occlusion, random.

    attnlab explain MODEL_DIR IMAGE.png --method rollout,chefer,ig --out DIR explains a ViT or CBAM
    CNN checkpoint per patch (CNN methods: spatial, spatial_x_grad, ig, occlusion, random) and
    writes relevances.json and patches-<method>.png.

    Args:
        args: MODEL_OR_RUN_DIR and the TEXT (an image file for a ViT or CNN), or the word eval and MODEL_OR_RUN_DIR.
        method: comma-separated methods (default: every method that applies for a classifier, else
            rollout,chefer,ig; for eval rollout,chefer,ig,occlusion,random).
        methods: the same as --method.
        out: the directory to write the files to.
        target: the explained scalar: logit[:K] (classifiers, image models), pooled or cosine (encoders), logprob[:T]
            (seq2seq: the whole output, or output token T alone).
        pair: the pair text of --target cosine (implies it for encoders); for seq2seq a reference output to score.
        data: eval: a text file, one input per line (plain or .gz); "text<TAB>pair" gives a line its
            own pair (the cosine target's other sentence, or a seq2seq reference output).
        limit: eval: use at most this many lines.
        sanity: eval: run the model-randomisation check (Adebayo et al. 2018) on the first this many
            lines (0: skip it).
        protocol: eval: "default" (the metrics above) or "decompx" (classifiers: DecompX's AOPC,
            the drop in the predicted class's probability with 0, 10, ..., 90% of the tokens
            masked, most relevant first).
        random_draws: eval: draws of the random baseline averaged per text.
        debug: show tracebacks instead of one-line errors.
    """
    from attnlab.explain import evaluation as E
    from attnlab.explain import pipeline as P

    args = list(args or [])
    is_eval = len(args) == 2 and args[0] == "eval" and not (Path("eval").is_dir() and data is None)
    chosen = methods or method
    if is_eval:
        if data is None:
            fail("explain eval: --data FILE is required (one input per line)")
        texts = _texts(data, limit, debug)
        names = (chosen or "rollout,chefer,ig,occlusion,random").split(",")
        subject = _guarded(debug, lambda: P.load_subject(args[1]))
        if sanity < 0:
            fail(f"--sanity: must be 0 or more, got {sanity}")
        if random_draws < 1:
            fail(f"--random-draws: must be at least 1, got {random_draws}")
        rows = _guarded(debug, lambda: E.explain_eval(subject, texts, names, target, pair, out_dir=out, sanity=sanity,
                                                      protocol=protocol, random_draws=random_draws))
        E.print_table(rows, title=f"faithfulness over {len(texts)} examples (mean; rank 1 = best)")
        if out is not None:
            typer.echo(f"wrote {out / 'faithfulness.json'}")
        return
    if len(args) != 2:
        fail('give MODEL_OR_RUN_DIR and one "TEXT" (or: attnlab explain eval MODEL_OR_RUN_DIR --data FILE)')
    if data is not None or limit is not None:
        fail("--data and --limit go with `attnlab explain eval`")
    from attnlab.explain import images as I

    if I.image_model_dir(args[0]):
        return _explain_image(Path(args[0]), Path(args[1]), chosen, target, out, debug)
    subject = _guarded(debug, lambda: P.load_subject(args[0]))
    names = (chosen or ",".join(P.default_methods(subject))).split(",")
    ex = _guarded(debug, lambda: P.explain_text(subject, args[1], names, target, pair))
    for note in ex.info.get("notes", []):
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"target: {ex.target_description} = {ex.info['target_value']:.4f}")
    if "output" in ex.info:
        typer.echo(f"output: {ex.info['output']}")
    width = max(len(t) for t in ex.tokens) + 2
    typer.echo("token".ljust(width) + "".join(f"{m:>12}" for m in ex.relevances))
    for i, tok in enumerate(ex.tokens):
        typer.echo(repr(tok)[1:-1].ljust(width) + "".join(f"{r[i]:12.4f}" for r in ex.relevances.values()))
    if "ig" in ex.info:
        c = ex.info["ig"]
        typer.echo(f"ig completeness: sum {c['sum']:.4f} vs f(x) - f(baseline) {c['f_x'] - c['f_baseline']:.4f}")
    if out is not None:
        paths = _guarded(debug, lambda: P.write_outputs(ex, out, title=f"attnlab explain: {subject.name}"))
        for key, path in paths.items():
            typer.echo(f"{key + ':':<11} {path}")


def _explain_image(model_dir: Path, image: Path, chosen: str | None, target: str | None, out: Path | None,
                   debug: bool) -> None:
    """`attnlab explain MODEL_DIR IMAGE`: relevance per patch of a ViT or CBAM CNN checkpoint."""
    from attnlab.explain import images as I
    from attnlab.models import load_pretrained

    if not image.is_file():
        fail(f"{image}: no such image file")
    k = target.removeprefix("logit").lstrip(":[").rstrip("]") if target else ""
    if k and not k.isdigit():
        fail(f"--target: an image model takes logit or logit:K (a class index), got {target!r}")
    model = _guarded(debug, lambda: load_pretrained(model_dir))
    cfg = model.config
    x, img = _guarded(debug, lambda: I.load_image(image, cfg.in_channels, cfg.image_size, I.normalisation(model_dir)))
    names = (chosen or ",".join(I.DEFAULT_METHODS[I.image_kind(model)])).split(",")
    ex = _guarded(debug, lambda: I.explain_image(model, x, names, int(k) if k else None))
    typer.echo(f"target: logit[{ex.target_class}] = {ex.target_value:.4f}; {ex.grid[0]}x{ex.grid[1]} patches "
               f"of {ex.patch_size} pixels")
    for m, r in ex.relevances.items():
        top = int(r.reshape(-1).argmax())
        typer.echo(f"{m:>14}: most relevant patch (row {top // ex.grid[1]}, col {top % ex.grid[1]})")
    if "ig" in ex.info:
        c = ex.info["ig"]
        typer.echo(f"ig completeness: sum {c['sum']:.4f} vs f(x) - f(baseline) {c['f_x'] - c['f_baseline']:.4f}")
    if out is not None:
        for key, path in _guarded(debug, lambda: I.write_image_outputs(ex, img, out)).items():
            typer.echo(f"{key + ':':<15} {path}")


@command(app)
def heads(
    model: Path = typer.Argument(..., help="a checkpoint directory or a seq2seq run directory"),
    data: Path = typer.Option(..., help="a text file, one input per line (plain or .gz)"),
    out: Path | None = None,
    target: str | None = None,
    pair: str | None = None,
    limit: int | None = None,
    debug: bool = False,
) -> None:
    """Rank attention heads by importance (Michel et al. 2019) and trace the pruning curve.

    The explained target (see `attnlab explain --help`) serves as the loss, so no labels are
    needed; for a seq2seq run the encoder's heads are scored. The curve is the target's mean
    over the inputs as ever more heads are masked, least important first against a random order.

    Args:
        out: the directory to write heads.json (and pruning.png) to.
        target: the scalar: logit[:K], pooled, cosine or logprob[:T].
        pair: the pair text of --target cosine.
        limit: use at most this many lines.
        debug: show tracebacks instead of one-line errors.
    """
    from attnlab.explain import evaluation as E
    from attnlab.explain import pipeline as P

    texts = _texts(data, limit, debug)
    subject = _guarded(debug, lambda: P.load_subject(model))
    report = _guarded(debug, lambda: E.heads_report(subject, texts, target, pair, out_dir=out))
    imp = report["importance"]
    ranked = sorted(((v, l, h) for l, row in enumerate(imp) for h, v in enumerate(row)), reverse=True)
    typer.echo(f"target: {report['target']} over {report['examples']} inputs; "
               f"{report['layers']} layers x {report['heads']} heads")
    typer.echo("most important: " + ", ".join(f"L{l}H{h} {v:.3f}" for v, l, h in ranked[:5]))
    typer.echo("least important: " + ", ".join(f"L{l}H{h} {v:.3f}" for v, l, h in ranked[-5:]))
    typer.echo(f"{'masked':>8} {'importance':>12} {'random':>12}")
    for (f, a), (_, b) in zip(report["curves"]["importance"], report["curves"]["random"]):
        typer.echo(f"{f:>8.0%} {a:>12.4f} {b:>12.4f}")
    if out is not None:
        typer.echo(f"wrote {out / 'heads.json'}")


@command(app)
def serve(
    model: Path = typer.Argument(..., help="a checkpoint directory (Hugging Face BERT format or attnlab's) "
                                           "or a trainer run directory"),
    host: str = "127.0.0.1",
    port: int = 8000,
    max_tokens: int | None = None,
    max_body_bytes: int = 65536,
    max_concurrent: int = 4,
    timeout: float = 60.0,
    cors_origin: list[str] | None = None,
    log_level: str = "info",
    debug: bool = False,
) -> None:
    """Serve the attention explorer: type a text, see the prediction, the attention views and the
    relevance of each method. The API is documented at /docs (OpenAPI); limits, headers and load
    figures in docs/serving.md.

    Args:
        host: the interface to bind (default this machine only; another address warns, since
            there is no authentication).
        port: the TCP port.
        max_tokens: the longest input accepted (default: the model's position limit); longer: 413.
        max_body_bytes: the largest request body accepted; larger: 413.
        max_concurrent: explanations in progress at once (one runs on the model at a time, the
            rest wait their turn); one more gets 503 with Retry-After.
        timeout: seconds an explanation may take, waiting included; longer: 504 (and it is stopped).
        cors_origin: an origin allowed to call the API from a browser (repeatable; default none:
            no CORS headers).
        log_level: uvicorn's log level (critical, error, warning, info, debug, trace).
        debug: show tracebacks instead of one-line errors.
    """
    from attnlab.explain.server import bind_warning, create_app, run

    if not model.is_dir():
        fail(f"{model}: no such model directory")
    web_app = _guarded(debug, lambda: create_app(  # load errors and bad limits: one line, exit 2
        model, max_tokens=max_tokens, max_body_bytes=max_body_bytes, max_concurrent=max_concurrent,
        timeout_s=timeout, cors_origins=tuple(cors_origin or ())))
    if (note := bind_warning(host, port)) is not None:
        typer.echo(f"warning: {note}", err=True)
    run(web_app, host, port, log_level=log_level)
