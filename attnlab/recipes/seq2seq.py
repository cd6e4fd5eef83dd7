"""Sequence-to-sequence recipes (dates, translation): data to tokens to a trained model.

A recipe subclasses :class:`Seq2SeqRecipe` and supplies three things: ``load_pairs`` (the
``(source, target)`` texts of each split), ``score`` (its metrics of decoded outputs) and
optionally ``after_train`` (figures). Everything else is shared: tokenizers trained on the
training split, the model, batching, the :class:`~attnlab.train.Trainer`, decoding (greedy for
validation, beam search for the final test), and the files of the run directory.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..data import load_tokenizer
from ..data.subword import BOS_ID, EOS_ID, PAD_ID, save_tokenizer, train_bpe, train_chars
from ..models.loss import IGNORE_INDEX
from ..train import TokenBudgetBatcher, collate_pad
from ..train.checkpoint import CHECKPOINTS, MODEL_FILE, _complete_checkpoints, _read_model_file, average_checkpoints
from ..io import write_json, write_text
from ..train.rundir import MODEL_DIR, PREDICTIONS_DIR, REPORT_FILE, TOKENIZER_DIR
from .seq2seq_config import DecodeSection, Seq2SeqConfig

__all__ = ["Seq2SeqRecipe", "Seq2SeqData", "encode_source", "encode_target"]


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass
class Seq2SeqData:
    """Tokenizers and the encoded training set."""

    src_tok: Any
    tgt_tok: Any
    pairs: dict[str, list[tuple[str, str]]]
    train_ids: list[tuple[list[int], list[int]]]

    @property
    def joint(self) -> bool:
        return self.src_tok is self.tgt_tok


def encode_source(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False) + [EOS_ID]


def encode_target(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def make_collate(pairs_ids: list[tuple[list[int], list[int]]], device: torch.device) -> Callable[[list[int]], dict]:
    """Indices -> model kwargs: right-padded source, BOS-shifted decoder input, labels (-100 pads)."""

    def collate(indices: list[int]) -> dict:
        src, src_mask = collate_pad([pairs_ids[i][0] for i in indices], PAD_ID)  # (B, S)
        tgt_in, _ = collate_pad([[BOS_ID] + pairs_ids[i][1] for i in indices], PAD_ID)  # (B, T)
        labels, lab_mask = collate_pad([pairs_ids[i][1] + [EOS_ID] for i in indices], IGNORE_INDEX)  # (B, T)
        return {"input_ids": src.to(device), "attention_mask": src_mask.to(device),
                "decoder_input_ids": tgt_in.to(device), "labels": labels.to(device)}

    return collate


# ----------------------------------------------------------------------------- recipe


class Seq2SeqRecipe:
    """Base of the seq2seq recipes. Subclasses set ``name``, ``description``, ``config_cls``,
    ``metric`` and implement :meth:`load_pairs` and :meth:`score`."""

    name: str = ""
    description: str = ""
    config_cls: type[Seq2SeqConfig] = Seq2SeqConfig

    # --- what a recipe supplies

    def load_pairs(self, cfg, log: Callable[[str], None]) -> dict[str, list[tuple[str, str]]]:
        """``{"train": [...], "val": [...], "test": [...]}`` of ``(source, target)`` texts."""
        raise NotImplementedError

    def score(self, hyps: list[str], refs: list[str]) -> dict[str, float]:
        """Metrics of decoded outputs against references."""
        raise NotImplementedError

    def resolve(self, cfg):
        """The config as it is saved with a run: relative paths made absolute, so that ``eval``
        and ``predict`` work from any directory."""
        return cfg

    def after_train(self, cfg, run_dir: Path, model: nn.Module, data: Seq2SeqData, log) -> dict[str, str]:
        """Extra artifacts (figures) written after training; returns ``{name: path}``."""
        return {}

    # --- tokenizers and model

    def build_tokenizers(self, cfg, pairs, run_dir: Path):
        """Train the tokenizers on the training split and save them under ``run_dir/tokenizer``."""
        t = cfg.tokenizer
        src_texts = [s for s, _ in pairs["train"]]
        tgt_texts = [y for _, y in pairs["train"]]

        def fit(texts):
            return train_chars(texts) if t.kind == "char" else train_bpe(texts, t.vocab_size, t.min_frequency)

        if t.joint:
            tok = fit(src_texts + tgt_texts)
            save_tokenizer(tok, run_dir / TOKENIZER_DIR)
            return tok, tok
        src_tok, tgt_tok = fit(src_texts), fit(tgt_texts)
        save_tokenizer(src_tok, run_dir / TOKENIZER_DIR / "source")
        save_tokenizer(tgt_tok, run_dir / TOKENIZER_DIR / "target")
        return src_tok, tgt_tok

    @staticmethod
    def load_tokenizers(run_dir: Path):
        d = Path(run_dir) / TOKENIZER_DIR
        if (d / "tokenizer.json").is_file():
            tok = load_tokenizer(d)
            return tok, tok
        return load_tokenizer(d / "source"), load_tokenizer(d / "target")

    @staticmethod
    def build_model(cfg, src_vocab: int, tgt_vocab: int, joint: bool) -> nn.Module:
        """The model of ``cfg.model`` sized for the vocabularies."""
        from ..models import get_config

        m = cfg.model
        base = get_config(m.name)
        family = base.family
        kw: dict[str, Any] = {}
        if family == "encoder_decoder":
            vocab = max(src_vocab, tgt_vocab) if joint else None
            kw.update(src_vocab_size=vocab or src_vocab, tgt_vocab_size=vocab or tgt_vocab, share_vocab=joint,
                      pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)
            names = {"d_model": "d_model", "heads": "num_heads", "ffn_dim": "ffn_dim", "dropout": "dropout"}
            if m.layers is not None:
                kw.update(num_encoder_layers=m.layers, num_decoder_layers=m.layers)
        elif family == "rnn_seq2seq":
            kw.update(src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab, pad_token_id=PAD_ID)
            names = {"d_model": "hidden_dim", "dropout": "dropout", "layers": "num_layers"}
            for key in ("heads", "ffn_dim"):
                if getattr(m, key) is not None:
                    raise ValueError(f"model.{key} does not apply to model {m.name!r} (an RNN)")
            if m.d_model is not None:
                kw["embed_dim"] = max(16, m.d_model // 2)
        else:
            raise ValueError(f"model.name={m.name!r} is a {family} model; seq2seq recipes need an "
                             "encoder_decoder or rnn_seq2seq preset")
        for key, field in names.items():
            if getattr(m, key) is not None:
                kw[field] = getattr(m, key)
        kw.update(m.options)
        return get_config(m.name, **kw).build()

    # --- data

    def prepare(self, cfg, run_dir: Path, log, train_tokenizers: bool) -> Seq2SeqData:
        pairs = self.load_pairs(cfg, log)
        if train_tokenizers:
            src_tok, tgt_tok = self.build_tokenizers(cfg, pairs, run_dir)
        else:
            src_tok, tgt_tok = self.load_tokenizers(run_dir)
        max_len = getattr(cfg.data, "max_len", None)
        ids = []
        for s, y in pairs["train"]:
            a, b = encode_source(src_tok, s), encode_target(tgt_tok, y)
            if max_len is None or (len(a) <= max_len and len(b) + 1 <= max_len):
                ids.append((a, b))
        return Seq2SeqData(src_tok, tgt_tok, pairs, ids)

    # --- decoding

    @torch.no_grad()
    def decode(self, model: nn.Module, data: Seq2SeqData, texts: list[str], *, beam: int,
               length_penalty: float, dcfg: DecodeSection) -> list[str]:
        """Decode ``texts`` in length-sorted batches; returns outputs in the input order."""
        return [data.tgt_tok.decode(ids) for ids in self.decode_ids(model, data, texts, beam=beam,
                                                                      length_penalty=length_penalty, dcfg=dcfg)]

    @torch.no_grad()
    def decode_ids(self, model: nn.Module, data: Seq2SeqData, texts: list[str], *, beam: int,
                   length_penalty: float, dcfg: DecodeSection) -> list[list[int]]:
        from ..models.rnn_attention import RNNSeq2Seq

        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        encoded = [encode_source(data.src_tok, t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))
        out: list[list[int]] = [[] for _ in texts]
        for start in range(0, len(order), dcfg.batch_size):
            idx = order[start:start + dcfg.batch_size]
            src, mask = collate_pad([encoded[i] for i in idx], PAD_ID)
            src, mask = src.to(device), mask.to(device)
            max_new = int(dcfg.max_len_a * src.shape[1] + dcfg.max_len_b)
            if isinstance(model, RNNSeq2Seq):  # greedy only
                gen = model.generate(src, max_new, BOS_ID, EOS_ID, attention_mask=mask)  # (B, n)
            else:
                gen = model.generate(src, attention_mask=mask, max_new_tokens=max_new, num_beams=beam,
                                     eos_token_id=EOS_ID, pad_token_id=PAD_ID, length_penalty=length_penalty,
                                     early_stopping=True)[:, 1:]  # (B, n), BOS dropped
            for row, i in zip(gen.tolist(), idx):
                out[i] = row[:row.index(EOS_ID)] if EOS_ID in row else row
        model.train(was_training)
        return out

    def evaluate_split(self, model, data: Seq2SeqData, split: str, *, beam: int, length_penalty: float,
                       dcfg: DecodeSection, limit: int | None = None, run_dir: Path | None = None) -> dict:
        """Decode a split (its first ``limit`` pairs) and score it; with ``run_dir`` the outputs
        are also written to ``predictions/<split>.hyp.txt``."""
        pairs = data.pairs[split][:limit] if limit else data.pairs[split]
        hyps = self.decode(model, data, [s for s, _ in pairs], beam=beam, length_penalty=length_penalty, dcfg=dcfg)
        if run_dir is not None:
            write_text(run_dir / PREDICTIONS_DIR / f"{split}.hyp.txt", "".join(h + "\n" for h in hyps))
        return self.score(hyps, [y for _, y in pairs])

    @torch.no_grad()
    def val_loss(self, model, data: Seq2SeqData, split: str, limit: int | None, max_tokens: int) -> float:
        pairs = data.pairs[split][:limit] if limit else data.pairs[split]
        ids = [(encode_source(data.src_tok, s), encode_target(data.tgt_tok, y)) for s, y in pairs]
        device = next(model.parameters()).device
        collate = make_collate(ids, device)
        batcher = TokenBudgetBatcher([max(len(a), len(b) + 1) for a, b in ids], max_tokens, shuffle=False,
                                     allow_oversize=True)
        total, n = 0.0, 0
        for indices in batcher:
            out = model(**collate(indices))
            total += float(out.loss_sum)
            n += int(out.num_tokens)
        return total / max(1, n)

    # --- the run

    def train(self, cfg, run_dir: Path, *, resume: bool, dist, log: Callable[[str], None]) -> dict:
        """Train (or resume) in ``run_dir``; on the main process, evaluate and write the report."""
        from ..train import Trainer, resolve_device
        from ..train.distributed import barrier

        tc = cfg.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        device = resolve_device(tc.device)
        if dist.enabled and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        t0 = time.monotonic()
        fresh_tokenizer = not resume or not (run_dir / TOKENIZER_DIR).exists()
        if dist.is_main:
            data = self.prepare(cfg, run_dir, log, train_tokenizers=fresh_tokenizer)
        barrier()
        if not dist.is_main:
            data = self.prepare(cfg, run_dir, log, train_tokenizers=False)
        log(f"data: {', '.join(f'{k} {len(v):,}' for k, v in data.pairs.items())} pairs; "
            f"vocabulary {data.src_tok.vocab_size:,}" + ("" if data.joint else f" / {data.tgt_tok.vocab_size:,}")
            + f" ({cfg.tokenizer.kind}, {'joint' if data.joint else 'separate'})")
        torch.manual_seed(tc.seed)  # the same initial weights on every rank
        model = self.build_model(cfg, data.src_tok.vocab_size, data.tgt_tok.vocab_size, data.joint).to(device)
        n_params = sum(p.numel() for p in model.parameters())
        log(f"model: {cfg.model.name}, {n_params:,} parameters, on {device}")
        lengths = [max(len(a), len(b) + 1) for a, b in data.train_ids]
        batcher = TokenBudgetBatcher(lengths, tc.max_tokens, seed=tc.seed, bucket_width=2, rank=dist.rank,
                                     world_size=dist.world_size, allow_oversize=True)

        def evaluate(m: nn.Module) -> dict:
            d = cfg.decode
            metrics = self.evaluate_split(m, data, "val", beam=1, length_penalty=1.0, dcfg=d, limit=d.val_limit)
            metrics["loss"] = self.val_loss(m, data, "val", d.val_limit, tc.max_tokens)
            return metrics

        trainer = Trainer(tc, model, batcher, make_collate(data.train_ids, device), run_dir, evaluate=evaluate,
                          dist=dist, config_dict=cfg.model_dump(mode="json"))
        result = trainer.fit()
        train_time = result.elapsed
        if not dist.is_main:
            return {}
        model.eval()
        with torch.no_grad():
            how = self.load_final_weights(cfg, run_dir, model, evaluate, result.best_value)
        model.save_pretrained(run_dir / MODEL_DIR)
        d = cfg.decode
        report: dict[str, Any] = {
            "recipe": self.name, "run_dir": str(run_dir), "model": cfg.model.name, "parameters": n_params,
            "steps": result.step, "epochs": round(result.epoch, 3), "train_tokens": result.tokens,
            "train_time_s": round(train_time, 1), "stop_reason": result.stop_reason,
            "best_step": result.best_step, f"best_val_{tc.metric}": result.best_value, "final_weights": how,
        }
        for split, beam in (("val", 1), ("test", d.beam)):
            if split not in data.pairs:
                continue
            t_dec = time.monotonic()
            metrics = self.evaluate_split(model, data, split, beam=beam, length_penalty=d.length_penalty, dcfg=d,
                                          run_dir=run_dir)
            metrics["decode_time_s"] = round(time.monotonic() - t_dec, 1)
            metrics["beam"] = beam
            report[split] = metrics
            log(f"{split} ({'greedy' if beam == 1 else f'beam {beam}'}): "
                + "  ".join(f"{k} {v}" for k, v in metrics.items() if k not in ("beam",)))
        report["artifacts"] = self.after_train(cfg, run_dir, model, data, log)
        report["total_time_s"] = round(time.monotonic() - t0, 1)
        write_json(run_dir / REPORT_FILE, report)
        return report

    def load_final_weights(self, cfg, run_dir: Path, model: nn.Module, evaluate=None, best_value=None) -> str:
        """Load the weights the final evaluation uses and say which they are.

        With ``decode.average_last`` > 1, the average of the last N step checkpoints competes with
        ``best/`` on the validation metric (``evaluate``), and the better one is kept; otherwise
        ``best/`` is used (or the last weights when there is no ``best/``).
        """
        tc = cfg.train
        n = cfg.decode.average_last
        ckpts = _complete_checkpoints(run_dir / CHECKPOINTS) if (run_dir / CHECKPOINTS).is_dir() else []
        best = run_dir / CHECKPOINTS / "best" / MODEL_FILE
        if n > 1 and len(ckpts) >= 2:
            chosen = ckpts[-n:]
            average_checkpoints(chosen, model)
            what = f"average of {', '.join(p.name for p in chosen)}"
            if evaluate is None or best_value is None or not best.is_file():
                return what
            value = float(evaluate(model)[tc.metric])
            if (value >= best_value) if tc.mode == "max" else (value <= best_value):
                return f"{what} (val {tc.metric} {value:.4g} vs best checkpoint {best_value:.4g})"
            model.load_state_dict(_read_model_file(best))
            return f"best (val {tc.metric} {best_value:.4g} vs average of last {len(chosen)} {value:.4g})"
        if best.is_file():
            model.load_state_dict(_read_model_file(best))
            return "best"
        return "last"

    # --- using a finished run

    def load_run(self, cfg, run_dir: Path, log) -> tuple[nn.Module, Seq2SeqData]:
        """The trained model and tokenizers of a run (``model/``, else ``best/``, else the last step)."""
        from ..train.checkpoint import latest_checkpoint

        src_tok, tgt_tok = self.load_tokenizers(run_dir)
        data = Seq2SeqData(src_tok, tgt_tok, {}, [])
        model = self.build_model(cfg, src_tok.vocab_size, tgt_tok.vocab_size, src_tok is tgt_tok)
        final = run_dir / MODEL_DIR / "model.safetensors"
        best = run_dir / CHECKPOINTS / "best" / MODEL_FILE
        last = latest_checkpoint(run_dir)
        if final.is_file():
            from safetensors.torch import load_model

            load_model(model, str(final))
        elif best.is_file():
            model.load_state_dict(_read_model_file(best))
        elif last is not None:
            model.load_state_dict(_read_model_file(last / MODEL_FILE))
        else:
            raise ValueError(f"{run_dir}: no trained weights yet (no model/, checkpoints/best or step checkpoint)")
        return model.eval(), data

    def evaluate(self, cfg, run_dir: Path, split: str, log) -> dict:
        model, data = self.load_run(cfg, run_dir, log)
        data.pairs = self.load_pairs(cfg, log)
        if split not in data.pairs:
            raise ValueError(f"split {split!r} not available (have {', '.join(data.pairs)})")
        d = cfg.decode
        metrics = self.evaluate_split(model, data, split, beam=d.beam, length_penalty=d.length_penalty, dcfg=d,
                                      run_dir=run_dir)
        metrics["beam"] = d.beam
        return metrics

    def predict(self, cfg, run_dir: Path, texts: list[str], beam: int | None, log) -> list[str]:
        model, data = self.load_run(cfg, run_dir, log)
        d = cfg.decode
        return self.decode(model, data, texts, beam=beam or d.beam, length_penalty=d.length_penalty, dcfg=d)
