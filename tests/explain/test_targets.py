"""Targets of a classifier: the probability target against softmax(logits) computed directly."""

import pytest
import torch

from attnlab.explain.targets import KINDS_OF, TARGETS, make_target
from attnlab.models import SequenceClassificationHead, SequenceClassifierOutput, create


class Classifier(torch.nn.Module):
    """encoder-tiny with a 3-class linear head on mean pooling."""

    def __init__(self):
        super().__init__()
        self.encoder = create("encoder-tiny", pooler=False, init_std=0.2)
        self.head = SequenceClassificationHead(self.encoder.config.d_model, num_labels=3, pooling="mean")

    def forward(self, input_ids, attention_mask=None):
        h = self.encoder(input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, D)
        return SequenceClassifierOutput(logits=self.head(h, attention_mask))  # (B, 3)


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    model = Classifier().double().eval()
    ids = torch.randint(5, model.encoder.config.vocab_size, (1, 7))  # (1, 7)
    return model, {"input_ids": ids}


def test_prob_is_the_softmax_of_the_logits(classifier):
    model, inputs = classifier
    with torch.no_grad():
        logits = model(**inputs).logits[0]  # (3,)
        probs = torch.exp(logits - logits.max()) / torch.exp(logits - logits.max()).sum()
        pred = int(logits.argmax())
        t = make_target("prob", "classifier", model, inputs)
        assert t.description == f"probability of predicted class {pred}" and t.position == 0
        assert float(t.fn(model(**inputs))) == pytest.approx(float(probs[pred]), abs=1e-12)
        for k in range(3):
            tk = make_target(f"prob:{k}", "classifier", model, inputs)
            assert tk.description == f"probability of class {k}"
            assert float(tk.fn(model(**inputs))) == pytest.approx(float(probs[k]), abs=1e-12)
        # the class is fixed when the target is made: another input's output gives that class's probability
        other = model(input_ids=inputs["input_ids"].flip(-1)).logits[0]
        assert float(t.fn(model(input_ids=inputs["input_ids"].flip(-1)))) == pytest.approx(
            float(other.softmax(-1)[pred]), abs=1e-12)
    assert "prob" in TARGETS and KINDS_OF["prob"] == ("classifier",)


def test_prob_errors(classifier):
    model, inputs = classifier
    with pytest.raises(ValueError, match="3 classes"):
        make_target("prob:3", "classifier", model, inputs)
    with pytest.raises(ValueError, match="integer class"):
        make_target("prob:x", "classifier", model, inputs)
    with pytest.raises(ValueError, match="does not apply"):
        make_target("prob", "encoder", model, inputs)
    with pytest.raises(ValueError, match=r"prob\[:K\]"):
        make_target("probability", "classifier", model, inputs)


def test_the_explained_row_follows_the_classifier_pooling():
    """A [CLS]- or pooler-pooled classifier is read at row 0; a mean-pooled one over all rows; the
    label name shows in the description."""
    import torch

    from attnlab.explain.targets import make_target
    from attnlab.models import create

    inputs = {"input_ids": torch.tensor([[2, 5, 7, 3]])}
    for pooling, row in (("cls", 0), ("pooler", 0), ("mean", "mean")):
        torch.manual_seed(0)
        model = create("classifier-tiny", pooling=pooling, pooler=pooling == "pooler", label_names=["neg", "pos"]).eval()
        t = make_target("logit", "classifier", model, inputs)
        assert t.position == row
        k = int(model(**inputs).logits[0].argmax())
        assert ["neg", "pos"][k] in t.description
