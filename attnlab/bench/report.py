"""Showing a :class:`~attnlab.bench.attention.BenchResult` (and the model benchmark's
:class:`~attnlab.bench.model.ModelBenchResult`): rich tables and a JSON file.

A cell without a time shows a short status and a footnote number; the footnotes under the table
give the reason (``would not fit (needs X GiB, ...)``, ``skipped: estimated ...``, the error).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from .attention import BenchResult, MaskRow, SweepRow
from .impls import FLEX_COMPILED, FWD, FWD_BWD, SDPA_IS_CAUSAL
from .measure import CRASHED, ERROR, MiB, NA, NO_FIT, OOM, SKIPPED, TIMEOUT, Outcome
from .model import ModelBenchResult
from .train import TrainBenchResult

SHORT = {NA: "n/a", NO_FIT: "no fit", SKIPPED: "skipped", OOM: "OOM", TIMEOUT: "timeout",
         CRASHED: "crashed", ERROR: "error"}
MASK_LABELS = {"chunked": "chunked mask_mod", "sdpa": "sdpa dense mask",
               SDPA_IS_CAUSAL: "sdpa is_causal", FLEX_COMPILED: "flex compiled"}


def write_json(result: BenchResult | ModelBenchResult, path: str | Path) -> Path:
    """Write ``result`` (a dataclass) as JSON, atomically (a temporary file, then ``os.replace``).

    Args:
        result: what the benchmark measured.
        path: the file to write; its folder is created if needed.
    """
    from ..io import write_json as write

    return write(path, dataclasses.asdict(result))
    return path


def _grid(rows: list[tuple[str, str]]) -> Table:
    """A borderless two-column table: bold labels, then values."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows:
        t.add_row(k, v)
    return t


def setup_table(result: BenchResult) -> Table:
    """Versions, device, threads, dtypes and sizes, as a two-column grid."""
    s = result.setup
    return _grid([
        ("attnlab / torch", f"{s['attnlab']} / {s['torch']} (Python {s['python']})"),
        ("device", f"{s['device']}: {s['device_name']}"),
        ("threads", f"{s['threads']} torch threads, {s['cpu_count']} CPUs"),
        ("memory available", f"{s['mem_available_gib']} GiB"),
        ("dtypes", ", ".join(s["dtypes"])),
        ("shape", f"B in {s['batches']}, H={s['heads']}, D={s['dim']}, N in {s['lengths']}"),
        ("timing", f"median of {s['repeats']} calls after {s['warmup']} warmup, within "
                   f"{s['max_seconds']:g} s per case; forward is {s['forward']}"),
        ("memory", f"peak beyond q, k, v; {s['isolation']}"),
    ])


def sweep_tables(rows: list[SweepRow], repeats: int) -> list:
    """One table per (dtype, B): time, ratio to SDPA and peak memory, fwd and fwd+bwd.

    Args:
        rows: the sweep.
        repeats: timed calls asked for; a median of fewer is starred.
    """
    out = []
    groups: dict[tuple[str, int], list[SweepRow]] = {}
    for r in rows:
        groups.setdefault((r.dtype, r.B), []).append(r)
    for (dtype, B), group in groups.items():
        notes = _Footnotes(repeats)
        t = Table(title=f"{dtype}, B={B}: ms (median), time ÷ sdpa's, peak MiB",
                  title_justify="left", box=box.SIMPLE_HEAD)
        for name in ("N", "impl", "fwd ms", "÷sdpa", "fwd MiB", "f+b ms", "÷sdpa", "f+b MiB"):
            t.add_column(name, justify="left" if name == "impl" else "right")
        last_n = None
        for r in group:
            if last_n is not None and r.N != last_n:
                t.add_section()
            t.add_row(str(r.N) if r.N != last_n else "", r.impl,
                      *_cells(r.fwd, r.fwd_vs_sdpa, notes),
                      *_cells(r.fwd_bwd, r.fwd_bwd_vs_sdpa, notes))
            last_n = r.N
        out.append(Group(t, *notes.lines()))
    return out


