"""Garbage through the config loader: ``load_config`` from a file, ``read_yaml``, and ``key=value``
overrides. Each gives a config or a one-line ``ConfigError``, never another exception; a file that
cannot be parsed is named in the message. (A file that parses but holds a bad key or value is
named by the key's dotted path, as tests/test_config.py asserts.)"""

from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from attnlab.cli import app
from attnlab.config import MAX_CONFIG_BYTES, Config, ConfigError, load_config, read_yaml

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BOM = b"\xef\xbb\xbf"


class Optim(Config):
    lr: float = 1e-3
    schedule: Literal["cosine", "linear"] = "cosine"
    betas: list[float] = [0.9, 0.999]


class Model(Config):
    name: str = "rnn"
    layers: int = 2
    options: dict[str, Any] = {}


class Train(Config):
    model: Model = Model()
    optim: Optim = Optim()
    dir: str | None = None
    seed: int = 0


YAML_PIECES = [
    b"model", b"optim", b"lr", b"layers", b"betas", b"schedule", b"options", b"seed", b"dir", b"name",
    b": ", b":", b"- ", b"\n", b"\r\n", b"  ", b"\t", b"{", b"}", b"[", b"]", b",", b"? ", b"'", b'"', b"#", b"|", b">",
    b"---\n", b"...\n", b"%YAML 1.1\n", b"%TAG ! tag:x,2000:\n", b"&a ", b"*a", b"&b ", b"*b", b"<<: ", b"<<: *a",
    b"!!python/object/apply:os.system ['true']", b"!!python/name:os.system", b"!!binary ", b"!!float ", b"!!int ",
    b"!!timestamp ", b"!!set ", b"!!omap ", b"!!str ", b"!custom ", b"2001-13-45", b"2001-12-14t21:59:43.10-05:00",
    b"5e-4", b"1e3", b"0x1F", b"0o17", b"0b101", b"1_000", b".inf", b"-.nan", b"~", b"null", b"yes", b"3.", b"9" * 5000,
    b"\x00", b"\x07", BOM, b"\xe9", b"\xc3\xa9", b"\xff", b"\\", b"\\x00", b"\\ud800", b"[" * 2000, b"{a: " * 500,
]
yaml_chunks = st.one_of(st.sampled_from(YAML_PIECES), st.binary(max_size=12), st.text(max_size=12).map(str.encode))
yaml_garbage = st.one_of(st.binary(max_size=300), st.lists(yaml_chunks, max_size=30).map(b"".join))
KEYS = ["model", "optim", "lr", "layers", "options", "betas", "seed", "dir", "name", "x", "", " ", "0", "model.layers"]
override = st.one_of(
    st.text(max_size=40),
    st.builds(lambda ks, v: ".".join(ks) + "=" + v.decode("utf-8", "replace"),
              st.lists(st.sampled_from(KEYS), min_size=1, max_size=4), yaml_garbage),
)


def _check(fn, *args, name: str | None = None):
    """``fn(*args)``: a result, or a one-line ConfigError (naming ``name`` when given)."""
    try:
        return fn(*args)
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg and "\r" not in msg, msg
        if name is not None:
            assert name in msg, msg
        return None


def _parse_error(data: bytes) -> bool:
    """Whether ``data`` cannot even be read as one YAML document (so the message must name the file)."""
    import yaml

    try:
        text = data.decode("utf-8")
        yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - any refusal at all (RecursionError included), by any layer
        return True
    return False


@FUZZ
@given(yaml_garbage)
@example(b"")
@example(b"  \n\t\n")
@example(BOM + b"model:\r\n  layers: 3\r\n")
@example(b"model: {name: a\x00b}\n")
@example("model: {name: caf\xe9}\n".encode("latin-1"))
@example(bytes(range(256)))
@example(b"[" * 5000)
@example(b"model: {layers: " + b"9" * 5000 + b"}\n")
@example(b"model: &x {options: {a: *x}}\n")
@example(b"seed: 2001-13-45\n")
@example(b"optim: {lr: !!float abc}\n")
@example(b"seed: !!int\n")
@example(b"seed: !!bool x\n")
@example(b"dir: !!timestamp x\n")
@example(b"!!python/object/apply:os.system ['touch pwned']\n")
def test_load_config_from_a_garbage_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "train.yaml"
    path.write_bytes(data)
    cfg = _check(load_config, Train, path, name=str(path) if _parse_error(data) else None)
    assert cfg is None or isinstance(cfg, Train)
    _check(read_yaml, path, name=str(path))


@FUZZ
@given(st.lists(override, min_size=1, max_size=4))
@example(["model.options=&a [*a]"])
@example(["model.layers=" + "[" * 5000])
@example(["model.layers=" + "9" * 5000])
@example(["optim.lr=!!python/name:os.system"])
@example(["model.name=\x00"])
@example(["model.name=a\nb"])
@example(["model=rnn", "model.layers=3"])
def test_garbage_overrides(overrides):
    cfg = _check(load_config, Train, None, overrides)
    assert cfg is None or isinstance(cfg, Train)


