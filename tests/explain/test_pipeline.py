"""The explain pipeline on the real all-MiniLM-L6-v2 checkpoint: targets, methods, files,
IG completeness, faithfulness table and head importance."""

import json

import pytest
import torch

from attnlab.explain.evaluation import explain_eval, heads_report
from attnlab.explain.faithfulness import randomize_weights, spearman
from attnlab.explain.pipeline import explain_text, load_subject, write_outputs
from attnlab.explain.targets import make_target

TEXT = "A man is playing a guitar."
PAIR = "Someone plays an instrument."


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return load_subject(minilm_dir)


def test_minilm_is_an_encoder_and_every_method_gives_one_float_per_token(minilm):
    assert minilm.kind == "encoder"
    ex = explain_text(minilm, TEXT, ("rollout", "chefer", "raw", "ig", "occlusion", "random"), ig_steps=16)
    assert ex.tokens[0] == "[CLS]" and ex.tokens[-1] == "[SEP]" and "guitar" in ex.tokens
    assert set(ex.relevances) == {"rollout", "chefer", "raw", "ig", "occlusion", "random"}
    for name, r in ex.relevances.items():
        assert len(r) == len(ex.tokens) and all(isinstance(x, float) for x in r), name
    # Mean-pooled target: attention methods read the mean of all rows, so rollout sums to 1.
    assert sum(ex.relevances["rollout"]) == pytest.approx(1.0, abs=1e-5)
    # Special tokens are kept in IG's baseline and never occluded.
    assert ex.relevances["ig"][0] == 0.0 and ex.relevances["occlusion"][-1] == 0.0
    assert "mean-pooled" in ex.target_description


def test_cosine_target_and_ig_completeness(minilm):
    ex = explain_text(minilm, TEXT, ("ig",), target="cosine", pair=PAIR)
    c = ex.info["ig"]
    gap = c["f_x"] - c["f_baseline"]
    assert abs(gap) > 0.05
    assert c["sum"] == pytest.approx(gap, rel=0.03)  # Σ IG = f(x) − f(baseline), within 3 %
    assert 0.0 < ex.info["target_value"] <= 1.0  # a cosine of two related sentences
    # The pair's embedding is held fixed: the target of the same forward is reproducible.
    tok = minilm.tokenizer
    inputs = dict(tok(TEXT, return_tensors="pt"))
    t = make_target("cosine", "encoder", minilm.model, inputs, pair_inputs=dict(tok(PAIR, return_tensors="pt")))
    with torch.no_grad():
        assert float(t.fn(minilm.model(**inputs))) == pytest.approx(ex.info["target_value"], abs=1e-5)


def test_write_outputs(minilm, tmp_path):
    ex = explain_text(minilm, TEXT, ("rollout", "random"))
    paths = write_outputs(ex, tmp_path)
    data = json.loads((tmp_path / "relevances.json").read_text())
    assert set(data) == {"tokens", "target", "methods"}
    assert data["tokens"] == ex.tokens and set(data["methods"]) == {"rollout", "random"}
    assert "<html" in paths["explorer"].read_text().lower()


def test_bad_targets_and_methods(minilm):
    with pytest.raises(ValueError, match="logprob"):
        explain_text(minilm, TEXT, ("rollout",), target="logprob")
    with pytest.raises(ValueError, match="pair"):
        explain_text(minilm, TEXT, ("rollout",), target="cosine")
    with pytest.raises(ValueError, match="did you mean 'rollout'"):
        minilm.check_methods(["rolout"])
    with pytest.raises(ValueError, match="empty"):
        explain_text(minilm, "  ", ("rollout",))


