"""Parameter-efficient fine-tuning of attnlab models: LoRA, AdaLoRA and IA³ (through peft),
prefix tuning, bottleneck adapters, BitFit, and full fine-tuning as the baseline.

    from attnlab.finetune import FinetuneConfig, apply_finetune, save_adapter, load_adapter, merge
    model = apply_finetune(classifier, FinetuneConfig(method="lora", r=8))   # head stays trainable
    trainable_summary(model)                  # {"trainable": ..., "total": ..., "share": ...}
    save_adapter(model, "runs/lora", cfg, base="path/to/all-MiniLM-L6-v2")
    model = load_adapter(fresh_classifier, "runs/lora")
    plain = merge(model)                      # LoRA/IA³ folded into the Linear weights

Each method is one small object of the same shape (:class:`FinetuneMethod`), registered by name;
the task head is never hard-coded: ``modules_to_save`` names it (default ``["head"]``).
``peft`` is imported only when a peft method is applied.
"""

from .config import FinetuneConfig
from .method import FinetuneMethod, get_method, method_names, register_method
from . import adapters, bitfit, full, peft_methods, prefix  # noqa: F401 - register the methods
from .apply import apply_finetune, extra_loss, merge, method_of, on_step, trainable_summary
from .checkpoint import ADAPTER_CONFIG, ADAPTER_WEIGHTS, load_adapter, read_adapter_config, save_adapter

__all__ = [
    "FinetuneConfig", "FinetuneMethod", "get_method", "method_names", "register_method",
    "apply_finetune", "method_of", "on_step", "extra_loss", "trainable_summary", "merge",
    "save_adapter", "load_adapter", "read_adapter_config", "ADAPTER_WEIGHTS", "ADAPTER_CONFIG",
]
