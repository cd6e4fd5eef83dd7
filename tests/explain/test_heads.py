"""Head importance (Michel et al. 2019): a trained classifier keeps its accuracy when its least
important heads are masked, loses much more when random heads are, and pruning equals masking."""

import copy

import pytest
import torch
import torch.nn.functional as F

from attnlab.explain import (
    head_importance, head_mask_for, heads_to_prune, prune_heads, prune_order, pruning_curve,
)
from attnlab.models import SequenceClassificationHead, create

VOCAB, L, NB = 16, 10, 3  # NB marker tokens 2..4; background tokens 5..15; id 1 is [CLS]


def _data(n, gen):
    """The label is the set of marker tokens present (NB bits -> 2**NB classes)."""
    ids = torch.randint(2 + NB, VOCAB, (n, L), generator=gen)  # (n, L)
    ids[:, 0] = 1
    bits = torch.randint(0, 2, (n, NB), generator=gen)  # (n, NB)
    pos = torch.argsort(torch.rand(n, L - 1, generator=gen), dim=1)[:, :NB] + 1  # distinct slots
    for j in range(NB):
        on = bits[:, j] == 1
        ids[on, pos[on, j]] = 2 + j
    return ids, (bits * 2 ** torch.arange(NB)).sum(-1)


@pytest.fixture(scope="module")
def trained(one_thread):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    enc = create("encoder-tiny", vocab_size=VOCAB, max_len=L, pooler=False)  # 2 layers, 4 heads, 32 wide
    head = SequenceClassificationHead(32, 2 ** NB, pooling="cls")
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(400):
        ids, y = _data(64, gen)
        loss = F.cross_entropy(head(enc(ids).last_hidden_state), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.eval()
    return enc, head, _data(1000, gen), [_data(128, gen) for _ in range(4)]


def _accuracy(enc, head, data, mask=None):
    ids, y = data
    with torch.no_grad():
        return (head(enc(ids, head_mask=mask).last_hidden_state).argmax(-1) == y).float().mean().item()


def test_least_important_half_costs_far_less_than_random_half(trained):
    enc, head, test, batches = trained

    def loss_fn(model, batch, head_mask):
        ids, y = batch
        return F.cross_entropy(head(model(ids, head_mask=head_mask).last_hidden_state), y)

    imp = head_importance(enc, batches, loss_fn, num_layers=2, num_heads=4)
    assert imp.shape == (2, 4)
    torch.testing.assert_close(imp.norm(dim=-1), torch.ones(2))  # normalised per layer
    full = _accuracy(enc, head, test)
    low = heads_to_prune(prune_order(imp), 4, (2, 4))
    masked = _accuracy(enc, head, test, head_mask_for(low, (2, 4)))
    rand = [_accuracy(enc, head, test, head_mask_for(heads_to_prune(prune_order(imp, "random", s), 4, (2, 4)), (2, 4)))
            for s in range(5)]
    rand_mean = sum(rand) / len(rand)
    msg = (f"accuracy: full {full:.3f}, least-important half masked {masked:.3f}, "
           f"random halves {[round(r, 3) for r in rand]} (mean {rand_mean:.3f})")
    print(msg)
    assert full > 0.95, msg
    assert full - masked < 0.5 * (full - rand_mean) and full - rand_mean > 0.1, msg

    pruned = prune_heads(copy.deepcopy(enc), low)
    assert _accuracy(pruned, head, test) == masked
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in enc.parameters())

    curve = pruning_curve(enc, lambda m, mask: _accuracy(m, head, test, mask), imp, fractions=(0.0, 0.5, 0.9))
    assert [f for f, _ in curve] == [0.0, 0.5, 0.9]
    assert curve[0][1] == full and curve[1][1] == masked


def test_prune_order_and_keep_last():
    imp = torch.tensor([[0.1, 0.9, 0.5], [0.05, 0.2, 0.3]])
    assert prune_order(imp)[:3] == [(1, 0), (0, 0), (1, 1)]
    assert sorted(prune_order(imp, "random", seed=1)) == sorted(prune_order(imp))
    assert prune_order(imp, "random", seed=1) == prune_order(imp, "random", seed=1)
    # The 4 least important would empty layer 1; its last head is kept and (0, 2) taken instead.
    assert heads_to_prune(prune_order(imp), 4, (2, 3)) == {0: [0, 2], 1: [0, 1]}
    assert heads_to_prune(prune_order(imp), 4, (2, 3), keep_last=False) == {0: [0], 1: [0, 1, 2]}
    with pytest.raises(ValueError, match="keeping one per layer"):
        heads_to_prune(prune_order(imp), 5, (2, 3))
    with pytest.raises(ValueError, match="order must be"):
        prune_order(imp, "magnitude")
