"""Data: tokenizers, text readers, subword training and dataset downloaders.

    from attnlab.data import load_tokenizer, read_parallel, multi30k_files, train_bpe
    tok = load_tokenizer("path/to/checkpoint")
    pairs = read_parallel(*multi30k_files(("de", "en"))["train"])
"""

from .multi30k import multi30k_files
from .readers import DataError, read_jsonl, read_lines, read_parallel, read_tsv
from .subword import SPECIAL_TOKENS, save_tokenizer, train_bpe, train_chars
from .tokenizer import Tokenizer, load_tokenizer

__all__ = [
    "DataError",
    "SPECIAL_TOKENS",
    "Tokenizer",
    "load_tokenizer",
    "multi30k_files",
    "read_jsonl",
    "read_lines",
    "read_parallel",
    "read_tsv",
    "save_tokenizer",
    "train_bpe",
    "train_chars",
]
