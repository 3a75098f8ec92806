"""Layering and single definitions (issue 15, item 5): the numpy layers import without MXNet or the
compiled operators, which load on first use; config/ and symbol/ do not import dataset/; the NMS default
and the ImageNet normalisation are defined once."""
import ast
import dataclasses
import inspect
import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_numpy_layers_import_without_the_operator_library():
    out = _python("""
        import sys
        import ssdkit, ssdkit.boxes, ssdkit.anchors, ssdkit.config, ssdkit.normalization
        import ssdkit.config.ssd_layout, ssdkit.api.model_spec, ssdkit.detection_defaults
        ssdkit.config.ssd_layout.ssd_layout("vgg16_reduced", 300)       # the SSD network presets are data
        import ssdkit.reference.multibox_target, ssdkit.reference.multibox_detection, ssdkit.reference.nms
        import ssdkit.reference.rpn_target, ssdkit.reference.rpn_anchors, ssdkit.reference.proposal_target
        import ssdkit.reference.rcnn_detection, ssdkit.reference.fpn_proposal
        loaded = sorted(m for m in sys.modules if m in ("mxnet", "ssdkit.ops") or m.startswith("ssdkit.dataset"))
        print(loaded)
    """)
    assert out == "[]"


def test_the_operators_load_on_first_use():
    out = _python("""
        import mxnet as mx
        import ssdkit
        before = hasattr(mx.sym, "MultiBoxDetection")
        from ssdkit.symbol.symbol_factory import get_symbol   # a graph builder: loads the library
        sym = get_symbol("tiny", 64, num_classes=2)
        print(before, hasattr(mx.nd, "MultiBoxPrior"), sym.list_outputs())
    """)
    assert out == "False True ['detection_output']"


