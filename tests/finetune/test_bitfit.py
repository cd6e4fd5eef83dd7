"""BitFit: only the biases (and the modules_to_save) train."""

import torch

from attnlab.finetune import FinetuneConfig, apply_finetune, merge


def test_bitfit_trains_only_biases_and_the_head(build, batch):
    model = apply_finetune(build(), FinetuneConfig(method="bitfit"))
    names = {n for n, _ in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in names if n.endswith(".bias") or n.startswith("head.")}
    assert "encoder.layers.0.self_attn.q_proj.bias" in trainable and "encoder.embeddings.norm.bias" in trainable
    assert "encoder.layers.0.self_attn.q_proj.weight" not in trainable

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(**batch).loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable


def test_bitfit_merge_is_the_model_itself(build, batch):
    model = apply_finetune(build(), FinetuneConfig(method="bitfit"))
    with torch.no_grad():
        expected = model(**batch).logits
    plain = merge(model)
    assert plain is model and all(p.requires_grad for p in plain.parameters())
    with torch.no_grad():
        assert torch.equal(plain(**batch).logits, expected)
