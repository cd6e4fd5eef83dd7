"""Presets ship as YAML in the package; a bad preset file names the file and the key."""

import importlib.resources

import pytest
import yaml

from attnlab.models import ConfigError, get_config, model_names
from attnlab.models.registry import load_preset_files, preset_description


def test_every_shipped_preset_file_is_registered_and_round_trips():
    folder = importlib.resources.files("attnlab").joinpath("configs", "models")
    files = sorted(e.name[:-5] for e in folder.iterdir() if e.name.endswith(".yaml"))
    assert files and set(files) <= set(model_names())
    for name in files:
        data = yaml.safe_load(folder.joinpath(f"{name}.yaml").read_text())
        cfg = get_config(name)
        assert cfg.family == data["family"]
        assert {k: v for k, v in cfg.to_dict().items()} == {
            k: v for k, v in data.items() if k not in ("family", "description")}
        assert preset_description(name)


def test_bad_preset_files(tmp_path):
    (tmp_path / "x.yaml").write_text("family: encoder\nnum_layer: 2\n")
    with pytest.raises(ConfigError, match=r"x.yaml: unknown config key 'num_layer'; did you mean 'num_layers'"):
        load_preset_files(tmp_path)
    (tmp_path / "x.yaml").write_text("family: perceiver\n")
    with pytest.raises(ConfigError, match=r"x.yaml: unknown family 'perceiver'"):
        load_preset_files(tmp_path)
    (tmp_path / "x.yaml").write_text("family: [encoder\n")
    with pytest.raises(ConfigError, match=r"x.yaml: invalid YAML"):
        load_preset_files(tmp_path)
