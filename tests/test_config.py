"""attnlab.config: defaults, files, overrides, error messages, round trip, presets."""

from pathlib import Path
from typing import Literal

import pytest

from attnlab.config import Config, ConfigError, dump_config, load_config, preset_path


class Model(Config):
    layers: int = 2
    d: int = 64


class Optim(Config):
    lr: float = 1e-3
    schedule: Literal["cosine", "linear"] = "cosine"
    betas: list[float] = [0.9, 0.999]


class Data(Config):
    dir: str | None = None


class Train(Config):
    model: Model = Model()
    optim: Optim = Optim()
    data: Data = Data()
    seed: int = 0


def write(tmp_path: Path, text: str, name: str = "train.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults():
    assert load_config(Train) == Train()
    assert load_config(Train, {}) == Train()


def test_file_then_overrides_override_wins(tmp_path):
    path = write(tmp_path, "model:\n  layers: 4\n  d: 32\noptim:\n  lr: 0.1\n")
    cfg = load_config(Train, path, ["model.layers=3", "optim.lr=5e-4", "data.dir=/x"])
    assert cfg.model == Model(layers=3, d=32)  # d from the file, layers from the override
    assert cfg.optim.lr == 5e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.data.dir == "/x"
    assert load_config(Train, str(path)).model.layers == 4  # str paths work too


def test_dict_source_is_not_mutated():
    source = {"model": {"layers": 5}}
    cfg = load_config(Train, source, ["model.layers=6"])
    assert cfg.model.layers == 6 and source == {"model": {"layers": 5}}


@pytest.mark.parametrize("text, value", [("5e-4", 5e-4), ("1E3", 1000.0), ("-2.5e-3", -2.5e-3), ("1.0e-12", 1e-12)])
def test_scientific_notation_is_a_float(tmp_path, text, value):
    assert load_config(Train, overrides=[f"optim.lr={text}"]).optim.lr == value
    path = write(tmp_path, f"optim:\n  lr: {text}\n")
    assert load_config(Train, path).optim.lr == value


def test_scalar_values_are_yaml():
    cfg = load_config(Train, overrides=["optim.betas=[0.5, 0.6]", "data.dir=null", "seed=7"])
    assert cfg.optim.betas == [0.5, 0.6]
    assert cfg.data.dir is None
    assert cfg.seed == 7
    assert load_config(Train, {"data": {"dir": "/a"}}, ["data.dir=null"]).data.dir is None


def test_override_sets_a_whole_section():
    assert load_config(Train, overrides=["model={layers: 9}"]).model == Model(layers=9)


def test_malformed_yaml_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "model:\n  layers: 2\n  d: [1, 2\noptim: {}\n")
    with pytest.raises(ConfigError) as e:
        load_config(Train, path)
    msg = str(e.value)
    assert str(path) in msg and "line 4" in msg and "column" in msg and "\n" not in msg


def test_unknown_key_in_file(tmp_path):
    path = write(tmp_path, "optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"^unknown key 'optim\.lrr' \(did you mean 'optim\.lr'\?\)$"):
        load_config(Train, path)


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match=r"unknown key 'modle' \(did you mean 'model'\?\)"):
        load_config(Train, {"modle": {}})


def test_unknown_key_without_near_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key 'model\.zzz' \(valid keys: layers, d\)"):
        load_config(Train, {"model": {"zzz": 1}})


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"),
        ("modl.layers=1", "unknown key 'modl' (did you mean 'model'?)"),
        ("model.layerz=1", "unknown key 'model.layerz' (did you mean 'model.layers'?)"),
    ],
)
def test_unknown_override_path(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(Train, overrides=[override])
    assert str(e.value) == message


def test_override_into_a_plain_field_is_an_error():
    with pytest.raises(ConfigError, match=r"'model\.layers' is not a section"):
        load_config(Train, overrides=["model.layers.x=1"])


def test_override_without_equals():
    with pytest.raises(ConfigError, match=r"override 'optim\.lr' has no '='"):
        load_config(Train, overrides=["optim.lr"])


def test_bad_value_type_names_path_type_and_value():
    with pytest.raises(ConfigError) as e:
        load_config(Train, overrides=["optim.lr=fast"])
    assert str(e.value) == "optim.lr: expected a number, got 'fast'"
    with pytest.raises(ConfigError, match=r"^model\.layers: expected an integer, got 'three'$"):
        load_config(Train, {"model": {"layers": "three"}})


def test_list_item_error_has_an_index():
    with pytest.raises(ConfigError, match=r"^optim\.betas\[1\]: expected a number, got 'x'$"):
        load_config(Train, overrides=["optim.betas=[0.5, x]"])


def test_optional_field_error():
    with pytest.raises(ConfigError, match=r"^data\.dir: expected a string, got \[1\]$"):
        load_config(Train, overrides=["data.dir=[1]"])


def test_literal_violation_lists_the_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(Train, overrides=["optim.schedule=step"])
    msg = str(e.value)
    assert msg.startswith("optim.schedule: expected one of ") and msg.endswith("got 'step'")
    assert "'cosine'" in msg and "'linear'" in msg


def test_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"^model: expected a mapping, got 3$"):
        load_config(Train, {"model": 3})


def test_missing_file_and_non_mapping_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(Train, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(Train, write(tmp_path, "- 1\n- 2\n"))
    assert load_config(Train, write(tmp_path, "", "empty.yaml")) == Train()


def test_dump_round_trip(tmp_path):
    cfg = load_config(Train, overrides=["optim.lr=5e-10", "model.d=8", "data.dir=/x y", "optim.schedule=linear"])
    out = dump_config(cfg, tmp_path / "run" / "config.yaml")
    assert out.is_file()
    assert load_config(Train, out) == cfg
    assert [p.name for p in out.parent.iterdir()] == ["config.yaml"]  # no temp file left


def test_dump_replaces_an_existing_file(tmp_path):
    path = tmp_path / "config.yaml"
    dump_config(Train(), path)
    dump_config(Train(seed=3), path)
    assert load_config(Train, path).seed == 3


def test_preset_path():
    path = preset_path("models", "encoder-tiny")
    assert path is not None and path.is_file() and path.name == "encoder-tiny.yaml"
    assert preset_path("models", "no-such-preset") is None
    assert preset_path("no-such-group", "encoder-tiny") is None


class Tuned(Config):
    model: Model = Model(layers=5)
    extra: dict[str, int] = {"a": 1}


def test_override_keeps_the_field_default():
    cfg = load_config(Tuned, overrides=["model.d=8", "extra.b=2"])
    assert cfg.model == Model(layers=5, d=8)
    assert cfg.extra == {"a": 1, "b": 2}
    assert Tuned().extra == {"a": 1}  # the class default is not mutated
