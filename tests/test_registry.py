"""attnlab.registry.Registry, and every registry built on it: a duplicate name raises (naming
both objects), the very same object may be registered again, an unknown name is one line with
the nearest name and the known ones."""

import re

import pytest

from attnlab.config import ConfigError
from attnlab.registry import Registry


def _a():
    pass


def _b():
    pass


# ----------------------------------------------------------------------------- the helper


def test_call_and_decorator_forms_return_the_object():
    reg = Registry("thing")
    assert reg.register("a", _a) is _a

    @reg.register("b")
    def b():
        pass

    assert reg.get("b") is b and reg["a"] is _a
    assert "a" in reg and "c" not in reg and len(reg) == 2


def test_duplicate_name_raises_naming_both_objects():
    reg = Registry("thing")
    reg.register("a", _a)
    with pytest.raises(ValueError, match=r"thing 'a' is already registered \(.*\._a\); cannot register .*\._b") as e:
        reg.register("a", _b)
    assert not isinstance(e.value, ConfigError)  # a programming error, not a bad config
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(_b)
    assert reg.get("a") is _a and len(reg) == 1


def test_the_identical_object_may_be_registered_again():
    reg = Registry("thing")
    reg.register("a", _a)
    reg.register("a", _a)
    reg.register("a")(_a)
    assert reg.get("a") is _a and len(reg) == 1


def test_same_decides_what_counts_as_a_re_registration():
    reg = Registry("thing", same=lambda old, new: old.__name__ == new.__name__)
    first = type("X", (), {})
    second = type("X", (), {})
    reg.register("x", first)
    reg.register("x", second)  # the same name: it replaces the first
    assert reg.get("x") is second
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x", type("Y", (), {}))


def test_unknown_name_is_one_line_with_a_hint_and_the_known_names():
    reg = Registry("thing")
    for name in ("rollout", "chefer", "flow"):
        reg.register(name, object())
    with pytest.raises(ConfigError) as e:
        reg.get("rolout")
    assert str(e.value) == "unknown thing 'rolout' (did you mean 'rollout'?); known: chefer, flow, rollout"
    assert isinstance(e.value, ValueError)
    with pytest.raises(ConfigError, match=r"^unknown thing 'zzz'; known: chefer, flow, rollout$"):
        reg["zzz"]


def test_unknown_with_further_names_and_a_label():
    reg = Registry("kernel", known="known kernels")
    reg.register("math", object())
    err = reg.unknown("atuo", also=("auto",))
    assert str(err) == "unknown kernel 'atuo' (did you mean 'auto'?); known kernels: auto, math"


def test_an_unhashable_name_is_unknown_not_a_type_error():
    reg = Registry("recipe")
    reg.register("dates", object())
    assert ["dates"] not in reg
    with pytest.raises(ConfigError, match=r"unknown recipe \['dates'\] .*; known: dates"):
        reg.get(["dates"])


def test_iteration_follows_registration_and_names_are_sorted():
    reg = Registry("thing")
    objs = {n: object() for n in ("b", "c", "a")}
    for n, o in objs.items():
        reg.register(n, o)
    assert list(reg) == ["b", "c", "a"] and reg.names() == ["a", "b", "c"]
    assert reg.items() == list(objs.items())


def test_unregister():
    reg = Registry("thing")
    reg.register("a", _a)
    assert reg.unregister("a") is _a and "a" not in reg
    reg.register("a", _b)  # free again
    with pytest.raises(ConfigError, match="unknown thing 'b'"):
        reg.unregister("b")


# ----------------------------------------------------------------------------- every registry


def _kernel():
    from attnlab.attention.kernels.base import KERNELS, FunctionKernel, register_kernel

    register_kernel(KERNELS.get("math"))  # the same kernel again: fine
    return KERNELS, "math", lambda: register_kernel(FunctionKernel("math", lambda r: None, lambda r: None))


def _score():
    from attnlab.attention.scores import SCORES, Score, register_score

    class Other(Score):
        pass

    return SCORES, "dot", lambda: register_score("dot")(Other)


def _normalizer():
    from attnlab.attention.normalizers import NORMALIZERS, register_normalizer

    return NORMALIZERS, "softmax", lambda: register_normalizer("softmax")(lambda: None)


