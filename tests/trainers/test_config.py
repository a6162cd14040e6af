"""trainers/config.py: the run settings and their checks."""

import json

import pytest

from trainers.config import STAGES
from trainers.config import ConfigError
from trainers.config import RunConfig


def test_defaults_follow_the_spec_and_serialize():
    config = RunConfig(model="resnet56")
    assert config.method == "ekg" and config.flops == 0.45
    assert config.stages == STAGES
    # The EKG reference code's train_cifar.py: lr 1e-2 x0.2 at 30/60/80%,
    # wd 5e-4.
    assert (config.learning_rate, config.decay_rate) == (1e-2, 0.2)
    assert config.decay_points == (0.3, 0.6, 0.8)
    assert config.weight_decay == 5e-4 and config.batch_size == 128
    as_json = json.loads(json.dumps(config.to_json()))
    assert RunConfig.from_json(as_json) == config


def test_methods_come_from_the_registry():
    assert RunConfig(model="resnet20", method="asfp").trains_while_pruning
    assert not RunConfig(model="resnet20", method="l1").trains_while_pruning


def test_method_options_from_settings_and_key_value_pairs():
    config = RunConfig(
        model="resnet20",
        method="ekg",
        eval_batch_size=64,
        method_options=("variant=poster", "cache=false", "val_per_class=8"),
    )
    assert config.options() == {
        "val_per_class": 8,
        "batch_size": 64,
        "variant": "poster",
        "cache": False,
    }
    soft = RunConfig(model="resnet20", method="asfp", epochs=7)
    assert soft.options() == {"schedule": "asymptotic", "epochs": 7}


@pytest.mark.parametrize(
    "options, message",
    [
        (("nonsense=1",), "Unknown option 'nonsense' for method 'ekg'"),
        (("cache=maybe",), "Option 'cache' of method 'ekg' should be of type"),
        (("variant=paper",), "variant='paper'"),
        (("variant",), "key=value pairs"),
    ],
)
def test_bad_method_options(options, message):
    with pytest.raises(ConfigError, match=f"^--method_options: .*{message}"):
        RunConfig(model="resnet20", method_options=options)


def test_finetuner_options_are_the_finetuners_own():
    config = RunConfig(
        model="resnet20", finetuner_options=("num_teachers=2",)
    )
    assert config.finetuner_entry.name == "ekg"
    assert config.finetuner_values() == {"num_teachers": 2}
    assert RunConfig(model="resnet20", method="l1").finetuner_values() == {}
    as_json = json.loads(json.dumps(config.to_json()))
    assert RunConfig.from_json(as_json) == config


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"finetuner_options": ("nonsense=1",)}, "Unknown option 'nonsense'"),
        ({"finetuner_options": ("num_teachers=0",)}, "positive integer"),
        ({"finetuner_options": ("num_teachers",)}, "key=value pairs"),
        (
            {"method": "sfp", "finetuner_options": ("num_teachers=2",)},
            "no fine-tuning stage",
        ),
        (
            {"finetuner": "plain", "finetuner_options": ("num_teachers=2",)},
            "Unknown option 'num_teachers'",
        ),
    ],
)
def test_bad_finetuner_options(settings, message):
    with pytest.raises(
        ConfigError, match=f"^--finetuner_options: .*{message}"
    ):
        RunConfig(model="resnet20", **settings)


@pytest.mark.parametrize(
    "settings, flag",
    [
        ({"model": "resnet7"}, "--model"),
        ({"method": "magic"}, "--method"),
        ({"finetuner": "magic"}, "--finetuner"),
        ({"flops": 0.0}, "--flops"),
        ({"flops": 1.5}, "--flops"),
        ({"stages": ("prune", "deploy")}, "--stages"),
        ({"stages": ()}, "--stages"),
        ({"epochs": 0}, "--epochs"),
        ({"batch_size": -8}, "--batch_size"),
        ({"steps_per_epoch": -1}, "--steps_per_epoch"),
        ({"decay_points": (0.8, 0.3)}, "--decay_points"),
        ({"pretrain_decay_points": (1.5,)}, "--pretrain_decay_points"),
        ({"decay_rate": 0.0}, "--decay_rate"),
        ({"learning_rate": -0.1}, "--learning_rate"),
        ({"momentum": 1.0}, "--momentum"),
        ({"min_channels": 2.5}, "--min_channels"),
        ({"model_dir": ""}, "--model_dir"),
    ],
)
def test_out_of_range_settings_name_the_flag(settings, flag):
    with pytest.raises(ConfigError, match=f"^{flag} should be .*Received"):
        RunConfig(**{"model": "resnet20", **settings})
