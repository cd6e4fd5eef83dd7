"""Recipe ``dates``: read human-written dates ("the 3rd of march, 2021") into ISO ``2021-03-03``.

The data is generated (no download): :mod:`attnlab.data.dates` draws date-disjoint train, val
and test splits. A character-level encoder-decoder learns the conversion; its cross-attention
learns the alignment (output digits look at the matching source characters), drawn to
``alignment.png``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..config import Config
from ..data.dates import make_splits
from .registry import register_recipe
from .seq2seq import Seq2SeqRecipe, encode_source
from .seq2seq_config import Seq2SeqConfig

__all__ = ["DatesData", "DatesConfig", "DatesRecipe"]


class DatesData(Config):
    """The generated dates.

    Args:
        n_train, n_val, n_test: pairs per split (date-disjoint).
        seed: the generator's seed.
        noise: probability of mixed case / stray spaces on top of a format.
        max_len: the longest source or target kept for training, in tokens.
    """

    n_train: int = Field(30000, ge=1)
    n_val: int = Field(1000, ge=1)
    n_test: int = Field(2000, ge=1)
    seed: int = 0
    noise: float = Field(0.3, ge=0, le=1)
    max_len: int = Field(64, ge=2)


class DatesConfig(Seq2SeqConfig):
    data: DatesData = DatesData()


@register_recipe
class DatesRecipe(Seq2SeqRecipe):
    name = "dates"
    description = ("Human-written dates -> ISO dates, character level, generated data (no download); "
                   "writes the cross-attention alignment plot.")
    config_cls = DatesConfig

    def load_pairs(self, cfg, log):
        d = cfg.data
        return make_splits(d.n_train, d.n_val, d.n_test, seed=d.seed, noise=d.noise)

    def score(self, hyps, refs):
        exact = sum(h.strip() == r for h, r in zip(hyps, refs))
        chars = sum(sum(a == b for a, b in zip(h, r)) for h, r in zip(hyps, refs))
        return {"exact_match": round(exact / max(1, len(refs)), 5),
                "char_accuracy": round(chars / max(1, sum(len(r) for r in refs)), 5)}

    def after_train(self, cfg, run_dir: Path, model, data, log):
        from .alignment import cross_attention, plot_alignment

        examples = [s for s, _ in data.pairs["test"][:4]]
        outs = self.decode_ids(model, data, examples, beam=1, length_penalty=1.0, dcfg=cfg.decode)
        panels = []
        for text, out in zip(examples, outs):
            src = encode_source(data.src_tok, text)
            weights = cross_attention(model, src, out)  # (T, S)
            src_tokens = [data.src_tok.decode([i]) if i > 3 else "</s>" for i in src]
            tgt_tokens = [data.tgt_tok.decode([i]) for i in out] + ["</s>"]
            panels.append((weights, src_tokens, tgt_tokens))
        path = plot_alignment(panels, run_dir / "alignment.png",
                              title="Cross-attention (last decoder layer, mean over heads)")
        log(f"alignment plot: {path}")
        return {"alignment": str(path)}