def _imports(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_config_and_symbol_do_not_import_dataset():
    offenders = []
    for folder in ("config", "symbol"):
        for name in sorted(os.listdir(os.path.join(REPO, folder))):
            if name.endswith(".py"):
                path = os.path.join(REPO, folder, name)
                offenders += ["%s/%s: %s" % (folder, name, m) for m in _imports(path)
                              if m.startswith("ssdkit.dataset")]
    assert offenders == []


def test_importing_config_and_symbol_loads_no_dataset_module():
    """The same rule at run time: every module of config/ and symbol/ imported, and a graph built from a
    network preset, in a fresh interpreter: no ``ssdkit.dataset`` module is loaded."""
    modules = ["ssdkit.%s.%s" % (folder, name[:-3]) for folder in ("config", "symbol")
               for name in sorted(os.listdir(os.path.join(REPO, folder))) if name.endswith(".py")]
    out = _python("""
        import importlib, sys
        for name in %r:
            importlib.import_module(name)
        from ssdkit.symbol.symbol_factory import get_symbol_train
        get_symbol_train("lite", 256, num_classes=3)
        print(sorted(m for m in sys.modules if m.startswith("ssdkit.dataset")), len(%r))
    """ % (modules, modules))
    assert out == "[] %d" % len(modules) and len(modules) > 10


def test_nms_default_is_defined_once():
    from ssdkit.config import ModelConfig
    from ssdkit.detection_defaults import NMS_THRESH, NMS_TOPK
    from ssdkit.symbol import symbol_builder
    from ssdkit.weights import zoo_config

    assert (NMS_THRESH, NMS_TOPK) == (0.45, 400)
    assert (ModelConfig().nms_thresh, ModelConfig().nms_topk) == (NMS_THRESH, NMS_TOPK)
    for builder in (symbol_builder.get_symbol, symbol_builder.get_symbol_train):
        params = inspect.signature(builder).parameters
        assert (params["nms_thresh"].default, params["nms_topk"].default) == (NMS_THRESH, NMS_TOPK)
    config = zoo_config("ssd_512_resnet50_v1_voc")
    assert (config["nms_thresh"], config["nms_topk"]) == (NMS_THRESH, NMS_TOPK)


def test_target_and_box_coding_defaults_are_defined_once():
    """Matching / mining defaults (config, spec, training builder) and the box-coding variances (layout,
    builders) each come from one constant."""
    from ssdkit.api.model_spec import SSDSpec
    from ssdkit.boxes import VARIANCES
    from ssdkit.config import ModelConfig
    from ssdkit.config.ssd_layout import SSDLayout
    from ssdkit.detection_defaults import NEGATIVE_MINING_RATIO, OVERLAP_THRESHOLD
    from ssdkit.symbol import symbol_builder

    train = inspect.signature(symbol_builder.get_symbol_train).parameters
    spec = SSDSpec(network="tiny", data_shape=64, class_names=("a",))
    for source in (ModelConfig(), spec):
        assert (source.overlap_threshold, source.negative_mining_ratio) == (OVERLAP_THRESHOLD, NEGATIVE_MINING_RATIO)
    assert (train["overlap_threshold"].default, train["negative_mining_ratio"].default) == (
        OVERLAP_THRESHOLD, NEGATIVE_MINING_RATIO)
    assert spec.layout.variances == VARIANCES
    assert [f.default for f in dataclasses.fields(SSDLayout) if f.name == "variances"] == [VARIANCES]
    for builder in (symbol_builder.get_symbol, symbol_builder.get_symbol_train):
        assert inspect.signature(builder).parameters["variances"].default is VARIANCES


def test_imagenet_normalisation_is_defined_once():
    from ssdkit import normalization
    from ssdkit.config import DataConfig
    from ssdkit.dataset import augment
    from ssdkit.symbol import common

    assert normalization.IMAGENET_MEAN == (123.675, 116.28, 103.53)
    for module in (augment, common):
        assert module.IMAGENET_MEAN is normalization.IMAGENET_MEAN
        assert module.IMAGENET_STD is normalization.IMAGENET_STD
    assert augment.Normalization().mean is normalization.IMAGENET_MEAN
    assert DataConfig().mean is normalization.IMAGENET_MEAN and DataConfig().std is normalization.IMAGENET_STD


def test_ssd_and_fpn_families_implement_one_interface_side_by_side():
    from ssdkit.api.fpn import FPNFamily
    from ssdkit.api.ssd import SSDFamily

    def interface(cls):
        return {n for n, v in vars(cls).items() if not n.startswith("_") and (callable(v) or n.endswith("names"))}

    assert SSDFamily.__bases__ == (object,) and FPNFamily.__bases__ == (object,)
    shared = interface(SSDFamily) & interface(FPNFamily)
    assert {"symbols", "meta_fields", "inference_symbol", "with_inference", "set_inference", "fixed_settings",
            "apply_meta", "inference_config", "make_iterator", "input_shapes", "inference_shapes",
            "metric_labels", "train_metric", "initializer", "preprocess", "batch_inputs", "check_portable",
            "data_names", "label_names"} <= shared
    assert interface(SSDFamily) - shared == set()
    assert interface(FPNFamily) - shared == {"image_shape"}


def test_api_modules_import_without_a_cycle():
    """data.py (datasets) sits below ssd.py / fpn.py (the families) below family.py (dispatch)."""
    api = os.path.join(REPO, "ssdkit", "api")
    assert not [m for m in _imports(os.path.join(api, "data.py")) if m.startswith("ssdkit.api")]
    for name in ("ssd.py", "fpn.py"):
        assert "ssdkit.api.family" not in set(_imports(os.path.join(api, name)))


def test_one_augment_config():
    """The ``[augment]`` config section is the one AugmentConfig; the pipeline's form is Augmentation."""
    from ssdkit.api.data import augmentation_of
    from ssdkit.config import AugmentConfig
    from ssdkit.dataset import augment

    assert not hasattr(augment, "AugmentConfig")
    assert augmentation_of(AugmentConfig()) == augment.Augmentation(crop_samplers=augment.SSD_CROP_SAMPLERS)