def _position():
    from attnlab.attention.positions.base import POSITIONS, PositionalEncoding, register_position

    class Other(PositionalEncoding):
        hooks = frozenset({"bias"})

    register_position("alibi")(POSITIONS.get("alibi"))  # the same class again: fine
    return POSITIONS, "alibi", lambda: register_position("alibi")(Other)


def _norm():
    from attnlab.layers.norm import NORMS, register_norm

    return NORMS, "layernorm", lambda: register_norm("layernorm")(lambda dim, eps: None)


def _activation():
    from attnlab.layers.feedforward import ACTIVATIONS, register_activation

    with pytest.raises(ValueError, match="'swiglu' is already registered"):
        register_activation("swiglu", lambda x: x)
    return ACTIVATIONS, "relu", lambda: register_activation("relu", lambda x: x)


def _pooling():
    from attnlab.models.heads import POOLINGS, register_pooling

    return POOLINGS, "cls", lambda: register_pooling("cls")(lambda hidden, mask=None: hidden[:, -1])


def _preset():
    from attnlab.models.registry import PRESETS, register_model

    return PRESETS, "encoder-tiny", lambda: register_model("encoder-tiny")(lambda: None)


def _family():
    from attnlab.models.registry import FAMILIES, ModelConfig

    def define():
        class NotTheEncoder(ModelConfig):
            family = "encoder"

    return FAMILIES, "encoder", define


def _loader():
    from attnlab.models.hf_bert import load_hf_bert
    from attnlab.models.pretrained import ARCHITECTURE_TYPES, LOADERS, register_loader

    register_loader("bert", load_hf_bert, architectures=("BertModel",))  # the same loader again: fine
    with pytest.raises(ValueError, match="architecture 'BertModel' already means model_type 'bert'"):
        register_loader("other", lambda d, c: None, architectures=("BertModel",))
    assert "other" not in LOADERS and ARCHITECTURE_TYPES["BertModel"] == "bert"
    return LOADERS, "bert", lambda: register_loader("bert", lambda d, c: None)


def _recipe():
    from attnlab.recipes.registry import RECIPES, register_recipe

    class Dates:  # used to overwrite the real recipe silently
        name = "dates"

    class Scratch:
        name = "scratch-recipe"

    register_recipe(Scratch)
    first = RECIPES.get("scratch-recipe")
    register_recipe(Scratch)  # the same class again: a fresh instance replaces the first
    assert type(RECIPES.get("scratch-recipe")) is Scratch and RECIPES.get("scratch-recipe") is not first
    RECIPES.unregister("scratch-recipe")
    return RECIPES, "dates", lambda: register_recipe(Dates)


def _finetune_method():
    from attnlab.finetune.method import METHODS, register_method

    class Other:
        name = "lora"

    return METHODS, "lora", lambda: register_method(Other())


def _explain_method():
    from attnlab.explain.methods import METHODS, register_method

    return METHODS, "rollout", lambda: register_method("rollout")(lambda attns, grads=None: attns)


def _protocol():
    from attnlab.explain.evaluation import PROTOCOLS, Protocol

    return PROTOCOLS, "default", lambda: PROTOCOLS.register("default", Protocol("default", lambda s, r: {}))


def _date_format():
    from attnlab.data.dates import DATE_FORMATS, register

    name = next(iter(DATE_FORMATS))
    return DATE_FORMATS, name, lambda: register(name)(lambda d, r: "")


@pytest.mark.parametrize("setup", [
    _kernel, _score, _normalizer, _position, _norm, _activation, _pooling, _preset, _family, _loader, _recipe,
    _finetune_method, _explain_method, _protocol, _date_format,
], ids=lambda f: f.__name__[1:])
def test_every_registry_rejects_a_second_object_under_a_taken_name(setup):
    registry, name, register_again = setup()
    kind, quoted = re.escape(registry.kind), re.escape(repr(name))
    before = registry.get(name)
    with pytest.raises(ValueError, match=rf"{kind} {quoted} is already registered \(.+\); cannot register"):
        register_again()
    assert registry.get(name) is before
    with pytest.raises(ConfigError, match=rf"^unknown {kind} {re.escape(repr(name + 'x'))}"):
        registry.get(f"{name}x")