def mask_tables(rows: list[MaskRow], repeats: int, n: int) -> list:
    """The structured-mask section: one table per mask, then its speedups in words.

    Args:
        rows: the section.
        repeats: timed calls asked for; a median of fewer is starred.
        n: the sequence length.
    """
    out = []
    for mask in dict.fromkeys(r.mask for r in rows):
        notes = _Footnotes(repeats)
        t = Table(title=f"structured mask: {mask} (N={n}, B=1, float32); ÷chunked above 1 = "
                        "chunked that many times faster", title_justify="left", box=box.SIMPLE_HEAD)
        for name in ("impl", "mode", "ms", "÷chunked", "peak MiB", "compile s"):
            t.add_column(name, justify="left" if name in ("impl", "mode") else "right")
        mine = [r for r in rows if r.mask == mask]
        for r in mine:
            ms, ratio, mib = _cells(r.outcome, r.vs_chunked, notes)
            comp = f"{r.outcome.compile_s:.1f}" if r.outcome.compile_s is not None else ""
            t.add_row(MASK_LABELS.get(r.impl, r.impl), r.mode, ms, ratio, mib, comp)
        out.append(Group(t, *notes.lines(), *_mask_summary(mask, mine)))
    return out


def _mask_summary(mask: str, rows: list[MaskRow]) -> list[Text]:
    by = {(r.impl, r.mode): r for r in rows}
    lines = []
    sdpa = by.get(("sdpa", FWD_BWD))
    if sdpa and sdpa.vs_chunked is not None:
        lines.append(Text(f"{mask}: chunked speedup over SDPA with the dense mask, fwd+bwd "
                          f"(SDPA time / chunked time) = {sdpa.vs_chunked:.2f}x", style="bold"))
    flex = by.get((FLEX_COMPILED, FWD))
    if flex and flex.vs_chunked is not None:
        lines.append(Text(f"{mask}: compiled flex forward takes {flex.vs_chunked:.2f}x chunked's "
                          f"time (its {flex.outcome.compile_s:.1f} s compile excluded)"))
    elif flex and not flex.outcome.ok:
        lines.append(Text(f"{mask}: flex did not run: {flex.outcome.note}", style="yellow"))
    return lines


def report(result: BenchResult) -> list:
    """Everything to print, in order: setup, notes, sweep tables, structured masks."""
    out: list = [setup_table(result)]
    out += [Text(n, style="yellow") for n in result.notes]
    repeats = result.setup.get("repeats", 1)
    out += sweep_tables(result.sweep, repeats)
    out += mask_tables(result.masks, repeats, result.setup.get("mask_n", 0))
    return out


class _Footnotes:
    """Numbers the distinct reasons of a table; stars medians of fewer calls than asked."""

    def __init__(self, repeats: int):
        self.repeats = repeats
        self.notes: dict[str, int] = {}
        self.starred = False

    def ref(self, note: str) -> int:
        return self.notes.setdefault(note, len(self.notes) + 1)

    def lines(self) -> list[Text]:
        out = [Text(f"[{i}] {n}", style="dim") for n, i in self.notes.items()]
        if self.starred:
            out.append(Text(f"* median of fewer than {self.repeats} calls, to stay within "
                            "--max-seconds", style="dim"))
        return out


def _cells(o: Outcome, ratio: float | None, notes: _Footnotes) -> tuple[str, str, str]:
    if not o.ok:
        return f"{SHORT.get(o.status, o.status)} [{notes.ref(o.note or o.status)}]", "", ""
    ms = "" if o.ms is None else _ms(o.ms)
    if o.repeats is not None and o.repeats < notes.repeats:
        ms += "*"
        notes.starred = True
    r = "" if ratio is None else f"{ratio:.2f}x"
    mib = "" if o.peak_bytes is None else f"{o.peak_bytes / MiB:.1f}"
    return ms, r, mib


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


# ----------------------------------------------------------------------------- attnlab bench model


def model_setup_table(result: ModelBenchResult) -> Table:
    """Versions, CPU, threads, shapes and timing of ``attnlab bench model``, as a grid."""
    s = result.setup
    return _grid([
        *_env_rows(s),
        ("encoder", f"{s['model']}: B={s['batch']} x L={s['seq_len']}, {s['inputs']}"),
        ("generation", f"{s['decoder']} (random init): B={s['gen_batch']}, prompt {s['prompt_len']}, "
                       f"{s['new_tokens']} new tokens, greedy"),
        ("timing", f"median of {s['repeats']} calls after {s['warmup']} warmup, within "
                   f"{s['max_seconds']:g} s per case; {s['forward']}"),
    ])


