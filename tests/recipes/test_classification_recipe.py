"""The text-classification task end to end at a tiny size: a small BERT-style checkpoint with
all-MiniLM-L6-v2's real tokenizer is fine-tuned on a synthetic sentiment task (the label is
which of two word lists a sentence draws from), then predicted, evaluated on a file and
explained; and every kind of bad input gets one line and exit code 2."""

import json
import random
import shutil

import pytest
from typer.testing import CliRunner

from attnlab.cli import app
from attnlab.models import create

runner = CliRunner()
GOOD = "good great superb fine lovely moving gripping funny".split()
BAD = "bad dull awful boring lifeless tedious weak flat".split()
FILLER = "the a film movie story plot actors and it is was very quite this that".split()

TINY = ["data.holdout=rows", "train.max_steps=80", "train.eval_every=40", "train.log_every=20", "train.batch_size=16",
        "train.progress=lines", "train.tensorboard=false", "train.schedule.warmup_steps=10",
        "train.optim.lr=3e-3", "train.max_time=null"]


def _sentence(rng, label):
    words = rng.sample(FILLER, 4) + [rng.choice(GOOD if label else BAD)]
    rng.shuffle(words)
    return " ".join(words)


def _write_tsv(path, n, seed):
    rng = random.Random(seed)
    rows = [(s := rng.randrange(2), _sentence(rng, s)) for _ in range(n)]
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for y, t in rows))
    return rows


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm_dir):
    """A small random BERT-style encoder on MiniLM's vocabulary, saved as a checkpoint with
    MiniLM's tokenizer files (a stand-in for a pretrained model that trains in seconds)."""
    d = tmp_path_factory.mktemp("tiny-bert")
    create("encoder-tiny", vocab_size=30522, max_len=128, d_model=32, num_heads=2, ffn_dim=64).save_pretrained(d)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm_dir / name).is_file():
            shutil.copyfile(minilm_dir / name, d / name)
    return d


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sst2-like")
    _write_tsv(d / "train.tsv", 1200, seed=0)
    _write_tsv(d / "heldout.tsv", 200, seed=1)
    return d


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert, data_dir):
    out = tmp_path_factory.mktemp("runs") / "run"
    res = runner.invoke(app, ["train", "sst2", f"data.dir={data_dir}", f"model.init_from={tiny_bert}",
                              "data.val_fraction=0.1", *TINY, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out, res


def test_fine_tunes_predicts_and_evaluates_a_file(trained, data_dir):
    out, res = trained
    for name in ("config.yaml", "report.json", "labels.json", "model/model.safetensors", "tokenizer/tokenizer.json"):
        assert (out / name).is_file(), name
    assert "tensors loaded into encoder" in res.output and "new: head.classifier.*" in res.output
    report = json.loads((out / "report.json").read_text())
    assert report["val"]["accuracy"] >= 0.9, report["val"]
    # 1,080 training texts = 67 batches of 16 and one of 8 per epoch: 80 steps see one epoch and 12 batches
    assert report["trainable_share"] == 1.0 and report["train_examples"] == 1080 + 12 * 16

    res = runner.invoke(app, ["predict", str(out), "the film was superb", "a dull and boring story"])
    assert res.exit_code == 0, res.output
    assert res.stdout.split() == ["1", "0"]
    res = runner.invoke(app, ["predict", str(out), "the film was superb", "--probs"])
    label, p = res.stdout.strip().split("\t")
    assert label == "1" and 0.5 < float(p) <= 1.0

    res = runner.invoke(app, ["eval", str(out), "--data", str(data_dir / "heldout.tsv")])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)  # one JSON object on stdout
    assert metrics["n"] == 200 and metrics["accuracy"] >= 0.9
    # the accuracy is what the predictions give
    rows = [line.split("\t") for line in (data_dir / "heldout.tsv").read_text().splitlines()[1:]]
    res = runner.invoke(app, ["predict", str(out), *[t for t, _ in rows]])
    pred = res.stdout.split()
    assert metrics["accuracy"] == pytest.approx(sum(p == y for p, (_, y) in zip(pred, rows)) / len(rows), abs=1e-5)


def test_explains_the_predicted_class(trained, tmp_path):
    out, _ = trained
    res = runner.invoke(app, ["explain", str(out), "the story was superb", "--methods", "rollout,ig,random",
                              "--out", str(tmp_path / "ex")])
    assert res.exit_code == 0, res.output
    rel = json.loads((tmp_path / "ex" / "relevances.json").read_text())
    assert "logit" in rel["target"] and set(rel["methods"]) == {"rollout", "ig", "random"}
    assert "superb" in rel["tokens"]
    # without --method a classifier gets every method that applies
    res = runner.invoke(app, ["explain", str(out), "the story was superb"])
    assert res.exit_code == 0, res.output
    header = next(line for line in res.stdout.splitlines() if line.startswith("token"))
    assert header.split()[1:] == ["raw", "rollout", "flow", "chefer", "attn_x_grad", "ig", "occlusion", "random"]


def test_explain_eval_on_a_classifier_run(trained, data_dir, tmp_path):
    """The faithfulness table, and DecompX's AOPC protocol, on the fine-tuned classifier."""
    out, _ = trained
    texts = [line.split("\t")[0] for line in (data_dir / "heldout.tsv").read_text().splitlines()[1:9]]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    for protocol, column in (("default", "comprehensiveness"), ("decompx", "aopc_decompx")):
        res = runner.invoke(app, ["explain", "eval", str(out), "--data", str(tmp_path / "texts.txt"), "--methods",
                                  "rollout,ig,random", "--protocol", protocol, "--sanity", "4",
                                  "--out", str(tmp_path / protocol)])
        assert res.exit_code == 0, res.output
        report = json.loads((tmp_path / protocol / "faithfulness.json").read_text())
        assert report["protocol"] == protocol and report["examples"] == 8
        rows = report["table"]
        assert {r["method"] for r in rows} == {"rollout", "ig", "random"} and all(column in r for r in rows)


def _fails(args, *needles):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    msg = res.stderr.strip()
    assert len(msg.splitlines()) == 1, msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_bad_inputs_get_one_line_and_exit_2(trained, tiny_bert, tmp_path):
    out, _ = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.tsv").write_text("text\tlabel\na fine film\t1\nno label here\n")
    _fails(["train", "sst2", f"data.dir={bad}", f"model.init_from={tiny_bert}", "--out", str(tmp_path / "r1")],
           "train.tsv, line 3", "2 tab-separated fields")
    (bad / "train.tsv").write_text("text\tlabel\na fine film\t1\n  \t0\n")
    _fails(["train", "sst2", f"data.dir={bad}", f"model.init_from={tiny_bert}", "--out", str(tmp_path / "r2")],
           "train.tsv, line 3", "empty text")
    (bad / "unseen.tsv").write_text("text\tlabel\na fine film\t1\na strange film\t7\n")
    _fails(["eval", str(out), "--data", str(bad / "unseen.tsv")], "unseen.tsv, line 3", "label '7' was not seen")
    (bad / "train.csv").write_text("sentence,intent\nhello,greet\n")
    _fails(["train", "banking77", f"data.dir={bad}", "data.train_file=train.csv", f"model.init_from={tiny_bert}",
            "--out", str(tmp_path / "r3")],
           "train.csv, line 1", "text,category")
    good = tmp_path / "good"
    good.mkdir()
    _write_tsv(good / "train.tsv", 40, seed=3)
    (bad / "empty_dir").mkdir()
    _fails(["train", "sst2", f"data.dir={good}", f"model.init_from={bad / 'empty_dir'}", "data.holdout=rows",
            "--out", str(tmp_path / "r4")],
           "model.init_from", "not a checkpoint")
    msg = _fails(["train", "sst2", f"data.dir={good}", f"model.init_from={tiny_bert}", "finetune.method=lora",
                  "finetune.target_modules=[nope]", "data.holdout=rows", "--out", str(tmp_path / "r5")], "nope")
    assert "q_proj" in msg  # the modules that do exist are listed
    _fails(["predict", str(out), " "], "empty text")
    # nothing already saved is lost: the trained run still predicts
    res = runner.invoke(app, ["predict", str(out), "the film was superb"])
    assert res.exit_code == 0 and res.stdout.split() == ["1"]


def test_lora_run_saves_only_the_adapter_and_predicts(trained, data_dir, tmp_path):
    """LoRA from an attnlab run (the fine-tuned encoder of ``trained``, a new head)."""
    out = tmp_path / "lora"
    res = runner.invoke(app, ["train", "sst2", f"data.dir={data_dir}", f"model.init_from={trained[0]}",
                              "finetune.method=lora", "finetune.r=4", *TINY, "train.optim.lr=1e-2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert 0 < report["trainable_share"] < 0.5 and "trainable" in res.output
    assert (out / "model" / "adapter_model.safetensors").is_file() and (out / "model" / "adapter_config.json").is_file()
    assert not (out / "model" / "model.safetensors").exists()
    assert report["val"]["accuracy"] >= 0.8, report["val"]
    res = runner.invoke(app, ["predict", str(out), "the film was superb", "a dull and boring story"])
    assert res.exit_code == 0, res.output
    assert res.stdout.split() == ["1", "0"]

    # export: refused without --merge; merged, a standalone checkpoint with the same logits
    _fails(["export", str(out), "--out", str(tmp_path / "plain")], "lora run", "--merge")
    res = runner.invoke(app, ["export", str(out), "--merge", "--out", str(tmp_path / "merged")])
    assert res.exit_code == 0, res.output
    import torch

    from attnlab.data import load_tokenizer
    from attnlab.models import load_pretrained
    from attnlab.recipes import load_run_config

    recipe, cfg = load_run_config(out)
    adapter_model, data = recipe.load_run(cfg, out)
    merged = load_pretrained(tmp_path / "merged")
    assert merged.config.label_names == ["0", "1"]
    tok = load_tokenizer(tmp_path / "merged")
    batch = dict(tok(["the film was superb", "a dull and boring story"], padding=True, return_tensors="pt"))
    with torch.no_grad():
        a = adapter_model(**batch).logits
        b = merged(**batch).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not any(k for k in merged.state_dict() if "lora" in k)


def test_glue_sst2_download_through_a_file_url(tmp_path, tiny_bert):
    """The GLUE release's zip (SST-2/train.tsv, dev.tsv, sentence<TAB>label) fetched from a file://
    URL into the cache; dev.tsv then serves as validation."""
    import zipfile

    from attnlab.data.glue import glue_sst2
    from attnlab.data.readers import DataError

    rng = random.Random(5)
    body = {name: "sentence\tlabel\n" + "".join(f"{_sentence(rng, y)}\t{y}\n" for y in [rng.randrange(2) for _ in range(n)])
            for name, n in (("train.tsv", 50), ("dev.tsv", 12))}
    zpath = tmp_path / "SST-2.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for name, text in body.items():
            z.writestr(f"SST-2/{name}", text)
        z.writestr("SST-2/test.tsv", "index\tsentence\n0\tx\n")
    folder = glue_sst2(cache_dir=tmp_path / "cache", url=zpath.as_uri())
    assert {p.name for p in folder.iterdir()} == {"train.tsv", "dev.tsv"}
    assert (folder / "dev.tsv").read_text() == body["dev.tsv"]
    with pytest.raises(DataError, match="not a zip archive"):
        (tmp_path / "bad.zip").write_bytes(b"<html>")
        glue_sst2(cache_dir=tmp_path / "cache2", url=(tmp_path / "bad.zip").as_uri())
    assert not (tmp_path / "cache2" / "glue-sst2").exists()  # nothing partial written
    # the recipe reads the downloaded folder; dev.tsv is the validation split
    from attnlab.recipes import resolve_config

    recipe, cfg, _ = resolve_config("sst2", [f"data.dir={folder}", f"model.init_from={tiny_bert}"])
    splits = recipe.read_splits(cfg, print)
    assert len(splits["train"]) == 50 and len(splits["val"]) == 12


def test_bilstm_from_scratch_trains_its_own_tokenizer_and_explains_with_input_methods(data_dir, tmp_path):
    out = tmp_path / "bilstm"
    res = runner.invoke(app, ["train", "sst2-bilstm", f"data.dir={data_dir}", "model.name=bilstm-classifier-tiny",
                              "tokenizer.vocab_size=200", "data.val_fraction=0.1", *TINY, "train.optim.lr=1e-2",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "tokenizer" / "tokenizer.json").is_file() and "init_from" not in res.output
    report = json.loads((out / "report.json").read_text())
    assert report["val"]["accuracy"] >= 0.9, report["val"]
    res = runner.invoke(app, ["predict", str(out), "the film was superb", "a dull and boring story"])
    assert res.stdout.split() == ["1", "0"]
    res = runner.invoke(app, ["explain", str(out), "the story was superb"])
    assert res.exit_code == 0, res.output
    header = next(line for line in res.stdout.splitlines() if line.startswith("token"))
    assert header.split()[1:] == ["ig", "occlusion", "random"]
    _fails(["explain", str(out), "the story was superb", "--method", "rollout"], "unknown method 'rollout'")


def test_sentence_holdout_keeps_the_phrases_of_held_out_sentences_out_of_training():
    """SST-2's training file holds every phrase of every sentence: holding out whole sentences
    must also remove their phrases (of more than two words) from training, checked by brute force."""
    from attnlab.recipes.classification import _sentence_split

    rng = random.Random(0)
    rows = []
    for s in range(60):
        words = [rng.choice(GOOD + BAD + FILLER) for _ in range(12)] + [f"w{s}"]  # a unique word: sentences differ
        for a in range(0, len(words), 3):  # the sentence and some of its phrases, as SST-2's file has them
            for b in (a + 2, a + 5, len(words)):
                if b <= len(words):
                    rows.append((" ".join(words[a:b]), str(s % 2), f"line {len(rows) + 2}"))
    train, val = _sentence_split(rows, n=10, min_words=10, seed=0)
    assert len(val) == 10 and all(len(t.split()) >= 10 for t, _, _ in val)
    texts = [t for t, _, _ in rows]
    for t, _, _ in val:  # held out: whole sentences no other row contains
        assert sum(t in other for other in texts) == 1
    for t, _, _ in train:  # no training phrase of 3+ words lies inside a held-out sentence
        assert len(t.split()) <= 2 or not any(f" {t} " in f" {v} " for v, _, _ in val), t
    kept = {t for t, _, _ in train} | {t for t, _, _ in val}
    removed = [t for t in texts if t not in kept]
    assert removed and all(any(f" {t} " in f" {v} " for v, _, _ in val) for t in removed)
