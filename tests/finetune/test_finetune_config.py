"""FinetuneConfig: per-method defaults, unknown keys, and settings a method cannot use."""

import subprocess
import sys

import pytest

from attnlab.config import ConfigError, load_config
from attnlab.finetune import FinetuneConfig, apply_finetune


def test_method_defaults():
    assert FinetuneConfig().method == "full" and FinetuneConfig().modules_to_save == ["head"]
    lora = FinetuneConfig(method="lora")
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules) == (8, 16, 0.1, ["q_proj", "v_proj"])
    assert FinetuneConfig(method="adalora").target_modules == ["q_proj", "v_proj"]
    ia3 = load_config(FinetuneConfig, None, ["method=ia3"])
    assert ia3.target_modules == ["k_proj", "v_proj", "ffn.down"] and ia3.feedforward_modules == ["ffn.down"]
    assert FinetuneConfig(method="prefix").target_modules is None
    assert FinetuneConfig(method="lora", target_modules=["q_proj"]).target_modules == ["q_proj"]


def test_unknown_key_and_bad_values_are_one_line():
    with pytest.raises(ConfigError, match=r"unknown key 'rr' \(did you mean 'r'\?\)"):
        load_config(FinetuneConfig, {"method": "lora", "rr": 4})
    with pytest.raises(ConfigError, match="method: expected one of"):
        load_config(FinetuneConfig, {"method": "qlora"})
    with pytest.raises(ConfigError, match="prefix_length"):
        load_config(FinetuneConfig, {"prefix_length": -1})


def test_adalora_needs_total_step(build):
    with pytest.raises(ConfigError, match="adalora needs total_step"):
        apply_finetune(build(), FinetuneConfig(method="adalora"))


def test_peft_config_errors_become_one_line_config_errors(build):
    cfg = FinetuneConfig(method="ia3", target_modules=["k_proj"], feedforward_modules=["ffn.down"])
    with pytest.raises(ConfigError, match=r"^method=ia3: .*feedforward_modules.*subset") as err:
        apply_finetune(build(), cfg)
    assert "\n" not in str(err.value)


def test_importing_attnlab_finetune_loads_neither_peft_nor_transformers():
    code = ("import attnlab, attnlab.finetune, sys; "
            "assert 'peft' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
