"""What ``attnlab train / eval / predict`` do, as plain functions (the CLI only parses and prints)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..config import dump_config
from ..train.distributed import broadcast_object, init_distributed, shutdown
from ..io import write_json
from ..train.rundir import CONFIG_FILE, RunDirError, check_run_dir, new_run_dir
from .registry import load_run_config, resolve_config

__all__ = ["train_run", "eval_run", "predict_run", "export_run"]


def train_run(recipe_or_yaml: str | None, overrides: list[str], *, out: Path | None = None,
              resume: Path | None = None, runs_root: Path = Path("runs"),
              log: Callable[[str], None] = print) -> tuple[Path, dict]:
    """Train a recipe in a new run directory, or resume one.

    Args:
        recipe_or_yaml: a recipe preset name or a YAML config path (None with ``resume``).
        overrides: dotted ``key=value`` overrides.
        out: the run directory to create (default ``runs_root/<name>-<timestamp>``).
        resume: an existing run directory to continue (its ``config.yaml``, plus ``overrides``).
        runs_root: the parent of new run directories.
        log: where progress messages go (main process only).

    Returns:
        ``(run_dir, report)``; the report is empty on non-main processes.
    """
    if resume is not None:
        run_dir = check_run_dir(resume)
        recipe, cfg = load_run_config(run_dir, overrides)
        if recipe_or_yaml is not None:
            _, other, _ = resolve_config(recipe_or_yaml, [])
            if other.recipe != cfg.recipe:
                raise RunDirError(f"--resume {run_dir} is a '{cfg.recipe}' run, not '{other.recipe}'")
    else:
        if recipe_or_yaml is None:
            raise RunDirError("give a recipe or a config file (see `attnlab recipes`), or --resume RUN_DIR")
        recipe, cfg, name = resolve_config(recipe_or_yaml, overrides)
        cfg = recipe.resolve(cfg)
    dist = init_distributed(cfg.train.device)  # "auto" is resolved there, before the backend is chosen
    say = log if dist.is_main else (lambda _msg: None)
    try:
        if resume is None:
            run_dir = None
            if dist.is_main:
                if out is not None:
                    out = Path(out)
                    if (out / CONFIG_FILE).exists():
                        raise RunDirError(f"{out} already holds a run; continue it with --resume {out}")
                    out.mkdir(parents=True, exist_ok=True)
                    run_dir = out
                else:
                    run_dir = new_run_dir(runs_root, name)
                dump_config(cfg, run_dir / CONFIG_FILE)
            run_dir = Path(broadcast_object(str(run_dir) if run_dir else None))
        elif dist.is_main:
            dump_config(cfg, run_dir / CONFIG_FILE)  # the overrides of the resumed run are kept
        say(f"run dir: {run_dir}")
        report = recipe.train(cfg, run_dir, resume=resume is not None, dist=dist, log=say)
    finally:
        shutdown()
    return run_dir, report


def eval_run(run_dir: Path, split: str | None, overrides: list[str], log: Callable[[str], None] = print,
             data_file: Path | None = None) -> dict:
    """Score a trained run's final model on one of its splits, or on a labelled file in the
    recipe's own format (``data_file``); writes ``eval-<split>.json`` (``eval-<file name>.json``)."""
    run_dir = check_run_dir(run_dir)
    recipe, cfg = load_run_config(run_dir, overrides)
    metrics = recipe.evaluate(cfg, run_dir, split, log, data_file=data_file)
    name = split if data_file is None else Path(data_file).name
    write_json(run_dir / f"eval-{name}.json", metrics)
    return metrics


def predict_run(run_dir: Path, texts: list[str], overrides: list[str] = (), log: Callable[[str], None] = print,
                **options) -> list[str]:
    """One output per input text, in order; ``options`` go to the recipe (``beam``, ``probs``)."""
    run_dir = check_run_dir(run_dir)
    recipe, cfg = load_run_config(run_dir, list(overrides))
    return recipe.predict(cfg, run_dir, texts, log, **options)


def export_run(run_dir: Path, out: Path, merge: bool = False, log: Callable[[str], None] = print) -> Path:
    """A standalone checkpoint of a trained run in ``out`` (``config.json``, ``model.safetensors``
    and the tokenizer files) that :func:`attnlab.models.load_pretrained` reads.

    Args:
        run_dir: the run.
        out: the directory to write (created; existing files of the same names are replaced).
        merge: fold a LoRA/AdaLoRA/IA³/BitFit run's weights into the base (required for such a
            run; prefix tuning and adapters cannot be merged).
    """
    import shutil

    from ..finetune.method import is_applied
    from ..io import atomic_path
    from ..train.rundir import TOKENIZER_DIR

    run_dir = check_run_dir(run_dir)
    recipe, cfg = load_run_config(run_dir)
    model, _ = recipe.load_run(cfg, run_dir, log)
    if is_applied(model):
        from ..finetune import merge as merge_method
        from ..finetune import method_of

        name = method_of(model).name
        if not merge:
            raise ValueError(f"{run_dir} is a {name} run (an adapter beside its base); pass --merge to fold it "
                             "into a standalone checkpoint")
        model = merge_method(model)
        log(f"merged the {name} weights into the base model")
    out = Path(out)
    model.save_pretrained(out)
    tok = run_dir / TOKENIZER_DIR
    for src in sorted(tok.iterdir()) if tok.is_dir() else ():
        if src.is_file():
            with atomic_path(out / src.name) as tmp:
                shutil.copyfile(src, tmp)
    return out
