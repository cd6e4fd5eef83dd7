"""Task recipes: a config, data, a model and the shared trainer, run by ``attnlab train``.

    recipe, cfg, name = resolve_config("dates", ["train.max_steps=100"])
    report = recipe.train(cfg, run_dir, resume=False, dist=DistInfo(), log=print)
"""

from . import classification, dates, translation  # noqa: F401  (registers the recipes)
from .registry import get_recipe, load_run_config, preset_names, recipe_names, register_recipe, resolve_config

__all__ = ["get_recipe", "load_run_config", "preset_names", "recipe_names", "register_recipe", "resolve_config"]
