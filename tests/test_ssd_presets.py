"""SSD network presets: the values and graphs the data files give equal the ones of the if/elif chain they
replaced (``tests/data/ssd_presets_before.json``: ``get_config`` outputs and the sha256 of the training and
inference graphs' JSON, written by that chain at commit 528e114 for every preset network at the sizes its
branches tell apart)."""
import hashlib
import json
import os

import mxnet as mx
import pytest

from ssdkit.symbol import symbol_factory

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
    assert config == row["config"]
    # as text: JSON writes 1 and 1.0 apart, so this also compares the number types
    assert json.dumps(config, sort_keys=True) == json.dumps(row["config"], sort_keys=True)


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
