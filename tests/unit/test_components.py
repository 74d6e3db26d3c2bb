"""The component vocabulary: parsing every accepted form, the one label, range checks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from interp import components as C
from interp.components import MLP, Attn, ComponentRangeError, Embed, Head, KVHead, Logits

EVERY_KIND = [Head(3, 2), KVHead(3, 1), Attn(3), MLP(3), Embed(), Logits()]


@pytest.mark.parametrize("c", EVERY_KIND, ids=C.label)
def test_round_trip_every_kind(c):
    text = C.label(c)
    assert C.parse(text) == c
    assert C.parse(text.lower()) == c and C.parse(text.upper()) == c
    assert C.parse(f"  {text}\t") == c
    assert C.parse(c) is c


@given(st.integers(0, 300), st.integers(0, 300))
def test_round_trip_property(layer, head):
    for c in (Head(layer, head), KVHead(layer, head), Attn(layer), MLP(layer)):
        assert C.parse(C.label(c)) == c


def test_labels_are_the_documented_forms():
    assert [C.label(c) for c in EVERY_KIND] == ["L3H2", "L3KV1", "ATTN3", "MLP3", "embed", "logits"]


def test_user_forms():
    assert C.parse("l3h2") == Head(3, 2)
    assert C.parse((3, 2)) == Head(3, 2) and C.parse([3, 2]) == Head(3, 2)
    assert C.parse((torch.tensor(3), torch.tensor(2))) == Head(3, 2)
    assert C.parse("mlp3") == MLP(3) and C.parse("attn3") == Attn(3) and C.parse("Attn3") == Attn(3)
    assert C.parse("l3kv1") == KVHead(3, 1)
    assert C.parse("input") == Embed() and C.parse("EMBED") == Embed()
    assert C.parse("Logits") == Logits()


@pytest.mark.parametrize("bad", ["X7", "head7", "", "L3", "H2", "KV1", "L3H", "MLP", "3,2",
                                 (3,), (3, 2, 1), ("a", 2), (True, 2), 3.5, None, "L-1H2"])
def test_bad_forms_name_the_accepted_forms(bad):
    with pytest.raises(ValueError, match="cannot read component") as e:
        C.parse(bad)
    assert "L3H2" in str(e.value) and "MLP3" in str(e.value) and "logits" in str(e.value)
    assert not isinstance(e.value, IndexError)  # a form error, not a range error


@pytest.mark.parametrize("text,fix", [("L3.H2", "L3H2"), ("L3_H2", "L3H2"), ("l3 h2", "L3H2"),
                                      ("L3.KV1", "L3KV1")])
def test_separators_are_refused_with_the_fix(text, fix):
    with pytest.raises(ValueError, match=repr(fix)):
        C.parse(text)


def test_kv_and_head_need_a_layer():
    with pytest.raises(ValueError, match="'L0KV1'"):
        C.parse("KV1")
    with pytest.raises(ValueError, match="needs its layer"):
        C.parse("h2")


def test_ranges():
    sizes = dict(n_layers=4, n_heads=4, n_kv_heads=2)
    assert C.parse("L3H3", **sizes) == Head(3, 3)
    with pytest.raises(ComponentRangeError) as e:
        C.parse("L0H99", **sizes)
    assert str(e.value) == "head L0H99 out of range: layer 0 has 4 heads (H0..H3)."
    with pytest.raises(IndexError, match=r"L9H0 out of range: layer 9 does not exist, the model "
                                         r"has 4 layers \(L0..L3\)"):
        C.parse("L9H0", **sizes)
    with pytest.raises(ValueError, match=r"key/value head L1KV2 out of range: layer 1 has 2 "
                                         r"key/value heads \(KV0..KV1\)"):
        C.parse("L1KV2", **sizes)
    assert C.parse("L1KV1", **sizes) == KVHead(1, 1)
    with pytest.raises(ComponentRangeError, match="MLP4 out of range"):
        C.parse("MLP4", **sizes)
    with pytest.raises(ComponentRangeError, match="ATTN7"):
        C.parse(Attn(7), **sizes)
    assert C.parse("embed", **sizes) == Embed() and C.parse("logits", **sizes) == Logits()
    # without sizes, anything well-formed is accepted
    assert C.parse("L99H99") == Head(99, 99)
    # key/value heads default to the query-head count when n_kv_heads is not given
    with pytest.raises(ComponentRangeError):
        C.parse("L0KV4", n_layers=1, n_heads=4)


def test_parse_many():
    assert C.parse_many("L0H1, MLP2,,attn1") == [Head(0, 1), MLP(2), Attn(1)]
    assert C.parse_many((3, 2)) == [Head(3, 2)]  # one (layer, head) pair
    assert C.parse_many([(3, 2), "L3H2", Head(0, 0)]) == [Head(3, 2), Head(0, 0)]
    assert C.parse_many([(3, 2), "L3H2"], unique=False) == [Head(3, 2), Head(3, 2)]
    assert C.parse_many(Head(1, 1)) == [Head(1, 1)]
    assert C.parse_many([]) == []
    with pytest.raises(ValueError, match="cannot read components"):
        C.parse_many(5)
    with pytest.raises(ComponentRangeError):
        C.parse_many(["L0H1", "L0H9"], n_layers=2, n_heads=4)
    with pytest.raises(ValueError, match="MLP2 is not one"):
        C.heads_only(C.parse_many("L0H1,MLP2"), "faithfulness")


def test_axis_labels():
    assert C.layer_labels(3) == ["L0", "L1", "L2"]
    assert C.head_axis_labels(2) == ["H0", "H1"] and C.head_axis_labels(2, kv=True) == ["KV0", "KV1"]
    assert C.head_labels(2, 2) == ["L0H0", "L0H1", "L1H0", "L1H1"]
    assert C.head_labels(1, 2, kv=True) == ["L0KV0", "L0KV1"]
    assert C.mlp_labels(2) == ["MLP0", "MLP1"] and C.attn_labels(1) == ["ATTN0"]
    assert C.pos_labels(["a", " b"]) == ["0:a", "1: b"] and C.pos_labels(2) == ["0", "1"]
    assert [C.parse(x) for x in C.head_labels(3, 4)] == [Head(a, b) for a in range(3) for b in range(4)]
    assert C.depth(MLP(1), 3) == 1.5 and C.depth(MLP(1), 3, parallel_attn_mlp=True) == 1
    assert C.depth(Embed(), 3) < C.depth(Head(0, 0), 3) < C.depth(Logits(), 3)


def test_label_rejects_non_components():
    with pytest.raises(TypeError, match="not a component"):
        C.label("L3H2")


def test_module_imports_alone_without_torch():
    code = "import sys, interp.components; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
