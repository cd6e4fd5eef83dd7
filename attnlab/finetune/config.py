"""The typed config of parameter-efficient fine-tuning: which method, and its settings.

    cfg = load_config(FinetuneConfig, {"method": "lora", "r": 8})
    cfg = load_config(FinetuneConfig, None, ["method=ia3"])   # target_modules filled per method

One flat config holds the settings of every method, as peft's ``adapter_config.json`` does;
a method reads the fields it needs and ignores the rest. ``target_modules`` and
``feedforward_modules`` left at None take the method's defaults when the config is validated,
so a saved config always shows what was applied.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..config import Config

Method = Literal["full", "lora", "adalora", "ia3", "prefix", "adapter", "bitfit"]

# Defaults of target_modules per method (peft's suffix matching: "q_proj" matches
# "encoder.layers.0.self_attn.q_proj").
DEFAULT_TARGETS: dict[str, list[str]] = {
    "lora": ["q_proj", "v_proj"],
    "adalora": ["q_proj", "v_proj"],
    "ia3": ["k_proj", "v_proj", "ffn.down"],  # IA3 paper (Liu et al. 2022): keys, values, FFN
}
DEFAULT_FEEDFORWARD: dict[str, list[str]] = {"ia3": ["ffn.down"]}


class FinetuneConfig(Config):
    """How to fine-tune a model.

    Args:
        method: "full" (every weight), "lora" (Hu et al. 2021), "adalora" (Zhang et al. 2023),
            "ia3" (Liu et al. 2022), "prefix" (Li & Liang 2021), "adapter" (Houlsby et al. 2019)
            or "bitfit" (Ben Zaken et al. 2022).
        r: LoRA rank.
        alpha: LoRA/AdaLoRA scaling numerator: the update is ``(alpha / r) B A x``.
        dropout: LoRA/AdaLoRA dropout on the adapter's input.
        target_modules: names of the ``nn.Linear`` modules that LoRA, AdaLoRA and IA³ adapt,
            matched as peft does (the full name or its last dotted parts, e.g. ``"q_proj"``,
            ``"ffn.down"``). None: ``["q_proj", "v_proj"]`` for lora/adalora,
            ``["k_proj", "v_proj", "ffn.down"]`` for ia3.
        feedforward_modules: the IA³ targets scaled on their input rather than their output
            (a subset of ``target_modules``). None: ``["ffn.down"]`` for ia3.
        init_r: AdaLoRA's initial rank of every adapted matrix.
        target_r: AdaLoRA's average rank once the budget is spent.
        tinit: AdaLoRA steps of warm-up before ranks are pruned.
        tfinal: AdaLoRA steps at the end with the final ranks fixed.
        deltaT: AdaLoRA steps between two budget allocations.
        total_step: AdaLoRA's total training steps; the schedule needs it, so the trainer fills
            it in before the method is applied (None until then).
        orth_reg_weight: weight of AdaLoRA's orthogonality regulariser
            (see :meth:`attnlab.finetune.peft_methods.PeftMethod.extra_loss`).
        prefix_length: P, the learned key/value positions prefix tuning adds to every attention
            layer (0 leaves the model unchanged).
        adapter_size: the bottleneck width of Houlsby adapters.
        modules_to_save: names of the modules trained in full and saved with the adapter (the
            task head), matched like ``target_modules``; the base model is never hard-coded.
    """

    method: Method = "full"
    r: int = Field(8, ge=1)
    alpha: float = 16
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    target_modules: list[str] | None = None
    feedforward_modules: list[str] | None = None
    init_r: int = Field(12, ge=1)
    target_r: int = Field(8, ge=1)
    tinit: int = Field(0, ge=0)
    tfinal: int = Field(0, ge=0)
    deltaT: int = Field(1, ge=1)
    total_step: int | None = Field(None, ge=1)
    orth_reg_weight: float = Field(0.5, ge=0.0)
    prefix_length: int = Field(16, ge=0)
    adapter_size: int = Field(64, ge=1)
    modules_to_save: list[str] = ["head"]

    @model_validator(mode="after")
    def _method_defaults(self) -> "FinetuneConfig":
        if self.target_modules is None and self.method in DEFAULT_TARGETS:
            self.target_modules = list(DEFAULT_TARGETS[self.method])
        if self.feedforward_modules is None and self.method in DEFAULT_FEEDFORWARD:
            self.feedforward_modules = list(DEFAULT_FEEDFORWARD[self.method])
        return self


__all__ = ["FinetuneConfig", "Method", "DEFAULT_TARGETS", "DEFAULT_FEEDFORWARD"]
