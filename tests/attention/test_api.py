"""attend(): validation errors name the argument and shapes; auto picks a kernel visibly."""

import pytest
import torch

from attnlab.attention import AttentionInputError, attend, masks


def _qkv(H=4, hkv=2, Lq=5, Lk=6, D=8):
    return torch.randn(2, H, Lq, D), torch.randn(2, hkv, Lk, D), torch.randn(2, hkv, Lk, D)


@pytest.mark.parametrize("make, match", [
    (lambda q, k, v: (q, k[:, :1].expand(2, 3, 6, 8), v[:, :1].expand(2, 3, 6, 8)), r"4 heads.*not a multiple of the 3 KV heads"),
    (lambda q, k, v: (q[0], k, v), r"q must be 4-D.*\(4, 5, 8\)"),
    (lambda q, k, v: (q, k[..., :4], v), r"head dims differ: q \(2, 4, 5, 8\), k \(2, 2, 6, 4\)"),
    (lambda q, k, v: (q, k, v[:, :, :3]), r"k and v lengths differ"),
    (lambda q, k, v: (q, k, v[:, :1]), r"same number of heads"),
    (lambda q, k, v: (q, k[:1], v[:1]), r"batch sizes differ"),
    (lambda q, k, v: (q.double(), k, v), r"dtypes differ"),
])
def test_shape_errors(make, match):
    with pytest.raises(AttentionInputError, match=match):
        attend(*make(*_qkv()))


def test_non_bool_mask_is_rejected_with_a_hint():
    q, k, v = _qkv()
    with pytest.raises(AttentionInputError, match=r"mask must be a bool tensor.*got torch.float32.*bias="):
        attend(q, k, v, mask=torch.ones(5, 6))


def test_mask_that_does_not_broadcast_names_both_shapes():
    q, k, v = _qkv()
    with pytest.raises(AttentionInputError, match=r"mask of shape \(5, 7\) does not broadcast to \(B, H, Lq, Lk\) = \(2, 4, 5, 6\)"):
        attend(q, k, v, mask=torch.ones(5, 7, dtype=torch.bool))


def test_unknown_kernel_lists_the_known_ones():
    with pytest.raises(AttentionInputError, match=r"unknown kernel 'fast'.*chunked.*math.*sdpa"):
        attend(*_qkv(), kernel="fast")


@pytest.mark.parametrize("kernel, kw, match", [
    ("sdpa", dict(return_weights=True), "sdpa cannot return attention weights"),
    ("sdpa", dict(mask_mod=masks.sliding_window(1)), "sdpa cannot run score_mod/mask_mod"),
    ("sdpa", dict(mask_mod=masks.causal(), bias=torch.zeros(5, 6)), "sdpa cannot run score_mod/mask_mod"),
    ("flex", dict(return_weights=True), "flex cannot return attention weights"),
])
def test_kernel_that_cannot_honour_the_request(kernel, kw, match):
    with pytest.raises(AttentionInputError, match=f"kernel='{kernel}' cannot serve this request: {match}"):
        attend(*_qkv(), kernel=kernel, **kw)


def test_flex_refuses_backward_on_cpu():
    q, k, v = (t.requires_grad_() for t in _qkv())
    with pytest.raises(AttentionInputError, match="no backward pass on CPU"):
        attend(q, k, v, kernel="flex")


@pytest.mark.parametrize("kw, expected", [
    (dict(), "sdpa"),
    (dict(mask=torch.ones(6, 6, dtype=torch.bool)), "sdpa"),
    (dict(mask_mod=masks.causal()), "sdpa"),  # plain causal runs as SDPA's is_causal
    (dict(mask_mod=masks.causal(offset=1)), "chunked"),
    (dict(mask_mod=masks.sliding_window(2)), "chunked"),
    (dict(score_mod=lambda s, b, h, qi, ki: s), "chunked"),
    (dict(return_weights=True), "chunked"),
])
def test_auto_choice_is_visible(kw, expected):
    res = attend(*_qkv(Lq=6, Lk=6), **kw)
    assert res.kernel == expected
    assert (res.weights is not None) == kw.get("return_weights", False)


def test_bad_dropout_and_scale():
    with pytest.raises(AttentionInputError, match=r"dropout_p must be in \[0, 1\), got 1.5"):
        attend(*_qkv(), dropout_p=1.5)
    with pytest.raises(AttentionInputError, match="scale must be a number"):
        attend(*_qkv(), scale="big")
