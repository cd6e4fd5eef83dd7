"""Bad input to `attnlab train / eval / predict`: one line on stderr, exit code 2, no traceback
(unless --debug), and nothing already saved is lost."""

import gzip

import pytest
from typer.testing import CliRunner

from attnlab.cli import app

runner = CliRunner()
TINY = ["data.n_train=300", "data.n_val=20", "data.n_test=20", "model.d_model=32", "model.layers=1",
        "model.heads=2", "model.ffn_dim=64", "train.max_tokens=1024", "train.progress=lines",
        "train.tensorboard=false"]


def _bad(args, *needles):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in res.output, err
    for n in needles:
        assert n in err, err
    return err


def _translation_dir(tmp_path, files):
    d = tmp_path / "data"
    d.mkdir()
    for name, content in files.items():
        (d / name).write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    return d


GOOD = b"ein hund\neine katze\n"
GOOD_EN = b"a dog\na cat\n"


def _all_splits(**replace):
    files = {f"{s}.{l}.gz": (GOOD if l == "de" else GOOD_EN) for s in ("train", "val", "test_2016_flickr")
             for l in ("de", "en")}
    files.update(replace)
    return files


def test_malformed_yaml_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: dates\ntrain:\n  max_steps: [1,\n")
    _bad(["train", str(bad)], "bad.yaml", "line")


def test_unknown_key_suggests_the_nearest():
    _bad(["train", "dates", "train.max_stpes=5"], "train.max_stpes", "did you mean 'train.max_steps'")


def test_wrong_type_names_the_expected_type():
    _bad(["train", "dates", "train.max_steps=abc"], "train.max_steps", "integer")


def test_unknown_recipe():
    _bad(["train", "datse"], "did you mean 'dates'")


def test_missing_data_file(tmp_path):
    d = _translation_dir(tmp_path, {"train.de.gz": GOOD})
    _bad(["train", "multi30k-de-en", f"data.dir={d}", "--out", str(tmp_path / "r")], "train.en.gz", "no such file")


@pytest.mark.parametrize("replace, needles", [
    ({"train.en.gz": b"a dog\n"}, ["train.de.gz", "2 lines", "train.en.gz has 1"]),  # line counts differ
    ({"val.de.gz": b""}, ["val.de.gz", "empty"]),
    ({"train.de.gz": b"ein hund\neine \xff katze\n"}, ["train.de.gz", "line 2", "UTF-8"]),
], ids=["mismatched-line-counts", "empty-file", "non-utf8"])
def test_bad_parallel_data_names_the_file(tmp_path, replace, needles):
    d = _translation_dir(tmp_path, _all_splits(**replace))
    _bad(["train", "multi30k-de-en", f"data.dir={d}", "--out", str(tmp_path / "r")], *needles)


def test_resume_from_a_dir_that_is_not_a_run(tmp_path):
    _bad(["train", "--resume", str(tmp_path)], "not a run directory")
    _bad(["eval", str(tmp_path)], "not a run directory")
    _bad(["predict", str(tmp_path), "x"], "not a run directory")


def test_debug_shows_the_traceback():
    res = runner.invoke(app, ["train", "dates", "train.max_stpes=5", "--debug"])
    assert res.exit_code != 0 and res.exception is not None and "max_stpes" in str(res.exception)


def test_corrupt_checkpoint_falls_back_and_says_so(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "dates", *TINY, "train.max_steps=10", "train.save_every=5",
                              "train.eval_every=10", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = (out / "report.json").read_bytes()
    newest = out / "checkpoints" / "step-00000010" / "model.safetensors"
    newest.write_bytes(b"garbage")
    res = runner.invoke(app, ["train", "--resume", str(out), "train.max_steps=12"])
    assert res.exit_code == 0, res.output
    assert "step-00000010 is corrupt; falling back to" in res.stderr and "step-00000005" in res.stderr
    assert (out / "checkpoints" / "step-00000012" / "DONE").is_file()
    # an existing run is never overwritten by a new one
    res = runner.invoke(app, ["train", "dates", *TINY, "--out", str(out)])
    assert res.exit_code == 2 and "--resume" in res.stderr
    assert report  # the old report was readable before; the resumed run wrote a new one
    assert (out / "report.json").is_file()
