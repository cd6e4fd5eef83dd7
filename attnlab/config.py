"""Typed configs: pydantic models, YAML files, ``key=value`` overrides, readable errors.

A config is a tree of :class:`Config` models. :func:`load_config` reads defaults, then a
YAML file (or dict), then dotted overrides such as ``optim.lr=5e-4``, and validates the
result. Every failure is a :class:`ConfigError` whose one-line message names the full
dotted path, e.g. ``unknown key 'optim.lrr' (did you mean 'optim.lr'?)``.
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["Config", "ConfigError", "load_config", "dump_config", "preset_path"]

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base of every typed config: unknown keys are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ConfigError(ValueError):
    """A config could not be read or validated; the message is one user-facing line."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``5e-4`` and ``1e3`` as floats (YAML 1.1 wants a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}") from None


# --- schema walking -------------------------------------------------------------------


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The model class a field holds (also through ``Optional``/``Annotated``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = {m for a in typing.get_args(annotation) if (m := _submodel(a)) is not None}
    return models.pop() if len(models) == 1 else None


def _suggest(key: str, prefix: str, names: Sequence[str]) -> str:
    near = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    if near:
        return f" (did you mean '{prefix}{near[0]}'?)"
    return f" (valid keys: {', '.join(names)})" if names else ""


def _unknown_key(path: Sequence[str], siblings: Sequence[str]) -> ConfigError:
    prefix = "".join(f"{p}." for p in path[:-1])
    return ConfigError(f"unknown key '{prefix}{path[-1]}'{_suggest(path[-1], prefix, siblings)}")


# --- overrides ------------------------------------------------------------------------


def _apply_override(cls: type[BaseModel], data: dict, override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override '{override}' has no '=' (expected key=value, e.g. optim.lr=5e-4)")
    key, _, text = override.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{override}' has an empty key")
    value = _yaml_load(text, f"override '{override}'")

    model: type[BaseModel] | None = cls
    node = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        default: Any = None
        if model is not None:
            if part not in model.model_fields:
                raise _unknown_key(parts[: i + 1], list(model.model_fields))
            field = model.model_fields[part]
            if not last and not isinstance(node.get(part), dict):
                default = field.get_default(call_default_factory=True)
            model = _submodel(field.annotation)
        if last:
            node[part] = value
            break
        if isinstance(node.get(part), str) and model is not None and "name" in model.model_fields:
            node[part] = {"name": node[part]}  # `model=rnn` then `model.d=8`: a section named by a string
        if not isinstance(node.get(part), dict):
            # start from the field's default, so `model.d=8` keeps the default's other keys
            if isinstance(default, BaseModel):
                node[part] = default.model_dump()
            elif isinstance(default, dict):
                node[part] = copy.deepcopy(default)
            elif model is not None:
                node[part] = {}
            else:  # a plain field (e.g. an int) holds no keys
                raise ConfigError(f"override '{override}': '{'.'.join(parts[: i + 1])}' is not a section")
        node = node[part]


# --- validation errors ----------------------------------------------------------------

_EXPECTED = {
    "float_parsing": "a number", "float_type": "a number",
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
    "bool_parsing": "true or false", "bool_type": "true or false",
    "string_type": "a string", "none_required": "null",
    "list_type": "a list", "tuple_type": "a list", "set_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}


def _locate(cls: type[BaseModel], data: Any, loc: tuple) -> tuple[str, list[str]]:
    """Dotted path of a pydantic ``loc`` and the field names beside its last key.

    Union members add tags such as ``'str'`` to a ``loc``; those are neither a field nor a
    key of the input, so walking the schema and the input together drops them.
    """
    model: type[BaseModel] | None = cls
    path = ""
    siblings: list[str] = []
    for item in loc:
        if isinstance(item, int) and isinstance(data, list):
            path += f"[{item}]"
            data = data[item] if 0 <= item < len(data) else None
            model = None
            continue
        in_model = model is not None and item in model.model_fields
        in_data = isinstance(data, dict) and item in data
        if not (in_model or in_data):
            continue  # a union member tag, not a key
        siblings = list(model.model_fields) if model is not None else []
        path = f"{path}.{item}" if path else str(item)
        data = data.get(item) if isinstance(data, dict) else None
        model = _submodel(model.model_fields[item].annotation) if in_model else None
    return path, siblings


def _from_validation(cls: type[BaseModel], data: dict, err: ValidationError) -> ConfigError:
    by_path: dict[str, list[dict]] = {}
    siblings: dict[str, list[str]] = {}
    for e in err.errors():
        path, sib = _locate(cls, data, e["loc"])
        by_path.setdefault(path, []).append(e)
        siblings[path] = sib
    messages = []
    for path, errors in by_path.items():
        kind = errors[0]["type"]
        value = errors[0].get("input")
        if kind == "extra_forbidden":
            parts = path.split(".")
            messages.append(str(_unknown_key(parts, siblings[path])))
        elif kind == "missing":
            messages.append(f"missing required key '{path}'")
        elif all(e["type"] in _EXPECTED or e["type"] in ("literal_error", "enum") for e in errors):
            expected = []
            for e in errors:
                want = e["ctx"]["expected"] if e["type"] in ("literal_error", "enum") else _EXPECTED[e["type"]]
                if e["type"] in ("literal_error", "enum"):
                    want = f"one of {want}"
                if want not in expected:
                    expected.append(want)
            messages.append(f"{path}: expected {' or '.join(expected)}, got {value!r}")
        else:
            msg = errors[0]["msg"]
            messages.append(f"{path}: {msg[:1].lower()}{msg[1:]}, got {value!r}")
    return ConfigError("; ".join(messages))


# --- public API -----------------------------------------------------------------------


def load_config(
    cls: type[C],
    source: str | Path | Mapping | None = None,
    overrides: Sequence[str] = (),
) -> C:
    """Build a validated config from defaults, a YAML file or dict, and overrides.

    Args:
        cls: the :class:`Config` subclass to build.
        source: a YAML file path, a dict of values, or None for the defaults alone.
        overrides: dotted ``key=value`` strings applied last (they win over ``source``);
            values are read as YAML scalars, so ``3`` is an int, ``5e-4`` a float,
            ``null`` None and ``[1,2]`` a list.

    Raises:
        ConfigError: unreadable or malformed YAML, an unknown key, a bad value or a
            malformed override; the message names the full dotted path.
    """
    if isinstance(overrides, str):  # a lone "a=b" would otherwise be read letter by letter
        overrides = [overrides]
    if source is None:
        data: Any = {}
    elif isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
        data = _yaml_load(text, str(path))
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of keys at the top, got {type(data).__name__}")
    for override in overrides:
        _apply_override(cls, data, override)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise _from_validation(cls, data, e) from None


def dump_config(cfg: BaseModel, path: str | Path) -> Path:
    """Write ``cfg`` as YAML, atomically (a temp file beside it, then ``os.replace``).

    Args:
        cfg: a validated config; :func:`load_config` reads the file back to an equal one.
        path: the file to write; missing parent folders are created.

    Returns:
        The path written.
    """
    from .io import write_text

    return write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))


def preset_path(group: str, name: str) -> Path | None:
    """The shipped preset ``attnlab/configs/<group>/<name>.yaml``, or None if there is none.

    Args:
        group: the preset folder, e.g. ``"models"``.
        name: the file name without ``.yaml``.
    """
    ref = importlib.resources.files("attnlab").joinpath("configs").joinpath(group).joinpath(f"{name}.yaml")
    return Path(str(ref)) if ref.is_file() else None
