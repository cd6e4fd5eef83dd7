"""IA³ and AdaLoRA through peft: forward and backward, merging IA³, AdaLoRA's rank allocation
(update_and_allocate) and its orthogonality regulariser against peft's own forward."""

import torch

from attnlab.finetune import (
    FinetuneConfig, apply_finetune, extra_loss, load_adapter, merge, method_of, on_step, save_adapter,
)
from attnlab.finetune.method import applied

ADALORA = FinetuneConfig(method="adalora", init_r=12, target_r=8, total_step=10, dropout=0.0)


def test_ia3_forward_backward_and_merge(build, batch):
    model = apply_finetune(build(), FinetuneConfig(method="ia3"))
    vectors = {n: p for n, p in model.named_parameters() if "ia3_l" in n}
    assert len(vectors) == 2 * 3  # k_proj, v_proj, ffn.down in each layer
    assert vectors["encoder.layers.0.ffn.down.ia3_l.default"].shape == (1, 64)  # feed-forward: input side
    assert vectors["encoder.layers.0.self_attn.k_proj.ia3_l.default"].shape == (32, 1)  # output side
    model(**batch).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vectors.values())

    with torch.no_grad():  # away from the identity (IA³ starts at ones)
        for p in vectors.values():
            p.add_(0.3 * torch.randn_like(p))
        unmerged = model(**batch).logits
    merged = merge(model)
    with torch.no_grad():
        assert (merged(**batch).logits - unmerged).abs().max() < 1e-5
    assert list(merged.state_dict()) == list(build().state_dict())


def test_adalora_forward_backward_and_rank_allocation(build, batch):
    model = apply_finetune(build(), ADALORA)
    E = [p for n, p in model.named_parameters() if ".lora_E." in n]  # (init_r, 1) each
    assert len(E) == 4 and all(e.shape == (12, 1) for e in E)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(**batch).loss + extra_loss(model)
    loss.backward()
    opt.step()
    assert sum(int(e.count_nonzero()) for e in E) == 48  # E starts at zero; one step moves it all
    on_step(model, 1)  # update_and_allocate: budget int(16 * 0.9**3 + 32) = 43 of 48
    pattern = applied(model).handle.peft_config["default"].rank_pattern
    assert pattern is not None and len(pattern) == 4
    assert sum(int(e.count_nonzero()) for e in E) == 43
    opt.zero_grad()


def test_adalora_extra_loss_is_peft_forwards_regulariser(build, batch):
    model = apply_finetune(build(), ADALORA)
    tuner = applied(model).handle
    with torch.no_grad():
        plain = model(**batch).loss
        with_reg = tuner(**batch).loss  # AdaLoraModel.forward adds orth_reg_weight * regulariser
    reg = extra_loss(model)
    assert reg.requires_grad and reg > 0
    torch.testing.assert_close(plain + reg.detach(), with_reg)
    assert method_of(model).extra_loss(model) is not None
    assert extra_loss(apply_finetune(build(), FinetuneConfig(method="lora"))) is None


def test_adalora_after_allocation_saves_reloads_and_merges(build, batch, tmp_path):
    model = apply_finetune(build(), ADALORA)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(1, 4):
        (model(**batch).loss + extra_loss(model)).backward()
        opt.step()
        on_step(model, step)
        opt.zero_grad()
    assert applied(model).handle.peft_config["default"].rank_pattern  # ranks were pruned
    save_adapter(model, tmp_path, ADALORA, base="encoder-tiny")
    with torch.no_grad():
        expected = model(**batch).logits
        assert torch.equal(load_adapter(build(), tmp_path)(**batch).logits, expected)
        assert (merge(model)(**batch).logits - expected).abs().max() < 1e-5
