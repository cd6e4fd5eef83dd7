"""LoRA (r=8 on q, v) plus a 2-class head on the real all-MiniLM-L6-v2 checkpoint: how much
trains, how small the adapter file is next to the full checkpoint, and an exact reload."""

import pytest
import torch

from attnlab.finetune import (
    ADAPTER_WEIGHTS, FinetuneConfig, apply_finetune, load_adapter, save_adapter, trainable_summary,
)
from attnlab.models import load_pretrained

LORA = FinetuneConfig(method="lora", r=8, alpha=16, target_modules=["q_proj", "v_proj"])


@pytest.fixture
def classifier(minilm_dir):
    """``classifier(seed)``: MiniLM as ``encoder`` plus a fresh 2-class head, in eval mode."""
    from torch import nn

    from attnlab.models import SequenceClassificationHead

    class Classifier(nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder
            self.head = SequenceClassificationHead(encoder.config.d_model, 2, pooling="mean")

        def forward(self, input_ids, attention_mask=None):
            h = self.encoder(input_ids, attention_mask=attention_mask).last_hidden_state
            return self.head(h, attention_mask)  # (B, 2)

    def make(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return Classifier(load_pretrained(minilm_dir)).eval()

    return make


def _inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (2, 12), generator=g)  # (B, L)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_lora_share_on_minilm_is_at_most_one_percent(classifier):
    model = apply_finetune(classifier(), LORA)
    s = trainable_summary(model)
    # 6 layers x (q, v) x r (384 + 384), plus the head's 384 x 2 + 2
    assert s["trainable"] == 6 * 2 * 8 * (384 + 384) + 384 * 2 + 2
    assert s["share"] <= 0.01, s


def test_minilm_adapter_is_small_and_reloads_exactly(classifier, tmp_path):
    model = apply_finetune(classifier(), LORA)
    with torch.no_grad():  # stand-in for training: B and the head away from their init
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
        expected = model(**_inputs())
    save_adapter(model, tmp_path / "adapter", LORA, base="sentence-transformers/all-MiniLM-L6-v2")
    base = classifier(seed=1)  # another head init: the adapter file must bring the head
    base.encoder.save_pretrained(tmp_path / "full")
    adapter_size = (tmp_path / "adapter" / ADAPTER_WEIGHTS).stat().st_size
    full_size = (tmp_path / "full" / "model.safetensors").stat().st_size
    assert adapter_size < 0.02 * full_size, (adapter_size, full_size)

    reloaded = load_adapter(base, tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(reloaded(**_inputs()), expected)
