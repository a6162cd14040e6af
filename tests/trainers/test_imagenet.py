"""trainers/imagenet.py end to end on `tfds.testing.mock_data`: every stage
(pre-training included) with the ImageNet pipeline at a tiny image size,
and the exported SavedModel serves."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import ekg_keras
from trainers import imagenet
from trainers import sources

# End to end in a subprocess or over many stages: left out of --quick.
pytestmark = pytest.mark.slow


def test_imagenet_source_carries_ids_and_crops(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        source = sources.imagenet(data_dir=str(tmp_path), image_size=24)
        assert source.num_classes == 1000
        assert source.input_shape == (24, 24, 3)
        assert (source.num_train, source.num_eval) == (12, 12)
        assert source.views_augment == "flip"
        train = source.dataset("train", 4, training=True, with_ids=True)
        features, labels = next(iter(train))
        evaluation = source.dataset("eval", 5)
        images, _ = next(iter(evaluation))
    assert features["image"].shape == (4, 24, 24, 3)
    assert features["id"].dtype == tf.int64 and labels.shape == (4,)
    assert images.shape == (5, 24, 24, 3)


def test_every_stage_runs_and_the_saved_model_serves(tmp_path, capsys):
    model_dir = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=24):
        summary = imagenet.main(
            [
                "imagenet.py",
                f"--data_dir={tmp_path / 'tfds'}",
                "--image_size=16",
                "--model=resnet20",
                "--method=l2",
                "--flops=0.6",
                "--pretrain_epochs=1",
                "--epochs=1",
                "--steps_per_epoch=2",
                "--batch_size=8",
                "--eval_batch_size=16",
                f"--model_dir={model_dir}",
                "--verbose=0",
            ]
        )
    printed = capsys.readouterr().out
    assert "summary: " in printed
    assert summary == json.loads((model_dir / "summary.json").read_text())
    assert summary["dataset"] == "imagenet2012"
    for stage in ("pretrain", "prune", "finetune", "export"):
        assert summary["stages"][stage]["completed"]
        assert summary["stages"][stage]["runs"] == 1
        assert summary["seconds"][stage] > 0
    assert summary["flops_fraction"] <= 0.6
    assert summary["params"] < summary["params_full"]
    assert 0.0 <= summary["top1"] <= summary["top5"] <= 1.0

    slim = keras.saving.load_model(model_dir / "export" / "model.keras")
    assert not ekg_keras.layers.prunable_layers(slim)
    served = tf.saved_model.load(str(model_dir / "export" / "saved_model"))
    images = np.random.default_rng(0).normal(size=(3, 16, 16, 3))
    images = images.astype("float32")
    outputs = served.serve(tf.constant(images)).numpy()
    assert outputs.shape == (3, 1000)
    np.testing.assert_allclose(
        outputs, slim.predict(images, verbose=0), atol=1e-4
    )
