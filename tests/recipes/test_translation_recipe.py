"""The translation recipe on a few hundred real Multi30k lines (skipped without ../shared/data)."""

import json
from pathlib import Path

import pytest
import sacrebleu
import yaml
from typer.testing import CliRunner

from attnlab.cli import app
from attnlab.data import read_parallel

runner = CliRunner()
MULTI30K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "multi30k"
needs_data = pytest.mark.skipif(not (MULTI30K / "train.de.gz").is_file(),
                                reason=f"{MULTI30K} not found: the shared Multi30k copy is needed")
TINY = ["data.limit=300", "data.eval_limit=60", "tokenizer.vocab_size=400", "model.d_model=32", "model.layers=1", "model.heads=2",
        "model.ffn_dim=64", "train.max_tokens=1500", "train.max_steps=12", "train.max_time=null",
        "train.eval_every=6", "train.save_every=6", "train.log_every=3", "train.progress=lines", "train.tensorboard=false",
        "decode.val_limit=30", "decode.beam=2", "decode.average_last=2", "decode.max_len_b=5",
        "decode.max_len_a=0.5"]


@needs_data
def test_translation_run_scores_with_sacrebleu(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "multi30k-de-en", f"data.dir={MULTI30K}", *TINY, "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert Path(saved["data"]["dir"]).is_absolute()  # eval/predict work from any directory
    assert report["test"]["beam"] == 2 and report["val"]["beam"] == 1
    assert "average of last 2" in report["final_weights"] or report["final_weights"].startswith("average of step-")
    refs = [y for _, y in read_parallel(MULTI30K / "test_2016_flickr.de.gz", MULTI30K / "test_2016_flickr.en.gz")]
    refs = refs[:60]
    hyps = (out / "predictions" / "test.hyp.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(hyps) == len(refs) == 60
    assert report["test"]["bleu"] == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
    assert report["test"]["chrf"] == round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)
    src = tmp_path / "src.txt"
    src.write_text("Ein Hund läuft.\nZwei Männer spielen Fußball.\n", encoding="utf-8")
    res = runner.invoke(app, ["predict", str(out), "--input", str(src), "--output", str(tmp_path / "hyp.txt"),
                              "--beam", "3"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "hyp.txt").read_text(encoding="utf-8").count("\n") == 2


@needs_data
def test_download_path_fetches_into_the_cache(tmp_path):
    """No data.dir: the files are fetched from base_url (here a file:// copy) into cache_dir."""
    cache = tmp_path / "cache"
    args = ["train", "multi30k-en-de", "data.dir=null", f"data.base_url={MULTI30K.as_uri()}",
            f"data.cache_dir={cache}", *TINY, "train.max_steps=2", "decode.average_last=0", "--out",
            str(tmp_path / "run")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    got = sorted(p.name for p in (cache / "multi30k").iterdir())
    assert got == sorted(f"{s}.{l}.gz" for s in ("train", "val", "test_2016_flickr") for l in ("en", "de"))
    assert (cache / "multi30k" / "train.en.gz").read_bytes() == (MULTI30K / "train.en.gz").read_bytes()
