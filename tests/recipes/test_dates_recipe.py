"""The dates recipe end to end at a tiny size: the run directory's files, eval, predict, and the
RNN model option."""

import json

from typer.testing import CliRunner

from attnlab.cli import app
from attnlab.data.dates import make_splits
from attnlab.recipes import resolve_config
from attnlab.train.monitor import read_metrics

runner = CliRunner()


def _train(tmp_path, args, name="run"):
    out = tmp_path / name
    res = runner.invoke(app, ["train", "dates", *args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out, res


def test_run_directory_holds_everything(tmp_path, tiny_dates):
    out, res = _train(tmp_path, tiny_dates + ["train.max_steps=30", "train.eval_every=15"])
    for name in ("config.yaml", "report.json", "metrics.jsonl", "alignment.png", "tokenizer/tokenizer.json",
                 "model/config.json", "model/model.safetensors", "checkpoints/best/model.safetensors",
                 "predictions/test.hyp.txt"):
        assert (out / name).exists(), name
    assert list(out.glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-00000015", "step-00000030"]
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 30 and 0 <= report["test"]["exact_match"] <= 1
    assert {"exact_match", "char_accuracy"} <= set(report["test"])
    assert len((out / "predictions" / "test.hyp.txt").read_text().splitlines()) == 40
    vals = [r for r in read_metrics(out) if r["split"] == "val"]
    assert [r["step"] for r in vals] == [15, 30] and "exact_match" in vals[0]
    # the saved config reproduces the overrides
    _, cfg, _ = resolve_config(str(out / "config.yaml"))
    assert cfg.model.d_model == 32 and cfg.train.max_steps == 30
    assert "run dir:" in res.output and "alignment" in res.output


def test_eval_and_predict_use_the_trained_model(tmp_path, tiny_dates):
    out, _ = _train(tmp_path, tiny_dates + ["train.max_steps=10"])
    res = runner.invoke(app, ["eval", str(out), "--split", "test"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout.strip().splitlines()[-1])
    report = json.loads((out / "report.json").read_text())
    assert metrics["exact_match"] == report["test"]["exact_match"]  # same model, same greedy decoding
    src = tmp_path / "in.txt"
    src.write_text("3 mar 21\nthe 1st of june, 1999\n")
    res = runner.invoke(app, ["predict", str(out), "--input", str(src), "--output", str(tmp_path / "o.txt")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o.txt").read_text().count("\n") == 2
    res = runner.invoke(app, ["predict", str(out), "3 mar 21", "4 apr 22", "5 may 23"])
    assert res.exit_code == 0 and res.stdout.count("\n") == 3  # one line per input, even if empty


def test_rnn_attention_model_trains(tmp_path, tiny_dates):
    args = [a for a in tiny_dates if not a.startswith(("model.heads", "model.ffn_dim"))]
    out, _ = _train(tmp_path, args + ["model=rnn_attention", "model.d_model=32", "model.layers=1",
                                      "train.max_steps=8"])
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "rnn_attention" and (out / "alignment.png").is_file()


def test_dates_splits_are_disjoint():
    splits = make_splits(2000, 200, 200, seed=3)
    train = {s.lower().split().__str__() for s, _ in splits["train"]}
    assert not any(s.lower().split().__str__() in train for s, _ in splits["test"])
    assert not {t for _, t in splits["train"]} & {t for _, t in splits["test"]}
