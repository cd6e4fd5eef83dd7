"""The sequence-to-sequence task (recipes dates, translation): text pairs to a trained model.

A recipe subclasses :class:`Seq2SeqRecipe` and supplies ``load_pairs`` (the ``(source,
target)`` texts of each split), ``score`` (its metrics of decoded outputs) and optionally
``after_train`` (figures). The task supplies the rest on top of :class:`~attnlab.recipes.base.Recipe`:
tokenizers trained on the training split, the model, token-budget batches, the token
cross-entropy, and decoding (greedy for validation, beam search for the final test).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..data import load_tokenizer
from ..data.subword import BOS_ID, EOS_ID, PAD_ID, save_tokenizer, train_bpe, train_chars
from ..io import write_text
from ..models.loss import IGNORE_INDEX
from ..train import TokenBudgetBatcher, collate_pad
from ..train.losses import TokenCrossEntropy
from ..train.rundir import PREDICTIONS_DIR, TOKENIZER_DIR
from .base import Recipe
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

    @property
    def splits(self) -> dict[str, list[tuple[str, str]]]:
        return self.pairs

    @splits.setter
    def splits(self, value) -> None:
        self.pairs = value


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


class Seq2SeqRecipe(Recipe):
    """Base of the seq2seq recipes. Subclasses set ``name``, ``description``, ``config_cls``
    and implement :meth:`load_pairs` and :meth:`score`."""

    config_cls: type[Seq2SeqConfig] = Seq2SeqConfig

    # --- what a recipe supplies

    def load_pairs(self, cfg, log: Callable[[str], None]) -> dict[str, list[tuple[str, str]]]:
        """``{"train": [...], "val": [...], "test": [...]}`` of ``(source, target)`` texts."""
        raise NotImplementedError

    def score(self, hyps: list[str], refs: list[str]) -> dict[str, float]:
        """Metrics of decoded outputs against references."""
        raise NotImplementedError

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

    def build_model(self, cfg, data: Seq2SeqData) -> nn.Module:
        """The model of ``cfg.model`` sized for the vocabularies."""
        from ..models import get_config

        src_vocab, tgt_vocab, joint = data.src_tok.vocab_size, data.tgt_tok.vocab_size, data.joint
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

    def prepare(self, cfg, run_dir: Path, log, fresh: bool, read_data: bool = True) -> Seq2SeqData:
        """The pairs and the tokenizers: trained on the training split when ``fresh`` and the run
        directory has none yet, else read from it."""
        pairs = self.load_pairs(cfg, log) if read_data else {}
        if fresh and not (Path(run_dir) / TOKENIZER_DIR).exists():
            src_tok, tgt_tok = self.build_tokenizers(cfg, pairs, run_dir)
        else:
            src_tok, tgt_tok = self.load_tokenizers(run_dir)
        max_len = getattr(cfg.data, "max_len", None)
        ids = []
        for s, y in pairs.get("train", []):
            a, b = encode_source(src_tok, s), encode_target(tgt_tok, y)
            if max_len is None or (len(a) <= max_len and len(b) + 1 <= max_len):
                ids.append((a, b))
        return Seq2SeqData(src_tok, tgt_tok, pairs, ids)

    def describe_data(self, data: Seq2SeqData) -> str:
        return (f"{', '.join(f'{k} {len(v):,}' for k, v in data.pairs.items())} pairs; "
                f"vocabulary {data.src_tok.vocab_size:,}" + ("" if data.joint else f" / {data.tgt_tok.vocab_size:,}"))

    def train_examples(self, cfg, data: Seq2SeqData, device):
        return [max(len(a), len(b) + 1) for a, b in data.train_ids], make_collate(data.train_ids, device)

    def loss(self, cfg):
        return TokenCrossEntropy(cfg.train.label_smoothing)

    def average_last(self, cfg) -> int:
        return cfg.decode.average_last

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

    def evaluate_split(self, model, data: Seq2SeqData, split: str, cfg, *, final: bool,
                       run_dir: Path | None = None, beam: int | None = None) -> dict:
        """Decode a split and score it. During training (``final=False``): greedy on the first
        ``decode.val_limit`` pairs, plus the validation loss. Final: beam ``decode.beam`` (or
        ``beam``) on every pair; with ``run_dir`` the outputs go to ``predictions/<split>.hyp.txt``."""
        d = cfg.decode
        if not final:
            pairs = data.pairs[split][:d.val_limit] if d.val_limit else data.pairs[split]
            metrics = self.score(self.decode(model, data, [s for s, _ in pairs], beam=1, length_penalty=1.0, dcfg=d),
                                 [y for _, y in pairs])
            metrics["loss"] = self.val_loss(model, data, pairs, cfg.train.max_tokens)
            return metrics
        beam = d.beam if beam is None else beam
        pairs = data.pairs[split]
        hyps = self.decode(model, data, [s for s, _ in pairs], beam=beam, length_penalty=d.length_penalty, dcfg=d)
        if run_dir is not None:
            write_text(run_dir / PREDICTIONS_DIR / f"{split}.hyp.txt", "".join(h + "\n" for h in hyps))
        return {**self.score(hyps, [y for _, y in pairs]), "beam": beam}

    def final_metrics(self, model, data: Seq2SeqData, split: str, cfg, run_dir: Path) -> dict:
        """Greedy on validation, beam search on the other splits."""
        return self.evaluate_split(model, data, split, cfg, final=True, run_dir=run_dir,
                                   beam=1 if split == "val" else None)

    @torch.no_grad()
    def val_loss(self, model, data: Seq2SeqData, pairs, max_tokens: int) -> float:
        """Mean token cross-entropy of ``pairs`` (no label smoothing)."""
        ids = [(encode_source(data.src_tok, s), encode_target(data.tgt_tok, y)) for s, y in pairs]
        device = next(model.parameters()).device
        collate = make_collate(ids, device)
        batcher = TokenBudgetBatcher([max(len(a), len(b) + 1) for a, b in ids], max_tokens, shuffle=False,
                                     allow_oversize=True)
        loss = TokenCrossEntropy()
        total, n = 0.0, 0
        for indices in batcher:
            batch = collate(indices)
            total += float(loss(model, batch))
            n += loss.count(batch)
        return total / max(1, n)

    # --- using a finished run

    def explain_info(self, cfg, run_dir: Path) -> dict:
        """The model, explained over its source tokens; ``data`` carries both tokenizers."""
        model, data = self.load_run(cfg, run_dir)
        return {"model": model, "tokenizer": data.src_tok, "kind": "seq2seq", "data": data}

    def predict_texts(self, model, data: Seq2SeqData, inputs: list[str], cfg, beam: int | None = None,
                      **options) -> list[str]:
        d = cfg.decode
        return self.decode(model, data, inputs, beam=beam or d.beam, length_penalty=d.length_penalty, dcfg=d)
