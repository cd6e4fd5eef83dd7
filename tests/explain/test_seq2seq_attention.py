"""The pipeline's seq2seq attention methods on a tiny encoder-decoder: attention × gradient takes
the registry's default (the positive part), as on the encoder path."""

import torch
import torch.nn.functional as F

from attnlab.explain import capture
from attnlab.explain.methods import METHODS, attention_x_gradient
from attnlab.explain.pipeline import _seq2seq_attention
from attnlab.models import create


def test_seq2seq_attn_x_grad_is_the_positive_part_like_the_encoder_path():
    torch.manual_seed(0)
    model = create("encoder-decoder-tiny").double().eval()
    src = torch.randint(4, 100, (1, 7))  # (1, S)
    out = torch.randint(4, 100, (1, 5))  # (1, T)
    inputs = {"input_ids": src, "attention_mask": torch.ones_like(src), "decoder_input_ids": out}
    y = torch.randint(4, 100, (5,))

    def logprob(o):  # the whole output's log-probability, as the pipeline's logprob target
        return F.log_softmax(o.logits[0], -1)[torch.arange(5), y].sum()

    cap = capture(model, inputs, target=logprob)
    cross, grads = cap.maps("cross"), cap.grads("cross")  # layers x (H, T, S)
    signed = attention_x_gradient(cross, grads)  # (T, S)
    assert bool((signed < 0).any())  # the case where the default matters
    for position in ("mean", 0, 3):
        got = _seq2seq_attention("attn_x_grad", cap, position)
        R = METHODS["attn_x_grad"](cross, grads)  # (T, S): the registry's default, positive=True
        want = R.mean(0) if position == "mean" else R[position]
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert bool((got >= 0).all())
