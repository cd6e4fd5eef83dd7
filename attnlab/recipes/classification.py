"""The sequence-classification task (recipes sst2, banking77, clinc150): text to one label.

A recipe is a preset YAML naming a data format; this module supplies the rest on top of
:class:`~attnlab.recipes.base.Recipe`: labels read from the training split, a tokenizer (the
pretrained checkpoint's, under ``model.init_from``), the classifier model family, fixed-size
batches of examples, the class cross-entropy normalised by examples, accuracy (plus out-of-scope
detection for CLINC150), and predictions as the labels written in the data.

Out-of-scope detection (``oos.method``): ``threshold`` predicts ``oos`` when the largest softmax
probability is below a threshold calibrated on validation (the one that maximises the mean of
in-scope accuracy and out-of-scope recall, Larson et al. 2019's protocol); ``class`` trains
``oos`` as one more class from ``oos_train``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ConfigError
from ..data import DataError, load_tokenizer
from ..data.labelled_text import OOS_LABEL, read_clinc, read_labelled
from ..io import write_json
from ..train.losses import ClassCrossEntropy
from ..train.rundir import TOKENIZER_DIR
from .base import Recipe
from .classification_config import ClassificationConfig
from .registry import register_recipe
from .pretrained import resolve_init_from

__all__ = ["ClassificationConfig", "ClassificationRecipe", "ClassificationData"]

LABELS_FILE = "labels.json"


@dataclasses.dataclass
class ClassificationData:
    """The tokenizer, the label names (index = class id) and the splits of ``(text, label, where)``."""

    tokenizer: Any
    labels: list[str]
    splits: dict[str, list[tuple[str, str, str]]]
    max_len: int
    threshold: float | None = None
    pretrained: Any = None

    def label_id(self, label: str) -> int:
        return self._ids[label]

    def __post_init__(self):
        self._ids = {name: i for i, name in enumerate(self.labels)}


@register_recipe
class ClassificationRecipe(Recipe):
    name = "classification"
    description = "Text classification: fine-tune a pretrained encoder (or train one) on labelled texts."
    config_cls = ClassificationConfig

    def resolve(self, cfg):
        d = cfg.data
        if d.dir and not Path(d.dir).is_absolute():
            cfg = cfg.model_copy(update={"data": d.model_copy(update={"dir": str(Path(d.dir).resolve())})})
        m = cfg.model
        if m.init_from and Path(m.init_from).exists() and not Path(m.init_from).is_absolute():
            cfg = cfg.model_copy(update={"model": m.model_copy(update={"init_from": str(Path(m.init_from).resolve())})})
        return cfg

    # --- data

    def read_splits(self, cfg, log) -> dict[str, list[tuple[str, str, str]]]:
        """The train/val rows: CLINC's own validation, else a stratified hold-out of train."""
        d = cfg.data
        if d.dir is None and d.download == "glue-sst2":
            from ..data.glue import glue_sst2

            d = d.model_copy(update={"dir": str(glue_sst2(log=log))})
        if d.dir is None:
            raise ConfigError(f"data.dir is required: the folder holding {d.train_file} "
                              f"(e.g. attnlab train {cfg.recipe} data.dir=../shared/data/{cfg.recipe})")
        path = Path(d.dir) / d.train_file
        if d.format == "clinc":
            s = read_clinc(path)
            use_oos = cfg.oos.method != "none"
            train = s.get("train", []) + (s.get("oos_train", []) if cfg.oos.method == "class" else [])
            val = s.get("val", []) + (s.get("oos_val", []) if use_oos else [])
            if not train or not val:
                raise DataError(f"{path}: needs the keys 'train' and 'val'")
            return {"train": train, "val": val}
        rows = read_labelled(path, d.format)
        if d.val_file and (Path(d.dir) / d.val_file).is_file():
            return {"train": rows, "val": read_labelled(Path(d.dir) / d.val_file, d.format)}
        if d.holdout == "sentences":
            train, val = _sentence_split(rows, d.val_max or 1000, d.sentence_words, d.seed)
            log(f"validation: {len(val):,} held-out sentences; {len(rows) - len(train) - len(val):,} of their "
                "phrases removed from training")
            return {"train": train, "val": val}
        return dict(zip(("train", "val"), _stratified_split(rows, d.val_fraction, d.val_max, d.seed)))

    def prepare(self, cfg, run_dir: Path, log, fresh: bool, read_data: bool = True) -> ClassificationData:
        run_dir = Path(run_dir)
        splits = self.read_splits(cfg, log) if read_data else {}
        labels_path = run_dir / LABELS_FILE
        if labels_path.is_file():
            meta = json.loads(labels_path.read_text(encoding="utf-8"))
            labels, threshold = meta["labels"], meta.get("threshold")
        else:
            if not splits:
                raise ValueError(f"{run_dir}: no {LABELS_FILE}; not a trained classification run")
            labels = sorted({y for _, y, _ in splits["train"]})
            if cfg.oos.method == "threshold" and OOS_LABEL in labels:
                labels.remove(OOS_LABEL)
            threshold = None
            if fresh:
                write_json(labels_path, {"labels": labels})
        pretrained = None
        tok_dir = run_dir / TOKENIZER_DIR
        if cfg.model.init_from:
            source = resolve_init_from(cfg.model.init_from)
            pretrained = source
            if fresh and not tok_dir.exists():
                _copy_tokenizer(source.tokenizer_dir, tok_dir)
        elif fresh and not tok_dir.exists():
            from ..data import save_tokenizer, train_bpe, train_chars

            texts = [t for t, _, _ in splits["train"]]
            t = cfg.tokenizer
            tok = train_chars(texts) if t.kind == "char" else train_bpe(texts, t.vocab_size, t.min_frequency)
            save_tokenizer(tok, tok_dir)
        if not tok_dir.exists():
            raise ValueError(f"{run_dir}: no tokenizer/; not a trained classification run")
        data = ClassificationData(load_tokenizer(tok_dir), labels, splits, cfg.data.max_len, threshold, pretrained)
        for split, rows in splits.items():
            self.check_labels(data, rows, Path(cfg.data.dir or ".") / cfg.data.train_file, split == "train")
        return data

    def check_labels(self, data: ClassificationData, rows, path, training: bool) -> None:
        """Every label must be one the model was trained on (``oos`` under the threshold method)."""
        known = set(data.labels) | ({OOS_LABEL} if data.threshold is not None or not training else set())
        for _, y, where in rows:
            if y not in known and not (y == OOS_LABEL and not training):
                near = sorted(data.labels, key=lambda x: (len(set(x) ^ set(y)), x))[:3]
                raise DataError(f"{path}, {where}: label {y!r} was not seen in training "
                                f"({len(data.labels)} labels, e.g. {', '.join(near)})")

    def describe_data(self, data: ClassificationData) -> str:
        return (f"{', '.join(f'{k} {len(v):,}' for k, v in data.splits.items())} texts; "
                f"{len(data.labels)} labels")

    def read_eval_file(self, cfg, path: Path, data: ClassificationData):
        rows = read_labelled(path, cfg.data.format)
        self.check_labels(data, rows, path, training=False)
        return rows

    def encode(self, data: ClassificationData, texts: list[str]) -> list[list[int]]:
        enc = data.tokenizer(list(texts), truncation=True, max_length=data.max_len)
        return enc["input_ids"]

    def collate(self, data: ClassificationData, ids: list[list[int]], device, labels=None) -> dict:
        from ..train import collate_pad

        x, mask = collate_pad(ids, data.tokenizer.pad_token_id)  # (B, L)
        batch = {"input_ids": x.to(device), "attention_mask": mask.long().to(device)}
        if labels is not None:
            batch["labels"] = torch.tensor(labels, dtype=torch.long, device=device)  # (B,)
        return batch

    def train_examples(self, cfg, data: ClassificationData, device):
        rows = data.splits["train"]
        ids = self.encode(data, [t for t, _, _ in rows])
        labels = [data.label_id(y) for _, y, _ in rows]

        def collate(indices: list[int]) -> dict:
            return self.collate(data, [ids[i] for i in indices], device, [labels[i] for i in indices])

        return [len(x) for x in ids], collate

    def loss(self, cfg):
        return ClassCrossEntropy(cfg.train.label_smoothing)

    # --- model

    def build_model(self, cfg, data: ClassificationData) -> nn.Module:
        from ..models import get_config
        from ..models.classifier import ClassifierConfig

        m = cfg.model
        head = {"num_labels": len(data.labels), "pooling": m.pooling, "head_dropout": m.head_dropout,
                "label_names": list(data.labels)}
        if data.pretrained is not None:
            enc_cfg = data.pretrained.encoder_config()
            if m.dropout is not None:
                enc_cfg = dataclasses.replace(enc_cfg, dropout=m.dropout, attn_dropout=m.dropout)
            if m.pooling != "pooler":
                enc_cfg = dataclasses.replace(enc_cfg, pooler=False)
            config = ClassifierConfig.from_encoder(enc_cfg, **head)
            return config.replace(**m.options).build() if m.options else config.build()
        base = get_config(m.name)
        if base.family not in ("classifier", "bilstm_classifier"):
            raise ConfigError(f"model.name={m.name!r} is a {base.family} model; text classification needs a "
                              "classifier or bilstm_classifier preset")
        fields = set(type(base).field_names())
        kw = {k: v for k, v in head.items() if k in fields and (v is not None or k == "label_names")}
        kw.update(vocab_size=data.tokenizer.vocab_size, pad_token_id=data.tokenizer.pad_token_id)
        if m.dropout is not None:
            kw.update({k: m.dropout for k in ("dropout", "attn_dropout") if k in fields})
        kw.update(m.options)
        return get_config(m.name, **kw).build()

    def init_weights(self, cfg, model: nn.Module, log) -> nn.Module:
        from ..finetune import apply_finetune

        source = self._pretrained(cfg)
        if source is not None:
            log(source.copy_into(model))
        ft = cfg.finetune
        if ft.method == "full":  # every weight trains: nothing to apply
            return model
        if ft.method == "adalora" and ft.total_step is None:  # AdaLoRA's budget schedule needs the run's length
            if cfg.train.max_steps is None:
                raise ConfigError("finetune.method=adalora needs train.max_steps (or finetune.total_step)")
            ft = ft.model_copy(update={"total_step": cfg.train.max_steps})
        return apply_finetune(model, ft)

    def _pretrained(self, cfg):
        return resolve_init_from(cfg.model.init_from) if cfg.model.init_from else None

    def load_model_weights(self, cfg, model, run_dir):
        from ..finetune import ADAPTER_CONFIG, load_adapter

        adapter = Path(run_dir) / "model" / ADAPTER_CONFIG
        if adapter.is_file():
            self._pretrained(cfg).copy_into(model)
            return load_adapter(model, adapter.parent)
        return super().load_model_weights(cfg, model, run_dir)

    def save_model(self, cfg, model, run_dir):
        from ..finetune import save_adapter

        if cfg.finetune.method == "full":
            return model.save_pretrained(Path(run_dir) / "model")
        return save_adapter(model, Path(run_dir) / "model", cfg.finetune, base=cfg.model.init_from)

    def callbacks(self, cfg, model):
        from ..finetune import on_step

        return (on_step,)  # AdaLoRA's rank allocation; a no-op for the other methods

    # --- evaluation and prediction

    @torch.no_grad()
    def probabilities(self, model: nn.Module, data: ClassificationData, texts: list[str], batch_size: int) -> torch.Tensor:
        """(N, C) softmax probabilities, batches sorted by length."""
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        ids = self.encode(data, texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = torch.empty(len(ids), len(data.labels))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            logits = model(**self.collate(data, [ids[i] for i in idx], device)).logits  # (b, C)
            out[idx] = logits.float().softmax(-1).cpu()
        model.train(was)
        return out

    def decide(self, data: ClassificationData, probs: torch.Tensor, threshold: float | None) -> list[str]:
        """Label names from probabilities; ``oos`` below the threshold (when there is one)."""
        conf, pred = probs.max(-1)
        names = [data.labels[i] for i in pred.tolist()]
        if threshold is not None:
            names = [OOS_LABEL if c < threshold else n for n, c in zip(names, conf.tolist())]
        return names

    def evaluate_split(self, model, data: ClassificationData, split: str, cfg, *, final: bool,
                       run_dir: Path | None = None) -> dict:
        rows = data.splits[split]
        probs = self.probabilities(model, data, [t for t, _, _ in rows], cfg.eval.batch_size)
        gold = [y for _, y, _ in rows]
        threshold = data.threshold
        if cfg.oos.method == "threshold" and split == "val":
            threshold = calibrate_threshold(probs, gold, data)
            if final and run_dir is not None:
                data.threshold = threshold
                write_json(Path(run_dir) / LABELS_FILE, {"labels": data.labels, "threshold": threshold})
        pred = self.decide(data, probs, threshold)
        metrics = classification_metrics(pred, gold, oos=cfg.oos.method != "none")
        if threshold is not None:
            metrics["threshold"] = round(threshold, 4)
        with torch.no_grad():
            ids = torch.tensor([data.label_id(y) if y in data._ids else -100 for y in gold])
            keep = ids != -100
            if keep.any():
                metrics["loss"] = round(float(torch.nn.functional.nll_loss(probs[keep].clamp_min(1e-12).log(), ids[keep])), 5)
        return metrics

    def predict_texts(self, model, data: ClassificationData, inputs: list[str], cfg, probs: bool = False,
                      **options) -> list[str]:
        for i, t in enumerate(inputs, start=1):
            if not t.strip():
                raise DataError(f"input {i}: empty text")
        p = self.probabilities(model, data, inputs, cfg.eval.batch_size)
        names = self.decide(data, p, data.threshold)
        if not probs:
            return names
        return [f"{n}\t{float(p[i].max()):.4f}" for i, n in enumerate(names)]

    def explain_info(self, cfg, run_dir: Path) -> dict:
        """What ``attnlab explain`` needs: a classifier whose target is the predicted class's logit
        (a model without self-attention, the BiLSTM, gets the input methods only)."""
        from ..attention import MultiHeadAttention

        model, data = self.load_run(cfg, run_dir)
        info = {"model": model, "tokenizer": data.tokenizer, "kind": "classifier", "labels": data.labels}
        if not any(isinstance(m, MultiHeadAttention) for m in model.modules()):
            info["methods"] = ("ig", "occlusion", "random")
        return info


def classification_metrics(pred: list[str], gold: list[str], oos: bool = False) -> dict:
    """Accuracy; with ``oos``, in-scope accuracy and out-of-scope recall and precision too."""
    n = max(1, len(gold))
    m: dict[str, Any] = {"accuracy": round(sum(p == g for p, g in zip(pred, gold)) / n, 5), "n": len(gold)}
    if oos:
        ins = [(p, g) for p, g in zip(pred, gold) if g != OOS_LABEL]
        outs = [(p, g) for p, g in zip(pred, gold) if g == OOS_LABEL]
        flagged = [(p, g) for p, g in zip(pred, gold) if p == OOS_LABEL]
        m["in_scope_accuracy"] = round(sum(p == g for p, g in ins) / max(1, len(ins)), 5)
        m["oos_recall"] = round(sum(p == OOS_LABEL for p, _ in outs) / max(1, len(outs)), 5) if outs else None
        m["oos_precision"] = round(sum(g == OOS_LABEL for _, g in flagged) / max(1, len(flagged)), 5) if flagged else None
    return m


def calibrate_threshold(probs: torch.Tensor, gold: list[str], data: ClassificationData) -> float:
    """The max-probability threshold that maximises the mean of in-scope accuracy and
    out-of-scope recall on ``gold`` (every distinct confidence is a candidate)."""
    conf, pred = probs.max(-1)
    is_oos = torch.tensor([g == OOS_LABEL for g in gold])
    right = torch.tensor([not o and data.labels[p] == g for p, g, o in zip(pred.tolist(), gold, is_oos.tolist())])
    if not is_oos.any():
        return 0.0
    best, best_t = -1.0, 0.0
    for t in sorted(set(conf.tolist()) | {0.0}):
        t = float(t)
        ins = (right & (conf >= t)).sum() / max(1, int((~is_oos).sum()))
        rec = (is_oos & (conf < t)).sum() / int(is_oos.sum())
        score = float(ins + rec) / 2
        if score > best:
            best, best_t = score, t
    return best_t


def _stratified_split(rows, fraction: float, cap: int | None, seed: int):
    """(train, val): ``fraction`` of each label's rows (at least one, when it has two) held out."""
    rng = random.Random(seed)
    by_label: dict[str, list] = {}
    for r in rows:
        by_label.setdefault(r[1], []).append(r)
    train, val = [], []
    for label in sorted(by_label):
        group = by_label[label][:]
        rng.shuffle(group)
        k = max(1, round(fraction * len(group))) if len(group) > 1 else 0
        val += group[:k]
        train += group[k:]
    if cap is not None and len(val) > cap:
        rng.shuffle(val)
        train, val = train + val[cap:], val[:cap]
    rng.shuffle(train)
    return train, val


def _sentence_split(rows, n: int, min_words: int, seed: int):
    """(train, val): ``n`` whole sentences held out (rows of at least ``min_words`` words that occur
    in no other row), and every training row of more than two words that occurs inside one of them
    removed (its phrases; one- and two-word phrases are lexicon, kept)."""
    rng = random.Random(seed)
    texts = [t for t, _, _ in rows]
    everything = "\n".join(texts)
    candidates = [i for i, t in enumerate(texts) if len(t.split()) >= min_words]
    rng.shuffle(candidates)
    val = []
    for i in candidates:
        if len(val) >= n:
            break
        if everything.count(texts[i]) == 1:  # maximal: no other row holds it (nor repeats it)
            val.append(i)
    if not val:
        raise DataError(f"no sentence of {min_words}+ words to hold out; lower data.sentence_words or use "
                        "data.holdout=rows")
    held = set(val)
    blob = "\n".join(f" {texts[i]} " for i in val)
    train = [r for i, r in enumerate(rows)
             if i not in held and not (len(r[0].split()) > 2 and f" {r[0]} " in blob)]
    rng.shuffle(train)
    return train, [rows[i] for i in val]


def _copy_tokenizer(src: Path, dst: Path) -> None:
    """The pretrained checkpoint's tokenizer files into the run directory."""
    from ..io import atomic_path

    dst.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (Path(src) / name).is_file():
            with atomic_path(dst / name) as tmp:
                shutil.copyfile(Path(src) / name, tmp)
