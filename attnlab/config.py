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
import reprlib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError

__all__ = ["Config", "ConfigError", "load_config", "dump_config", "preset_path", "read_yaml"]

C = TypeVar("C", bound="Config")
MAX_CONFIG_BYTES = 1 << 20  # configs are a few hundred bytes; a bigger file is the wrong file
MAX_YAML_VALUES = 100_000  # values once aliases are expanded: a config has hundreds, an alias bomb billions
_SHORT = reprlib.Repr()  # values in messages: cut to a line, however large or deep
_SHORT.maxstring = _SHORT.maxother = 80


def _clip(text: str, n: int = 100) -> str:
    """``text`` cut to ``n`` characters for a message."""
    return text if len(text) <= n else text[: n - 3] + "..."


class Config(BaseModel):
    """Base of every typed config: unknown keys are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid")




class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``5e-4`` and ``1e3`` as floats (YAML 1.1 wants a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str, where: str) -> Any:
    """One YAML document read with the safe loader; ``where`` (a file, an override) starts every message."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}") from None
    except RecursionError:  # the composer recurses once per level of nesting
        raise ConfigError(f"{where}: invalid YAML: nested too deeply") from None
    except (ValueError, IndexError, KeyError, AttributeError) as e:
        # PyYAML's SafeConstructor on a scalar its type cannot hold: ValueError for "2001-13-45",
        # "!!float x" or a 5000-digit int; IndexError, KeyError, AttributeError for "!!int ''",
        # "!!bool x", "!!timestamp x" (it indexes and matches without checking)
        raise ConfigError(f"{where}: invalid YAML: {_value_problem(e)}") from None
    _check_expansion(data, where)
    return data


def _value_problem(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    if not isinstance(e, ValueError) or not text:
        return "a value that its type or tag cannot hold"
    if "integer string conversion" in text:  # its advice (sys.set_int_max_str_digits) is for programmers
        return "an integer with too many digits"
    return f"a value that cannot be read ({text})"


def _check_expansion(data: Any, where: str) -> None:
    """Refuse a document whose aliases make it refer to itself, or expand past ``MAX_YAML_VALUES``.

    Aliases share one object, so loading an alias bomb is cheap; what is not is everything that
    walks it later (validation, ``repr`` in messages, ``dump_config``). Iterative, so any depth the
    composer accepted is fine.
    """
    sizes: dict[int, int] = {}  # id of a list or dict -> the values below it, aliases expanded
    open_ids: set[int] = set()  # the containers on the current path
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, done = stack.pop()
        children = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None or (not done and id(node) in sizes):
            continue
        if done:
            open_ids.discard(id(node))
            sizes[id(node)] = size = 1 + sum(sizes.get(id(c), 1) for c in children)
            if size > MAX_YAML_VALUES:
                raise ConfigError(f"{where}: its aliases expand to more than {MAX_YAML_VALUES:,} values")
            continue
        if id(node) in open_ids:
            raise ConfigError(f"{where}: an alias refers to a value that holds it (a cycle)")
        open_ids.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if isinstance(c, (dict, list)))


def read_yaml(path: str | Path) -> Any:
    """The YAML document of a config file (None when it is empty), read with the safe loader.

    Args:
        path: the file: UTF-8, at most ``MAX_CONFIG_BYTES``; a byte-order mark is allowed.

    Raises:
        ConfigError: the file is missing or unreadable, too large, not UTF-8, or not YAML; the
            one-line message names the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes; not a config file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = len(raw[raw.rfind(b"\n", 0, e.start) + 1 : e.start].decode("utf-8", "replace")) + 1
        byte = f"byte 0x{raw[e.start]:02x} at line {line}, column {column}"
        raise ConfigError(f"{path}: not valid UTF-8 ({byte})") from None
    return _yaml_load(text.removeprefix("\ufeff"), str(path))


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
    return ConfigError(f"unknown key '{_clip(prefix + path[-1])}'{_suggest(path[-1], prefix, siblings)}")


# --- overrides ------------------------------------------------------------------------


def _apply_override(cls: type[BaseModel], data: dict, override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override '{_clip(override)}' has no '=' (expected key=value, e.g. optim.lr=5e-4)")
    key, _, text = override.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{_clip(override)}' has an empty key")
    value = _yaml_load(text, f"override '{_clip(override)}'")

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
                raise ConfigError(f"override '{_clip(override)}': '{_clip('.'.join(parts[: i + 1]))}' is not a section")
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
        path = _clip(path)
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
            messages.append(f"{path}: expected {' or '.join(expected)}, got {_SHORT.repr(value)}")
        else:
            msg = errors[0]["msg"]
            messages.append(f"{path}: {msg[:1].lower()}{msg[1:]}, got {_SHORT.repr(value)}")
    if len(messages) > 10:  # a file of garbage keys: the first few say enough
        messages[10:] = [f"and {len(messages) - 10} more"]
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
        data = read_yaml(path)
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
