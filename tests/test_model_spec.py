"""The meta file is a typed spec written verbatim (issue 15, item 2): preset -> spec -> meta -> spec is the
identity, meta files written before the specs existed still load (with the defaults they meant), and a
meta file with an unknown key or a value of the wrong type is an error naming the file and the key."""
import dataclasses
import json
import os
import shutil

import mxnet as mx
import pytest

from ssdkit.api.family import family_of
from ssdkit.api.model_files import inference_symbol, model_meta, read_meta, write_meta
from ssdkit.api.model_spec import FPNSpec, SSDSpec, spec_from_meta, spec_to_meta
from ssdkit.config import load_config
from ssdkit.config.ssd_layout import SSDLayout, ssd_layout
from ssdkit.errors import InputError
from ssdkit.symbol.fpn_config import FPNConfig

CLASSES = ("circle", "ring", "box")

OLD_SSD_META = {"network": "tiny", "data_shape": 256, "test_shape": 0, "nms_thresh": 0.45, "nms_topk": 400,
                "force_suppress": False, "class_names": list(CLASSES), "mean": [123.675, 116.28, 103.53],
                "std": [58.395, 57.12, 57.375]}
"""A meta file as train.py wrote it before the specs (no max_detections, portable, score_thresh)."""


@pytest.mark.parametrize("preset", ["tiny_256_synthetic", "lite_256_synthetic", "fpn_resnet18_synthetic",
                                    "fpn_resnet50_coco"])
def test_preset_spec_meta_spec_is_the_identity(preset, tmp_path):
    config = load_config(preset)
    meta = model_meta(config, CLASSES)
    spec = spec_from_meta(meta)
    assert spec_to_meta(spec) == meta
    assert spec_from_meta(json.loads(json.dumps(spec_to_meta(spec)))) == spec
    assert spec.network == config.model.network and spec.class_names == CLASSES
    assert spec.mean == tuple(config.data.mean) and spec.std == tuple(config.data.std)
    if isinstance(spec, FPNSpec):
        assert spec.fpn == config.fpn
        assert (spec.resize_short, spec.resize_long) == (config.model.resize_short, config.model.resize_long)
    else:
        assert (spec.data_shape, spec.test_shape) == (config.model.data_shape, config.model.test_shape)
        assert (spec.nms_thresh, spec.nms_topk, spec.force_suppress) == (
            config.model.nms_thresh, config.model.nms_topk, config.model.force_suppress)
    # through the file: what train.py writes is what read_meta gives back
    prefix = str(tmp_path / "m")
    assert write_meta(prefix, config, CLASSES) == meta == read_meta(prefix)


def test_old_meta_files_load_with_the_defaults_they_meant(tmp_path):
    spec = spec_from_meta(OLD_SSD_META)
    assert isinstance(spec, SSDSpec)
    assert (spec.max_detections, spec.score_thresh, spec.portable, spec.gluoncv_zoo) == (-1, None, False, "")
    assert spec.layout == ssd_layout("tiny", 256)         # the preset the graph was built from
    assert spec_to_meta(spec) == dict(OLD_SSD_META, max_detections=-1, portable=False, gluoncv_zoo="",
                                       int8=False, calib_mode="", calib_images=0, overlap_threshold=0.5,
                                       negative_mining_ratio=3.0, layout=spec_to_meta(spec)["layout"])
    fpn_meta = {"network": "fpn_resnet18", "family": "fpn", "resize_short": 128, "resize_long": 160,
                "image_shape": [192, 192], "class_names": list(CLASSES), "mean": [0, 0, 0], "std": [1, 1, 1],
                "fpn": {"anchor_scales": [8.0], "test_max_detections": 50}}
    fpn = spec_from_meta(fpn_meta)
    assert fpn.fpn == dataclasses.replace(FPNConfig(), test_max_detections=50)
    assert fpn.image_shape == (192, 192) and fpn.mean == (0.0, 0.0, 0.0) and fpn.max_detections is None
    # an old deploy meta (portable, rows)
    deploy = spec_from_meta(dict(OLD_SSD_META, portable=True, max_detections=-1))
    assert deploy.portable is True


@pytest.mark.parametrize("change, message", [
    (dict(anchors=3), "unknown key\\(s\\) anchors for a SSDSpec meta file"),
    (dict(data_shape="256"), "key 'data_shape': expected an integer"),
    (dict(class_names="circle"), "key 'class_names': expected a list"),
    (dict(force_suppress=1), "key 'force_suppress': expected true/false"),
])
def test_bad_meta_files_name_the_file_and_the_key(change, message, tmp_path):
    prefix = str(tmp_path / "bad")
    with open(prefix + "-meta.json", "w") as f:
        json.dump(dict(OLD_SSD_META, **change), f)
    with pytest.raises(InputError, match=message) as err:
        read_meta(prefix)
    assert prefix + "-meta.json" in str(err.value)


