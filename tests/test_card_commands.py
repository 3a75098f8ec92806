"""The card's own commands, verbatim, in a fresh working directory (issue 15, item 6):

    python train.py --network resnet50 --data-shape 512
    python evaluate.py --network resnet50 --data-shape 512
    python deploy.py

No data is named, so train writes the built-in synthetic dataset on first use (and says so) and
evaluate reads its test split; evaluate takes the latest checkpoint of the default prefix, deploy
writes it without losses. ``SSDKIT_SMOKE_IMAGES=2`` cuts the same defaults down to two images per split
and one epoch of one iteration (a resnet50 at 512 on two cores), nothing else.
"""
import json
import os
import shlex
import shutil
import subprocess
import sys

import mxnet as mx

import ssdkit.ops  # noqa: F401  (the deploy graph holds ssdkit's operators)
from ssdkit.cli import SMOKE_ENV

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CARD = ("python train.py --network resnet50 --data-shape 512",
        "python evaluate.py --network resnet50 --data-shape 512",
        "python deploy.py")


def _run(command, cwd):
    argv = shlex.split(command)
    proc = subprocess.run([sys.executable] + argv[1:], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=900, env=dict(os.environ, **{SMOKE_ENV: "2"}))
    assert proc.returncode == 0, (command, proc.stdout[-4000:])
    return proc.stdout


def test_card_commands_run_verbatim_from_a_fresh_directory(tmp_path):
    for script in ("train.py", "evaluate.py", "deploy.py"):
        shutil.copy(os.path.join(REPO, script), tmp_path / script)
    train, evaluate, deploy = (_run(command, tmp_path) for command in CARD)

    assert "no data named: writing the built-in synthetic dataset (2 training and 2 test images) to " \
           "data/synthetic" in train
    assert "finished epoch 1" in train and "training resnet50 @(512, 512) on 2 images, 6 classes" in train
    assert os.path.isfile(tmp_path / "data" / "synthetic" / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
                          / "test.txt")
    meta = json.load(open(tmp_path / "output" / "ssd-meta.json"))
    assert (meta["network"], meta["data_shape"], len(meta["class_names"])) == ("resnet50", 512, 6)

    assert "no data named: using the built-in synthetic dataset in data/synthetic" in evaluate
    assert "VOC07 mAP" in evaluate
    metrics = json.load(open(tmp_path / "output" / "ssd-eval" / "metrics.json"))
    assert metrics["images"] == 2

    assert "wrote output/deploy/ssd-symbol.json" in deploy
    symbol = mx.sym.load(str(tmp_path / "output" / "deploy" / "ssd-symbol.json"))
    assert "label" not in symbol.list_arguments() and symbol.list_outputs() == ["detection_output"]
    deployed = json.load(open(tmp_path / "output" / "deploy" / "ssd-meta.json"))
    assert (deployed["network"], deployed["data_shape"], deployed["max_detections"]) == ("resnet50", 512, 100)
