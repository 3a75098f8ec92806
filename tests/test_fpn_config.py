"""FPN settings and presets: seed values, validation naming the key, the [fpn] config section, the
TOML presets, warm-up in iterations."""
import dataclasses

import pytest

from ssdkit.config import FPNConfig, apply_overrides, load_config
from ssdkit.config.schema import ModelConfig, SolverConfig
from ssdkit.engine.schedule import build_lr_scheduler
from ssdkit.symbol.fpn_config import fpn_config, fpn_settings


def test_seed_values():
    s = FPNConfig()
    assert (s.anchor_scales, s.anchor_ratios, s.num_anchors) == ((8.0,), (0.5, 1.0, 2.0), 3)
    assert (s.rpn_positive_iou, s.rpn_negative_iou, s.rpn_batch_size, s.rpn_positive_fraction) == (0.7, 0.3, 256, 0.5)
    assert (s.rpn_pre_nms_top_n_train, s.rpn_pre_nms_top_n_test) == (2000, 1000)
    assert (s.rpn_post_nms_top_n_train, s.rpn_post_nms_top_n_test, s.rpn_nms_threshold) == (1000, 1000, 0.7)
    assert (s.rcnn_batch_rois, s.rcnn_fg_fraction, s.rcnn_fg_iou) == (512, 0.25, 0.5)
    assert s.rcnn_stds == (0.1, 0.1, 0.2, 0.2) and s.rpn_box_beta == pytest.approx(1 / 9)
    assert (s.test_score_threshold, s.test_nms_threshold, s.test_max_detections) == (0.05, 0.5, 100)
    assert (s.fpn_channels, s.rcnn_fc_dim, s.roi_size) == (256, 1024, 7)


def test_fpn_config_preset_dict():
    cfg = fpn_config("fpn_resnet50")
    assert cfg["network"] == "fpn_resnet50" and cfg["image_shape"] == (1344, 1344)
    assert cfg["rpn_batch_size"] == 256
    small = fpn_config("fpn_resnet18", 128, 160, rcnn_batch_rois=64, anchor_ratios=[1.0])
    assert small["image_shape"] == (192, 192) and small["rcnn_batch_rois"] == 64
    assert small["anchor_ratios"] == (1.0,)
    small["rcnn_stds"] = None                                   # a new dict each time
    assert fpn_config("fpn_resnet18")["rcnn_stds"] == (0.1, 0.1, 0.2, 0.2)
    with pytest.raises(ValueError, match="no FPN preset for network 'resnet50'"):
        fpn_config("resnet50")
    with pytest.raises(ValueError, match="unknown FPN setting.*rpn_iou"):
        fpn_settings(rpn_iou=0.5)


@pytest.mark.parametrize("key,value,message", [
    ("rpn_negative_iou", 0.8, "rpn_negative_iou <= rpn_positive_iou"),
    ("rcnn_fg_fraction", 0.0, "in \\(0, 1\\]"),
    ("rcnn_batch_rois", 0, "must be >= 1"),
    ("anchor_ratios", (), "at least one positive"),
    ("rcnn_stds", (0.1, 0.1, 0.2), "4 positive values"),
    ("rcnn_bg_iou_lo", 0.6, "rcnn_bg_iou_lo <= rcnn_bg_iou_hi"),
    ("rpn_box_beta", 0.0, "must be > 0"),
])
def test_bad_settings_name_their_key(key, value, message):
    with pytest.raises(ValueError, match="fpn.%s'.*%s" % (key, message)):
        FPNConfig(**{key: value})


def test_presets_load_and_hold_the_reference_values():
    coco = load_config("fpn_resnet50_coco")
    assert coco.model.network == "fpn_resnet50"
    assert (coco.model.resize_short, coco.model.resize_long) == (800, 1333)
    assert dataclasses.replace(coco.fpn, frozen_bn=False) == FPNConfig()   # every [fpn] value is the seed
    solver = coco.solver
    assert (solver.optimizer, solver.lr, solver.momentum, solver.wd) == ("sgd", 0.02, 0.9, 1e-4)
    assert (solver.epochs, solver.lr_steps, solver.lr_factor, solver.warmup_iters) == (12, (8.0, 11.0), 0.1, 500)
    assert coco.data.batch_size == 16 and coco.augment.expand_prob == 0 and coco.augment.crop_min_ious == ()
    small = load_config("fpn_resnet18_synthetic")
    assert small.model.network == "fpn_resnet18" and small.fpn.fpn_channels == 128
    assert fpn_config(small.model.network, small.model.resize_short, small.model.resize_long,
                      **dataclasses.asdict(small.fpn))["image_shape"] == (256, 256)
    assert load_config("tiny_256_synthetic").fpn == FPNConfig()            # SSD presets stay valid


def test_fpn_section_in_toml_and_overrides(tmp_path):
    path = tmp_path / "f.toml"
    path.write_text('[model]\nnetwork = "fpn_resnet18"\nresize_short = 128\nresize_long = 160\n'
                    '[fpn]\nrcnn_batch_rois = 32\nanchor_scales = [4, 8]\n')
    config = load_config(str(path))
    assert config.fpn.rcnn_batch_rois == 32 and config.fpn.anchor_scales == (4.0, 8.0)
    assert config.fpn.num_anchors == 6
    config = apply_overrides(config, {"fpn.rpn_nms_threshold": 0.6, "model.resize_long": 200})
    assert config.fpn.rpn_nms_threshold == 0.6 and config.model.resize_long == 200
    path.write_text('[fpn]\nrpn_batch = 3\n')
    with pytest.raises(ValueError, match="unknown config key 'fpn.rpn_batch'"):
        load_config(str(path))
    path.write_text('[fpn]\nrpn_positive_iou = 0.2\n')
    with pytest.raises(ValueError, match="f.toml.*fpn.rpn_negative_iou"):
        load_config(str(path))
    with pytest.raises(ValueError, match="resize_short <= resize_long"):
        ModelConfig(resize_short=900, resize_long=800)


def test_warmup_in_iterations():
    solver = SolverConfig(lr=0.02, epochs=12, lr_steps=(8.0, 11.0), warmup_iters=500)
    sched = build_lr_scheduler(solver, 1000)
    assert sched(250) == pytest.approx(0.01, rel=1e-2)      # linear from 0
    assert sched(501) == pytest.approx(0.02)
    assert sched(8001) == pytest.approx(0.002) and sched(11001) == pytest.approx(0.0002)
    with pytest.raises(ValueError, match="warmup_iters or warmup_epochs"):
        SolverConfig(warmup_iters=10, warmup_epochs=1.0)