def test_bom_crlf_empty_and_whitespace_files(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_bytes(BOM + b"model:\r\n  layers: 3\r\noptim: {lr: 5e-4}\r\n")
    assert load_config(Train, path) == Train(model=Model(layers=3), optim=Optim(lr=5e-4))
    for blank in (b"", b"\n\n", b"   \n", BOM):
        path.write_bytes(blank)
        assert load_config(Train, path) == Train()


@pytest.mark.parametrize("data, needle", [
    ("model: {name: caf\xe9}\n".encode("latin-1"), "not valid UTF-8 (byte 0xe9 at line 1, column 18)"),
    (b"model:\n  name: a\x00b\n", "invalid YAML: unacceptable character #x0000"),
    (b"[" * 5000, "nested too deeply"),
    (b"seed: " + b"9" * 5000 + b"\n", "an integer with too many digits"),
    (b"seed: 2001-13-45\n", "month must be in 1..12"),
    (b"seed: !!int\n", "a value that its type or tag cannot hold"),
    (b"model: &x {options: {a: *x}}\n", "a cycle"),
    (b"a: &a [1,1,1,1,1,1,1,1,1,1]\n" + b"".join(b"%c: &%c [%s]\n" % (c, c, b",".join([b"*%c" % (c - 1)] * 10))
                                               for c in b"bcdefgh") + b"model: {options: {x: *h}}\n",
     "aliases expand to more than 100,000 values"),
    (b"!!python/object/apply:os.system ['touch pwned']\n", "could not determine a constructor"),
])
def test_refusals_name_the_file(tmp_path, data, needle):
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as e:
        load_config(Train, path)
    assert str(e.value).startswith(f"{path}: ") and needle in str(e.value), str(e.value)
    assert not (tmp_path / "pwned").exists()


def test_a_single_50_mb_line_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"model: {name: " + b"a" * (50 << 20) + b"}\n")
    with pytest.raises(ConfigError) as e:
        load_config(Train, path)
    assert str(e.value) == f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes; not a config file?"


def test_messages_about_huge_values_stay_short():
    with pytest.raises(ConfigError) as e:
        load_config(Train, None, ["model.layers=[" + ",".join(["abc"] * 5000) + "]"])
    assert len(str(e.value)) < 300
    with pytest.raises(ConfigError) as e:
        load_config(Train, {f"k{i}": 1 for i in range(100)})
    assert str(e.value).endswith("and 90 more")
    for bad in ["x" * 10_000 + "=1", "model.layers=" + "[" * 10_000, "model.layers.x" + "y" * 10_000 + "=1"]:
        with pytest.raises(ConfigError) as e:
            load_config(Train, None, [bad])
        assert len(str(e.value)) < 400, str(e.value)


# --- through the command line ---------------------------------------------------------------------

runner = CliRunner()
CLI_GARBAGE = {
    "random bytes": bytes(range(255, -1, -1)) * 8,
    "latin-1": "recipe: caf\xe9\n".encode("latin-1"),
    "nul": b"recipe: classification\x00\n",
    "deep": b"[" * 5000,
    "cycle": b"recipe: &x [*x]\n",
    "alias bomb": b"recipe: classification\na: &a [1,1,1,1,1,1,1,1,1,1]\n"
                  + b"".join(b"%c: &%c [%s]\n" % (c, c, b",".join([b"*%c" % (c - 1)] * 10)) for c in b"bcdefgh"),
    "bad timestamp": b"recipe: classification\ntrain: {max_steps: 2001-13-45}\n",
    "huge int": b"recipe: classification\ntrain: {max_steps: " + b"9" * 5000 + b"}\n",
    "tab": b"recipe: classification\n\tdata: 1\n",
    "python tag": b"recipe: !!python/object/apply:os.system ['true']\n",
    "empty": b"",
    "bom crlf typo": BOM + b"recipe: classification\r\ntrain:\r\n  max_stepz: 3\r\n",
}
# recipes/registry.py reads the file with read_text() before config.py sees it, so bytes that are not
# UTF-8 come back as a bare UnicodeDecodeError line ("'utf-8' codec can't decode ...") without the name
NOT_UTF8 = {"random bytes", "latin-1"}


@pytest.mark.parametrize("kind", list(CLI_GARBAGE))
def test_cli_train_on_a_garbage_yaml(tmp_path, kind):
    path = tmp_path / "garbage.yaml"
    path.write_bytes(CLI_GARBAGE[kind])
    res = runner.invoke(app, ["train", str(path), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in res.output, res.output
    assert not (tmp_path / "run").exists()
    if kind not in NOT_UTF8 and kind != "bom crlf typo":  # a typo is named by its key path
        assert "garbage.yaml" in err, err


@pytest.mark.parametrize("kind", sorted(NOT_UTF8))
def test_cli_names_a_yaml_that_is_not_utf8(tmp_path, kind):
    path = tmp_path / "garbage.yaml"
    path.write_bytes(CLI_GARBAGE[kind])
    res = runner.invoke(app, ["train", str(path)])
    assert res.exit_code == 2 and "garbage.yaml" in res.stderr, res.output