def test_faithfulness_table_and_heads(minilm, tmp_path):
    texts = [TEXT, "A woman slices an onion.", "Kids play football in the park."]
    rows = explain_eval(minilm, texts, ("rollout", "ig", "random"), out_dir=tmp_path, ig_steps=16)
    assert {r["method"] for r in rows} == {"rollout", "ig", "random"}
    saved = json.loads((tmp_path / "faithfulness.json").read_text())
    assert saved["examples"] == 3 and [r["method"] for r in saved["table"]] == [r["method"] for r in rows]
    assert all("aopc" in r and "mean_rank" in r for r in rows)
    assert saved["randomization_examples"] == 3
    rho = {r["method"]: r["randomization"] for r in rows}
    assert abs(rho["random"]) < 0.5  # independent draws for the two models: unrelated orders, not 1
    assert rho["rollout"] < 0.9 and rho["ig"] < 0.9

    report = heads_report(minilm, texts[:2], out_dir=tmp_path)
    imp = torch.tensor(report["importance"])
    assert imp.shape == (6, 12) and bool((imp >= 0).all())
    for order in ("importance", "random"):
        curve = report["curves"][order]
        assert curve[0][0] == 0.0 and len(curve) == 10
    assert report["curves"]["importance"][0][1] == report["curves"]["random"][0][1]  # nothing masked
    assert (tmp_path / "heads.json").is_file()


# ----------------------------------------------------------------------------- a classifier


def test_classifier_logit_target_reads_the_cls_row(minilm):
    from attnlab.explain.pipeline import Subject
    from attnlab.models.classifier import ClassifierConfig

    def Classifier():  # a tiny random BERT-style classifier on MiniLM's vocabulary, read through BERT's pooler
        return ClassifierConfig(d_model=32, num_layers=2, num_heads=2, ffn_dim=64, dropout=0.0, attn_dropout=0.0,
                                num_labels=3, pooling="pooler").build()

    torch.manual_seed(0)
    subject = Subject(Classifier().eval(), minilm.tokenizer, "classifier", "tiny")
    ex = explain_text(subject, TEXT, ("rollout", "chefer", "ig", "occlusion"))
    assert ex.target_description.startswith("logit of predicted class")
    assert sum(ex.relevances["rollout"]) == pytest.approx(1.0, abs=1e-5)  # the [CLS] row of a rollout
    c = ex.info["ig"]
    assert c["sum"] == pytest.approx(c["f_x"] - c["f_baseline"], rel=0.05, abs=1e-3)
    ex2 = explain_text(subject, TEXT, ("rollout",), target="logit:2")
    assert ex2.target_description == "logit of class 2"
    with pytest.raises(ValueError, match="3 classes"):
        explain_text(subject, TEXT, ("rollout",), target="logit:7")
    with pytest.raises(ValueError, match="does not apply"):
        explain_text(subject, TEXT, ("rollout",), target="pooled")
    report = heads_report(subject, [TEXT])
    assert torch.tensor(report["importance"]).shape == (2, 2)


def test_randomization_column_is_the_spearman_of_the_two_explanations(minilm):
    """The sanity column against a direct computation: explain with the trained model and with
    a copy re-initialised by randomize_weights(seed=0), Spearman over the non-special tokens."""
    from dataclasses import replace

    rows = explain_eval(minilm, [TEXT], ("rollout", "occlusion"), sanity=1)
    twin = replace(minilm, model=randomize_weights(minilm.model, seed=0).eval())
    a, b = (explain_text(s, TEXT, ("rollout", "occlusion")) for s in (minilm, twin))
    inner = slice(1, len(a.tokens) - 1)  # [CLS] ... [SEP]
    for r in rows:
        m = r["method"]
        want = spearman(torch.tensor(a.relevances[m][inner]), torch.tensor(b.relevances[m][inner]))
        assert r["randomization"] == pytest.approx(want, abs=1e-12)
    assert all("randomization" not in r for r in explain_eval(minilm, [TEXT], ("random",), sanity=0))


def test_eval_lines_may_carry_their_own_pair(minilm):
    """"text<TAB>pair" is the same as the text with --pair: the cosine target against that pair."""
    a, b = "A dog runs on the grass.", "A puppy is running outside."
    tabbed = explain_eval(minilm, [f"{a}\t{b}"], ("occlusion", "random"), target="cosine")
    given = explain_eval(minilm, [a], ("occlusion", "random"), target="cosine", pair=b)
    assert tabbed == given
    other = explain_eval(minilm, [a], ("occlusion", "random"), target="cosine", pair="Stock prices fell.")
    assert other != given
