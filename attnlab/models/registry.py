"""Models by name: typed configs, presets and ``create``.

A model family is a config dataclass (subclass of :class:`ModelConfig`) whose ``build()``
returns the module. A preset is a YAML file shipped in ``attnlab/configs/models/NAME.yaml``:
``family`` names the config class, ``description`` says what it is, every other key is a
config field. Code can add presets too::

    @register_model("encoder-mini")
    def encoder_mini() -> EncoderConfig:
        return EncoderConfig(vocab_size=128, d_model=32, num_layers=2, num_heads=4, ffn_dim=64)

    model = create("encoder-tiny", num_layers=3)     # overrides are config fields
    model_names()                                    # ["encoder-tiny", ...]

An unknown override is an error naming the nearest field (difflib). Each family's config also
says how the registry's smoke tests drive it: ``tiny()`` (small sizes) and ``example_inputs()``.
Families are looked up by ``ModelConfig.family`` when an attnlab checkpoint is read back.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, ClassVar

from torch import nn

# One error type for every bad config, model configs included (re-exported as attnlab.models.ConfigError).
from ..config import ConfigError
from ..registry import Registry

PRESETS: Registry[Callable[[], "ModelConfig"]] = Registry("model")
# A class defined again under the same qualified name (its module run twice) replaces the first.
FAMILIES: Registry[type["ModelConfig"]] = Registry(
    "model family", same=lambda old, new: old.__qualname__ == new.__qualname__)


@dataclasses.dataclass
class ModelConfig:
    """Base class of model configs (subclasses are dataclasses with a ``family`` name).

    Subclasses implement :meth:`build`, :meth:`tiny` and :meth:`example_inputs`; fields must be
    JSON values (int, float, str, bool, None) so checkpoints can store them.
    """

    family: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.family:
            FAMILIES.register(cls.family, cls)

    def build(self) -> nn.Module:
        """The model this config describes, freshly initialised."""
        raise NotImplementedError(f"{type(self).__name__}.build")

    @classmethod
    def tiny(cls) -> dict[str, Any]:
        """Overrides that make any preset of this family tiny (fast enough for unit tests)."""
        raise NotImplementedError(f"{cls.__name__}.tiny")

    def example_inputs(self, batch_size: int = 2, seq_len: int = 6) -> dict[str, Any]:
        """Keyword arguments for one forward pass of the built model (random, valid)."""
        raise NotImplementedError(f"{type(self).__name__}.example_inputs")

    def validate(self) -> None:
        """Raise :class:`ConfigError` on inconsistent values (called by :meth:`replace`)."""

    # ------------------------------------------------------------------ dict round trip

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **overrides) -> "ModelConfig":
        """A copy with ``overrides`` applied; unknown keys raise :class:`ConfigError`."""
        check_keys(type(self), overrides, where=type(self).__name__)
        new = dataclasses.replace(self, **overrides)
        new.validate()
        return new

    def __post_init__(self):
        pruned = getattr(self, "pruned_heads", None)
        if pruned is not None:  # families with prunable heads; JSON turns the layer keys into strings
            self.pruned_heads = {int(k): sorted(int(h) for h in v) for k, v in pruned.items()}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if "pruned_heads" in d and d["pruned_heads"] is None:  # unpruned configs (and presets) leave it out
            del d["pruned_heads"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Build from a dict of fields; unknown keys raise :class:`ConfigError`."""
        check_keys(cls, d, where=cls.__name__)
        cfg = cls(**d)
        cfg.validate()
        return cfg


def check_keys(cls: type[ModelConfig], keys, where: str) -> None:
    """Raise :class:`ConfigError` for the first key of ``keys`` that is not a field of ``cls``."""
    valid = cls.field_names()
    for key in keys:
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ConfigError(f"{where}: unknown config key {key!r}; {hint}valid keys: {', '.join(valid)}")


# ----------------------------------------------------------------------------- registry


def register_model(name: str):
    """Decorator: register a preset function ``() -> ModelConfig`` under ``name``.

    Raises:
        ValueError: another preset is already registered under ``name``.
    """
    return PRESETS.register(name)


def load_preset_files(directory=None) -> list[str]:
    """Register every ``*.yaml`` preset in ``directory`` (default: the package's
    ``configs/models``); returns the names. Call after the families' modules are imported.

    Args:
        directory: a folder of preset files (a path or an ``importlib.resources`` traversable).
    """
    import importlib.resources

    import yaml

    folder = directory or importlib.resources.files("attnlab").joinpath("configs", "models")
    names = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        name = entry.name[: -len(".yaml")]
        try:
            data = yaml.safe_load(entry.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"model preset {entry}: invalid YAML: {e}") from None
        family = data.pop("family", None)
        data.pop("description", None)
        if family not in FAMILIES:
            raise ConfigError(f"model preset {entry}: unknown family {family!r}; known: {', '.join(FAMILIES.names())}")
        cls = FAMILIES.get(family)
        check_keys(cls, data, where=f"model preset {entry}")
        register_model(name)(lambda cls=cls, data=data: cls.from_dict(dict(data)))
        names.append(name)
    return names


def preset_description(name: str) -> str:
    """The ``description`` line of a shipped preset file, or the preset function's docstring."""
    import importlib.resources
    import inspect

    import yaml

    entry = importlib.resources.files("attnlab").joinpath("configs", "models", f"{name}.yaml")
    if entry.is_file():
        return (yaml.safe_load(entry.read_text()) or {}).get("description", "")
    if name not in PRESETS:
        return ""
    return " ".join((inspect.getdoc(PRESETS.get(name)) or "").split())


def get_config(name: str, **overrides) -> ModelConfig:
    """The preset config registered under ``name``, with ``overrides`` applied.

    Args:
        name: a registered model name (see :func:`model_names`).
        **overrides: config fields to change; unknown keys raise :class:`ConfigError`.
    """
    cfg = PRESETS.get(name)()
    check_keys(type(cfg), overrides, where=f"model {name!r}")
    return cfg.replace(**overrides)


def create(name: str, **overrides) -> nn.Module:
    """Build the model registered under ``name``.

    Args:
        name: a registered model name (see :func:`model_names`).
        **overrides: config fields to change, e.g. ``num_layers=2``.
    """
    return get_config(name, **overrides).build()


def model_names() -> list[str]:
    """Names of the registered models, sorted."""
    return PRESETS.names()


def config_class(family: str) -> type[ModelConfig]:
    """The config class of a model family (as written in attnlab checkpoints)."""
    return FAMILIES.get(family)


__all__ = [
    "ModelConfig", "ConfigError", "register_model", "get_config", "create", "model_names",
    "config_class", "check_keys",
]
