"""Data: tokenizers (more readers and datasets to come).

    from attnlab.data import load_tokenizer
    tok = load_tokenizer("path/to/checkpoint")
"""

from .tokenizer import Tokenizer, load_tokenizer

__all__ = ["Tokenizer", "load_tokenizer"]
