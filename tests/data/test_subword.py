"""Subword training: BPE and character tokenizers, their special ids, round trips and saving."""

import json
from pathlib import Path

import pytest

from attnlab.data import SPECIAL_TOKENS, Tokenizer, load_tokenizer, read_lines, save_tokenizer, train_bpe, train_chars

MULTI30K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "multi30k"

CORPUS = [
    "A man in an orange hat starring at something.",
    "A Boston Terrier is running on lush green grass in front of a white fence.",
    "A girl in karate uniform breaking a stick with a front kick.",
    "Five people wearing winter jackets and helmets stand in the snow, with snowmobiles in the background.",
    "People are fixing the roof of a house.",
    "A man in light colored clothing photographs a group of men wearing dark suits and hats.",
    "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.",
    "Ein Boston Terrier läuft über saftig-grünes Gras vor einem weißen Zaun.",
    "Fünf Leute in Winterjacken und mit Helmen stehen im Schnee mit Schneemobilen im Hintergrund.",
    "Leute Reparieren das Dach eines Hauses.",
]


def multi30k_lines(lang: str, n: int = 300) -> list[str]:
    path = MULTI30K / f"train.{lang}.gz"
    if not path.is_file():
        pytest.skip(f"../shared/data/multi30k not found: {path} is missing")
    return read_lines(path)[:n]


def assert_specials(tok: Tokenizer):
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert SPECIAL_TOKENS == ("<pad>", "<s>", "</s>", "<unk>")
    assert tok.pad_token == "<pad>" and tok.pad_token_id == 0


def test_bpe_small_corpus_round_trip():
    tok = train_bpe(CORPUS * 3, vocab_size=200)
    assert isinstance(tok, Tokenizer) and tok.vocab_size <= 200
    assert_specials(tok)
    for s in CORPUS + ["  A man   in the  snow.  ", "Leute\tim\nSchnee."]:
        ids = tok.encode(s)
        assert tok.decode(ids) == " ".join(s.split())
        assert not set(ids) & {0, 1, 2, 3}  # no BOS/EOS added, nothing unknown
        assert tok.encode(s, add_special_tokens=True) == ids  # no post-processor
    assert tok.convert_ids_to_tokens(tok.encode("A man"))[0].startswith("▁")


def test_bpe_unseen_character_is_unk():
    tok = train_bpe(CORPUS, vocab_size=150)
    ids = tok.encode("A man €")
    assert 3 in ids and tok.decode(ids, skip_special_tokens=False).endswith("<unk>")


@pytest.mark.parametrize("vocab_size", [120, 300])
def test_bpe_vocab_size_respected(vocab_size):
    tok = train_bpe(CORPUS * 5, vocab_size=vocab_size, min_frequency=1)
    assert tok.vocab_size == vocab_size  # enough merges on offer for both sizes with min_frequency=1
    assert_specials(tok)


def test_bpe_on_multi30k_joint_vocabulary():
    de, en = multi30k_lines("de"), multi30k_lines("en")
    tok = train_bpe(de + en, vocab_size=1000)
    assert tok.vocab_size == 1000
    assert_specials(tok)
    for s in de + en:
        assert tok.decode(tok.encode(s)) == " ".join(s.split())
    # subwords compress: far fewer tokens than characters
    assert sum(len(tok.encode(s)) for s in en) < 0.4 * sum(len(s) for s in en)


def test_chars_round_trip_and_vocab():
    tok = train_chars(["ab Ba", "Zz  a\n"])
    assert_specials(tok)
    assert tok.convert_ids_to_tokens(range(4, tok.vocab_size)) == ["\n", " ", "B", "Z", "a", "b", "z"]
    for s in ["a  b", " Ba zZ ", "  ", "a\n\nb", "bBbB"]:
        ids = tok.encode(s)
        assert len(ids) == len(s) and tok.decode(ids) == s
        assert tok.encode(s, add_special_tokens=True) == ids
    ids = tok.encode("a?b")
    assert ids == [tok.token_to_id("a"), 3, tok.token_to_id("b")]
    assert tok.decode(ids) == "ab" and tok.decode(ids, skip_special_tokens=False) == "a<unk>b"


def test_chars_on_multi30k():
    de = multi30k_lines("de")
    tok = train_chars(de[:200])
    seen = set("".join(de[:200]))
    checked = [s for s in de[200:] if set(s) <= seen]
    assert len(checked) > 50
    for s in checked:
        assert tok.decode(tok.encode(s)) == s


@pytest.mark.parametrize("kind", ["bpe", "chars"])
def test_save_load_round_trip(tmp_path, kind):
    tok = train_bpe(CORPUS, vocab_size=150) if kind == "bpe" else train_chars(CORPUS)
    out = save_tokenizer(tok, tmp_path / "tok")
    assert out == tmp_path / "tok" / "tokenizer.json" and out.is_file()
    assert json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())["pad_token"] == "<pad>"
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    loaded = load_tokenizer(tmp_path / "tok")
    assert loaded.pad_token == "<pad>" and loaded.pad_token_id == 0 and loaded.vocab_size == tok.vocab_size
    texts = CORPUS + ["A  man?"]
    assert [loaded.encode(s) for s in texts] == [tok.encode(s) for s in texts]
    assert [loaded.decode(tok.encode(s)) for s in texts] == [tok.decode(tok.encode(s)) for s in texts]
    batch = loaded(["A man", "People are fixing the roof"], padding=True)
    assert batch["input_ids"][0][-1] == 0  # padded with <pad>
    save_tokenizer(loaded, tmp_path / "tok")  # overwriting works
    assert load_tokenizer(tmp_path / "tok").encode(CORPUS[0]) == tok.encode(CORPUS[0])
