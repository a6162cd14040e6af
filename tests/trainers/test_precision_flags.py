"""--mixed_precision and --jit_compile reach the models and train steps."""

import keras
import numpy as np
import pytest

from trainers import cifar
from trainers import loop

# End to end in a subprocess or over many stages: left out of --quick.
pytestmark = pytest.mark.slow


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_and_xla_pretraining(
    tmp_path, restore_policy, monkeypatch
):
    steps = []

    def recording_step_function(model, strategy, jit_compile=False):
        compiled = make_step(model, strategy, jit_compile)

        def step(batch):
            steps.append((compiled, batch))
            return compiled(batch)

        return step

    make_step = loop.step_function
    monkeypatch.setattr(loop, "step_function", recording_step_function)
    model_dir = tmp_path / "run"
    summary = cifar.main(
        [
            "cifar.py",
            "--image_size=8",
            "--model=resnet20",
            "--stages=pretrain",
            "--pretrain_epochs=6",
            "--steps_per_epoch=8",
            "--batch_size=32",
            "--mixed_precision",
            "--jit_compile",
            f"--model_dir={model_dir}",
            "--verbose=0",
        ]
    )
    # Seeds 0-2 reached 0.87-0.91 in this configuration (chance 0.10).
    assert summary["top1"] >= 0.7
    model = keras.saving.load_model(model_dir / "pretrain" / "model.keras")
    assert model.get_layer("stem_conv").dtype_policy.name == "mixed_float16"
    assert model.get_layer("stem_conv").kernel.dtype == "float32"
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    # --jit_compile reached the train step: it is compiled with XLA.
    compiled, batch = steps[0]
    function = compiled.get_concrete_function(batch).function_def
    assert function.attr["_XlaMustCompile"].b
