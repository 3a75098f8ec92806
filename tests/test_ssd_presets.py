"""SSD network presets: the values and graphs the data files give equal the ones of the if/elif chain they
replaced (``tests/data/ssd_presets_before.json``: ``get_config`` outputs and the sha256 of the training and
inference graphs' JSON, written by that chain -- symbol_factory, symbol_builder and common as at 528e114 --
for every preset network at the sizes its branches tell apart)."""
import dataclasses
import hashlib
import inspect
import json
import os

import mxnet as mx
import pytest

from ssdkit.boxes import VARIANCES
from ssdkit.config import ssd_layout as ssd_layout_module
from ssdkit.config.ssd_layout import NETWORK_DIR, SSDLayout, ssd_layout
from ssdkit.symbol import symbol_builder, symbol_factory

SNAPSHOT = os.path.join(os.path.dirname(__file__), "data", "ssd_presets_before.json")
ROWS = json.load(open(SNAPSHOT))


def _graph_sha256(build, network, data_shape):
    with mx.name.NameManager():     # auto-named operators (transpose0, ...) numbered from 0 as in the snapshot
        return hashlib.sha256(build(network, data_shape, 20).tojson().encode()).hexdigest()


def test_snapshot_covers_every_preset_network():
    assert {r["network"] for r in ROWS} == {"vgg16_reduced", "resnet18", "resnet34", "resnet50", "resnet101",
                                            "mobilenet", "tiny", "lite", "small"}


@pytest.mark.parametrize("row", ROWS, ids=["%s@%d" % (r["network"], r["data_shape"]) for r in ROWS])
def test_get_config_returns_the_values_of_the_old_chain(row):
    config = symbol_factory.get_config(row["network"], row["data_shape"])
    # equal values; the chain's ints among floats (ratios 1, 2, normalisation 20) are floats now, as the
    # layout's types say (the graphs format every value as a float: they stay bit-identical, see below)
    assert config == row["config"]
    assert sorted(config) == sorted(row["config"])


@pytest.mark.parametrize("row", ROWS, ids=["%s@%d" % (r["network"], r["data_shape"]) for r in ROWS])
def test_graphs_are_bit_identical_to_the_old_chain(row):
    assert _graph_sha256(symbol_factory.get_symbol_train, row["network"], row["data_shape"]) == row["train_sha256"]
    assert _graph_sha256(symbol_factory.get_symbol, row["network"], row["data_shape"]) == row["inference_sha256"]


def test_get_config_kwargs_override_the_preset():
    config = symbol_factory.get_config("lite", 256, sizes=[[.1, .2]] * 4, fused_heads=False)
    assert config["sizes"] == [[.1, .2]] * 4 and config["fused_heads"] is False
    assert symbol_factory.get_config("lite", 256)["fused_heads"] is True     # a new dict each call


def test_unknown_network_names_the_presets():
    with pytest.raises(ValueError, match="no SSD preset for network 'nope'.*lite"):
        symbol_factory.get_config("nope", 256)


def test_layout_defaults_are_the_builders_defaults():
    """One default per setting: a layout field left at its default is left out of ``get_config`` and the
    builders' default applies, so both must be the same value."""
    builder = inspect.signature(symbol_builder.get_symbol_train).parameters
    for f in dataclasses.fields(SSDLayout):
        if f.name in ("normalizations", "steps", "transition_ratio", "extra_bn", "fused_heads", "variances"):
            assert builder[f.name].default == f.default or (f.name, builder[f.name].default) in (
                ("normalizations", -1), ("steps", ())), f.name
    assert inspect.signature(symbol_builder.get_symbol).parameters["variances"].default == VARIANCES


@pytest.mark.parametrize("row", ROWS[::3], ids=["%s@%d" % (r["network"], r["data_shape"]) for r in ROWS[::3]])
def test_builder_kwargs_and_layout_round_trip(row):
    layout = ssd_layout(row["network"], row["data_shape"])
    assert SSDLayout.from_builder_kwargs(layout.builder_kwargs()) == layout
    assert SSDLayout.from_builder_kwargs(row["config"]) == layout


def test_layout_variances_reach_both_box_coding_operators():
    variances = (0.1, 0.1, 0.25, 0.25)
    kwargs = dataclasses.replace(ssd_layout("tiny", 64), variances=variances).builder_kwargs()
    assert kwargs["variances"] == list(variances)
    attrs = json.loads(symbol_builder.get_symbol_train(num_classes=3, **kwargs).tojson())["nodes"]
    found = {n["op"]: n["attrs"]["variances"] for n in attrs if n["op"] in ("MultiBoxTarget", "MultiBoxDetection")}
    assert found == {"MultiBoxTarget": "(0.1, 0.1, 0.25, 0.25)", "MultiBoxDetection": "(0.1, 0.1, 0.25, 0.25)"}
    assert "variances" not in symbol_factory.get_config("tiny", 64)        # the default is not repeated


def test_variants_apply_by_input_size():
    assert len(ssd_layout("vgg16_reduced", 300).steps) == 6 and ssd_layout("vgg16_reduced", 300).steps[-1] == 1.0
    assert ssd_layout("vgg16_reduced", 320).steps == () and len(ssd_layout("vgg16_reduced", 320).from_layers) == 6
    assert len(ssd_layout("vgg16_reduced", 448).from_layers) == 7 and ssd_layout("vgg16_reduced", 448).steps == ()
    assert ssd_layout("vgg16_reduced", 512).steps[0] == 8 / 512.0
    assert ssd_layout("mobilenet", 512).sizes[0] == (51.2 / 512, (51.2 / 512 * 102.4 / 512) ** 0.5)


def test_a_bad_network_file_names_the_file_and_the_key(tmp_path, monkeypatch):
    (tmp_path / "mine.toml").write_text(open(os.path.join(NETWORK_DIR, "tiny.toml")).read() + "anchor_sizes = [1]\n")
    (tmp_path / "short.toml").write_text(open(os.path.join(NETWORK_DIR, "tiny.toml")).read().replace(
        "strides = [-1, -1, 2, 2]", "strides = [-1, 2, 2]"))
    monkeypatch.setattr(ssd_layout_module, "NETWORK_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"mine.toml: unknown key\(s\) anchor_sizes"):
        ssd_layout("mine", 64)
    with pytest.raises(ValueError, match="short.toml: SSD layout 'strides': has 3 entries for 4 feature layers"):
        ssd_layout("short", 64)
    with pytest.raises(ValueError, match="no SSD preset for network 'tiny'; presets: mine, short"):
        ssd_layout("tiny", 64)
