"""`attnlab explain`, `attnlab explain eval` and `attnlab heads` end to end: the MiniLM
checkpoint and a tiny dates run trained in the test."""

import json

import pytest
from typer.testing import CliRunner

from attnlab.cli import app

runner = CliRunner()
TINY = ["data.n_train=300", "data.n_val=20", "data.n_test=20", "model.d_model=32", "model.layers=1",
        "model.heads=2", "model.ffn_dim=64", "train.max_steps=5", "train.max_tokens=1024",
        "train.tensorboard=false", "train.progress=lines"]


@pytest.fixture(scope="module")
def dates_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dates") / "run"
    res = runner.invoke(app, ["train", "dates", *TINY, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return str(out)


def _ok(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def _bad(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("Error:") and "\n" not in err, err
    return err


def test_explain_minilm_writes_relevances_and_explorer(minilm_dir, tmp_path):
    _ok(["explain", str(minilm_dir), "A man is playing a guitar.", "--method", "rollout,chefer,ig,random",
         "--out", str(tmp_path)])
    data = json.loads((tmp_path / "relevances.json").read_text())
    assert set(data["methods"]) == {"rollout", "chefer", "ig", "random"}
    for r in data["methods"].values():
        assert len(r) == len(data["tokens"]) and all(isinstance(x, float) for x in r)
    assert (tmp_path / "explorer.html").stat().st_size > 1000


def test_explain_cosine_pair(minilm_dir, tmp_path):
    res = _ok(["explain", str(minilm_dir), "A man is playing a guitar.", "--method", "ig,rollout",
               "--target", "cosine", "--pair", "Someone plays an instrument.", "--out", str(tmp_path)])
    assert "cosine" in res.stdout and "ig completeness" in res.stdout
    assert "cosine" in json.loads((tmp_path / "relevances.json").read_text())["target"]


def test_explain_eval_table(minilm_dir, tmp_path):
    data = tmp_path / "s.txt"
    data.write_text("A man is playing a guitar.\nA woman slices an onion.\n\nKids play football.\nExtra line.\n")
    methods = "rollout,chefer,ig,occlusion,random"
    res = _ok(["explain", "eval", str(minilm_dir), "--data", str(data), "--methods", methods, "--limit", "3",
               "--out", str(tmp_path / "o")])
    saved = json.loads((tmp_path / "o" / "faithfulness.json").read_text())
    assert saved["examples"] == 3
    assert {r["method"] for r in saved["table"]} == set(methods.split(","))
    for m in methods.split(","):
        assert m in res.stdout


def test_explain_seq2seq_run_gives_source_relevance(dates_run, tmp_path):
    res = _ok(["explain", dates_run, "3 mar 21", "--method", "rollout,ig", "--out", str(tmp_path)])
    assert "output:" in res.stdout
    data = json.loads((tmp_path / "relevances.json").read_text())
    assert "".join(data["tokens"]).startswith("3 mar 21")  # the source, one character a token
    assert set(data["methods"]) == {"rollout", "ig"}
    for r in data["methods"].values():
        assert len(r) == len(data["tokens"])
    assert sum(data["methods"]["rollout"]) == pytest.approx(1.0, abs=1e-5)
    assert "log p" in data["target"]


def test_heads_on_dates_run(dates_run, tmp_path):
    lines = tmp_path / "in.txt"
    lines.write_text("3 mar 21\n12 june 1999\n")
    res = _ok(["heads", dates_run, "--data", str(lines), "--out", str(tmp_path)])
    report = json.loads((tmp_path / "heads.json").read_text())
    assert len(report["importance"]) == 1 and len(report["importance"][0]) == 2
    assert set(report["curves"]) == {"importance", "random"}
    assert "most important" in res.stdout


def test_bad_inputs_exit_2(dates_run, tmp_path):
    missing = str(tmp_path / "nope")
    assert "no such model or run directory" in _bad(["explain", missing, "hi"])
    assert "did you mean" in _bad(["explain", dates_run, "3 mar 21", "--method", "rolout"])
    assert "does not apply" in _bad(["explain", dates_run, "3 mar 21", "--target", "pooled"])
    _bad(["explain", dates_run])                                   # no text
    _bad(["explain", "eval", dates_run])                           # no --data
    _bad(["explain", "eval", dates_run, "--data", missing])        # missing file
    _bad(["heads", dates_run, "--data", missing])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    _bad(["heads", dates_run, "--data", str(empty)])
    _bad(["explain", "eval", dates_run, "--data", str(empty), "--limit", "0"])


def test_explain_one_generated_token(dates_run, tmp_path):
    """--target logprob:T explains one output token; IG stays complete, and the relevances differ
    from those of the whole output."""
    import json

    _ok(["explain", dates_run, "3 mar 21", "--method", "raw,ig", "--out", str(tmp_path / "a")])
    one = _ok(["explain", dates_run, "3 mar 21", "--method", "raw,ig", "--target", "logprob:0",
               "--out", str(tmp_path / "b")])
    assert "output token 0" in one.output and "completeness" in one.output
    a = json.loads((tmp_path / "a" / "relevances.json").read_text())
    b = json.loads((tmp_path / "b" / "relevances.json").read_text())
    assert a["tokens"] == b["tokens"] and a["methods"]["raw"] != b["methods"]["raw"]
    line = next(x for x in one.output.splitlines() if x.startswith("ig completeness"))
    got, want = (float(v) for v in line.removeprefix("ig completeness: sum").split("vs f(x) - f(baseline)"))
    assert abs(got - want) <= 0.05 * max(1.0, abs(want)), line
    assert "the output has" in _bad(["explain", dates_run, "3 mar 21", "--target", "logprob:99"])


@pytest.fixture(scope="module")
def rnn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rnn") / "run"
    res = runner.invoke(app, ["train", "dates", "model=rnn_attention", "data.n_train=300", "data.n_val=20",
                              "data.n_test=20", "train.max_steps=5", "train.tensorboard=false",
                              "train.progress=lines", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return str(out)


def test_explain_rnn_run_reads_its_attention_over_the_source(rnn_run, tmp_path):
    """An RNN seq2seq run: "raw" is its decoder's weights over the source (mean over output steps,
    read here from a direct forward pass), next to IG and occlusion; no explorer, no heads."""
    import torch

    from attnlab.explain.pipeline import load_subject, prepare

    res = _ok(["explain", rnn_run, "3 mar 21", "--method", "raw,ig,occlusion,random", "--out", str(tmp_path)])
    assert "ig completeness" in res.stdout and "output:" in res.stdout
    data = json.loads((tmp_path / "relevances.json").read_text())
    assert set(data["methods"]) == {"raw", "ig", "occlusion", "random"}
    assert (tmp_path / "saliency.png").is_file() and not (tmp_path / "explorer.html").exists()
    subject = load_subject(rnn_run)
    ex = prepare(subject, "3 mar 21")
    with torch.no_grad():
        weights = subject.model(**ex.inputs, output_attentions=True).attentions[0][0]  # (T, S)
    assert data["methods"]["raw"] == pytest.approx(weights.mean(0).tolist(), abs=1e-9)
    assert "for RNN seq2seq models" in _bad(["explain", rnn_run, "3 mar 21", "--method", "chefer"])
    lines = tmp_path / "in.txt"
    lines.write_text("3 mar 21\n12 june 1999\n")
    assert "no attention heads" in _bad(["heads", rnn_run, "--data", str(lines)])
    assert "RNN" in _bad(["serve", rnn_run])  # the explorer draws self-attention: refused before serving
    res = _ok(["explain", "eval", rnn_run, "--data", str(lines), "--methods", "raw,occlusion,random",
               "--sanity", "1"])
    assert "rand. ρ" in res.stdout
