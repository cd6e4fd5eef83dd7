"""Every method learns: ten optimizer steps on a toy separable task lower the loss, and the
method's own parameters (not only the head) move."""

import pytest
import torch

from attnlab.finetune import FinetuneConfig, apply_finetune, extra_loss, method_names, on_step


@pytest.mark.parametrize("method", method_names())
def test_ten_steps_lower_the_loss(method, build, toy_task):
    cfg = FinetuneConfig(method=method, total_step=10, prefix_length=4, adapter_size=16)
    model = apply_finetune(build(), cfg)
    head = {n for n, _ in model.named_parameters() if n.startswith("head.")}
    own = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and n not in head}
    assert own, "the method trains nothing of its own"
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    with torch.no_grad():
        start = model(**toy_task).loss.item()
    model.train()
    for step in range(1, 11):
        out = model(**toy_task)
        reg = extra_loss(model)
        (out.loss if reg is None else out.loss + reg).backward()
        opt.step()
        on_step(model, step)
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        end = model(**toy_task).loss.item()
    assert end < 0.9 * start, (start, end)
    params = dict(model.named_parameters())
    assert any(not torch.equal(params[n], before) for n, before in own.items())