def test_unknown_fpn_setting_is_refused():
    meta = {"network": "fpn_resnet18", "resize_short": 128, "resize_long": 160, "image_shape": [192, 192],
            "class_names": ["a"], "fpn": {"no_such_setting": 1}}
    with pytest.raises(ValueError, match="key 'fpn': unknown FPN setting\\(s\\) no_such_setting"):
        spec_from_meta(meta)


@pytest.mark.parametrize("preset", ["lite_256_synthetic", "fpn_resnet18_synthetic"])
def test_meta_files_written_at_528e114_read_as_todays_spec(preset, tmp_path):
    """``tests/data/meta_528e114_<preset>.json``: train.py's meta file of the preset as commit 528e114 wrote it
    (before the layout, matching and mining settings were recorded): it reads back as the spec today's
    train.py writes for the same preset (but the training targets' matching and mining, which those files
    did not record and no inference reads: their defaults), so it rebuilds the same graph."""
    shutil.copy(os.path.join(os.path.dirname(__file__), "data", "meta_528e114_%s.json" % preset),
                str(tmp_path / "old-meta.json"))
    old = read_meta(str(tmp_path / "old"))
    new = model_meta(load_config(preset), CLASSES)
    targets = ("overlap_threshold", "negative_mining_ratio")
    assert {k: v for k, v in old.items() if k not in targets} == {k: v for k, v in new.items() if k not in targets}
    if "layout" in new:
        assert spec_from_meta(old).layout == ssd_layout("lite", 256)
        graphs = []
        for meta in (old, new):
            with mx.name.NameManager():     # auto-generated operator names numbered alike
                graphs.append(inference_symbol(meta).tojson())
        assert graphs[0] == graphs[1]


def test_the_ssd_meta_file_carries_the_layout_its_graph_is_built_from():
    """A model's graph comes from the layout in its meta file, not from today's preset: a changed preset
    does not change trained models."""
    meta = model_meta(load_config("tiny_256_synthetic"), CLASSES)
    layout = dict(meta["layout"], sizes=[[0.2, 0.3]] * 4, variances=[0.1, 0.1, 0.25, 0.25])
    spec = spec_from_meta(dict(meta, layout=layout))
    assert isinstance(spec.layout, SSDLayout) and spec.layout.sizes == ((0.2, 0.3),) * 4
    nodes = json.loads(family_of(meta).inference_symbol(spec_to_meta(spec)).tojson())["nodes"]
    priors = [n["attrs"]["sizes"] for n in nodes if n["op"] == "MultiBoxPrior"]
    assert priors == ["(0.2,0.3)"] * 4
    assert [n["attrs"]["variances"] for n in nodes if n["op"] == "MultiBoxDetection"] == ["(0.1, 0.1, 0.25, 0.25)"]


@pytest.mark.parametrize("layout, message", [
    (dict(sizes=[[0.2]] * 3), "key 'layout': SSD layout 'sizes': has 3 entries for 4 feature layers"),
    (dict(anchor_sizes=[1]), "key 'layout': unknown SSD layout setting\\(s\\) anchor_sizes"),
    (dict(steps="0.1"), "key 'layout': expected a list"),
])
def test_bad_layouts_in_meta_files_name_the_key(layout, message):
    meta = model_meta(load_config("tiny_256_synthetic"), CLASSES)
    with pytest.raises(ValueError, match=message):
        spec_from_meta(dict(meta, layout=dict(meta["layout"], **layout)))


@pytest.mark.parametrize("preset", ["lite_256_synthetic", "tiny_256_synthetic"])
def test_the_graph_rebuilt_from_the_meta_file_is_the_one_training_validated(preset):
    """One path from spec to graph: the inference graph train.py validates with and the one evaluate /
    deploy rebuild from the written meta file are the same graph."""
    config = load_config(preset)
    family = family_of(config)
    _, validated = family.symbols(config, len(CLASSES))
    rebuilt = family.inference_symbol(model_meta(config, CLASSES))
    assert _structure(validated) == _structure(rebuilt)


def _structure(symbol):
    """A graph's nodes without the numbers MXNet appends to unnamed operators (``transpose4``): variables
    by name, operators by type, attributes and inputs."""
    graph = json.loads(symbol.tojson())
    return ([n["name"] if n["op"] == "null" else (n["op"], n.get("attrs"), n["inputs"]) for n in graph["nodes"]],
            graph["heads"])