def model_report(result: ModelBenchResult) -> list:
    """Everything ``attnlab bench model`` prints, in order: setup, notes, encoder, generation."""
    out: list = [model_setup_table(result)]
    out += [Text(n, style="yellow") for n in result.notes]
    repeats = result.setup.get("repeats", 1)
    star = Text(f"* median of fewer than {repeats} calls, to stay within --max-seconds", style="dim")
    if result.encoder:
        t = Table(title="encoder forward: ms per batch (median), tokens/s, tokens/s ÷ Hugging Face's "
                        "(above 1 = attnlab faster)", title_justify="left", box=box.SIMPLE_HEAD)
        for name in ("impl", "kernel", "ran", "ms", "tokens/s", "÷hf"):
            t.add_column(name, justify="left" if name in ("impl", "kernel", "ran") else "right")
        for r in result.encoder:
            t.add_row(r.impl, r.kernel, r.ran, _ms(r.ms) + ("*" if r.repeats < repeats else ""),
                      f"{r.tokens_per_s:,.0f}", "" if r.vs_hf is None else f"{r.vs_hf:.2f}x")
        starred = any(r.repeats < repeats for r in result.encoder)
        out.append(Group(t, *([star] if starred else [])))
    if result.generation:
        t = Table(title="greedy generation: ms per generate call (median), new tokens/s, cache speedup "
                        "(no-cache time ÷ cache time)", title_justify="left", box=box.SIMPLE_HEAD)
        for name in ("impl", "use_cache", "ms", "new tokens/s", "speedup", "same tokens"):
            t.add_column(name, justify="left" if name in ("impl", "use_cache") else "right")
        for r in result.generation:
            same = "" if r.same_tokens is None else ("yes" if r.same_tokens else "NO")
            t.add_row(r.impl, str(r.use_cache), _ms(r.ms) + ("*" if r.repeats < repeats else ""),
                      f"{r.tokens_per_s:,.1f}",
                      "" if r.cache_speedup is None else f"{r.cache_speedup:.2f}x", same)
        starred = any(r.repeats < repeats for r in result.generation)
        out.append(Group(t, *([star] if starred else [])))
    return out


# ----------------------------------------------------------------------------- attnlab bench train


def _env_rows(s: dict) -> list[tuple[str, str]]:
    """The versions, device and threads rows that every model-level setup table starts with."""
    return [
        ("attnlab / torch / transformers",
         f"{s['attnlab']} / {s['torch']} / {s['transformers'] or 'not installed'} (Python {s['python']})"),
        ("device", f"{s['device']}: {s['device_name']}"),
        ("threads", f"{s['threads']} torch threads, {s['cpu_count']} CPUs"),
    ]


def train_setup_table(result: TrainBenchResult) -> Table:
    """Versions, CPU, threads, model sizes, batches and timing of ``attnlab bench train``, as a grid."""
    s = result.setup
    return _grid([
        *_env_rows(s),
        ("model", f"encoder-decoder, random init, {s['dtype']}: d_model {s['d_model']}, "
                  f"{s['encoder_layers']}+{s['decoder_layers']} layers, {s['heads']} heads, ffn {s['ffn_dim']}, "
                  f"shared vocab {s['vocab']} (tied), dropout {s['dropout']:g}"),
        ("batches", f"<= {s['max_tokens']} padded tokens (TokenBudgetBatcher), lengths {s['lengths']}; "
                    f"mean {s['batch_sentences']:g} sentences, {s['batch_source_tokens']:g} source + "
                    f"{s['batch_target_tokens']:g} target tokens"),
        ("step", f"forward, loss (label smoothing {s['label_smoothing']:g}), backward, clip {s['clip']:g}, "
                 f"AdamW lr {s['lr']:g}"),
        ("timing", f"{s['warmup']} untimed + {s['steps']} timed steps per model, alternating in rounds of "
                   f"{s['round_steps']}; tokens/s = total tokens ÷ total time"),
    ])


def train_report(result: TrainBenchResult) -> list:
    """Everything ``attnlab bench train`` prints, in order: setup, notes, the throughput table."""
    out: list = [train_setup_table(result)]
    out += [Text(n, style="yellow") for n in result.notes]
    t = Table(title="training step: ms (median), target and source+target tokens/s, tokens/s ÷ Hugging "
                    "Face's (above 1 = attnlab faster)", title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("impl", "attention", "params", "ms/step", "tgt tok/s", "src+tgt tok/s", "first loss",
                 "final loss", "÷hf"):
        t.add_column(name, justify="left" if name in ("impl", "attention") else "right")
    for r in result.rows:
        t.add_row(r.impl, r.attention, f"{r.params:,}", _ms(r.ms), f"{r.tokens_per_s:,.0f}",
                  f"{r.all_tokens_per_s:,.0f}", f"{r.first_loss:.3f}", f"{r.final_loss:.3f}",
                  "" if r.vs_hf is None else f"{r.vs_hf:.2f}x")
    out.append(t)
    if len(result.rows) == 2:
        a, h = result.rows
        out.append(Text(f"attnlab trains at {a.vs_hf:.2f}x Hugging Face's target tokens/s "
                        f"({a.tokens_per_s:,.0f} vs {h.tokens_per_s:,.0f})", style="bold"))
    return out
