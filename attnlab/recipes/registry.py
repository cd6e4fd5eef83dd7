"""The recipe registry and config resolution for ``attnlab train RECIPE_OR_YAML``.

A name resolves to a shipped preset ``attnlab/configs/recipes/<name>.yaml`` (whose ``recipe``
key names the recipe); a path resolves to a YAML file of the user's. Either way the ``recipe``
key picks the recipe and so the config class that validates the file and the overrides.
"""

from __future__ import annotations

import difflib
import importlib.resources
from pathlib import Path

import yaml

from ..config import ConfigError, load_config, preset_path, read_yaml
from ..registry import Registry

__all__ = ["register_recipe", "get_recipe", "recipe_names", "preset_names", "resolve_config", "load_run_config"]

# One instance per recipe class; the same class registered again (a module imported twice) replaces it.
RECIPES: Registry[object] = Registry("recipe", same=lambda old, new: type(old) is type(new))


def register_recipe(cls):
    """Class decorator: register a recipe (an instance of ``cls``) under ``cls.name``.

    Raises:
        ValueError: another recipe class already has that name.
    """
    RECIPES.register(cls.name, cls())
    return cls


def recipe_names() -> list[str]:
    return RECIPES.names()


def get_recipe(name: str):
    """The recipe registered under ``name``; ConfigError with the nearest name otherwise."""
    return RECIPES.get(name)


def preset_names() -> list[str]:
    """The shipped recipe presets (``configs/recipes/*.yaml``)."""
    folder = importlib.resources.files("attnlab").joinpath("configs").joinpath("recipes")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_info(name: str) -> tuple[str, str]:
    """``(recipe, description)`` of a preset."""
    data = yaml.safe_load(preset_path("recipes", name).read_text(encoding="utf-8")) or {}
    return data.get("recipe", "?"), data.get("description", "")


def resolve_config(recipe_or_yaml: str, overrides=()):
    """``(recipe, config, name)`` from a preset name or a YAML path plus ``key=value`` overrides.

    Raises:
        ConfigError: unknown preset, unreadable or malformed YAML, unknown keys or bad values.
    """
    path = Path(recipe_or_yaml)
    if recipe_or_yaml.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        name = path.stem
    else:
        found = preset_path("recipes", recipe_or_yaml)
        if found is None:
            choices = preset_names()
            near = difflib.get_close_matches(recipe_or_yaml, choices, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"choose one of {', '.join(choices)}"
            raise ConfigError(f"unknown recipe or preset '{recipe_or_yaml}' ({hint}, or give a .yaml file)")
        path, name = found, recipe_or_yaml
    return (*_load(path, overrides), name)


def load_run_config(run_dir: Path, overrides=()):
    """``(recipe, config)`` of a run directory's saved ``config.yaml``, with overrides."""
    return _load(Path(run_dir) / "config.yaml", overrides)


def _load(path: Path, overrides):
    data = read_yaml(path)
    if not isinstance(data, dict) or "recipe" not in data:
        raise ConfigError(f"{path}: missing required key 'recipe' (one of {', '.join(recipe_names())})")
    recipe = get_recipe(data["recipe"])
    return recipe, load_config(recipe.config_cls, path, overrides)
