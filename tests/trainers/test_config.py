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
    # SPEC.md 8.6, train_cifar.py: lr 1e-2 x0.2 at 30/60/80%, wd 5e-4.
    assert (config.learning_rate, config.decay_rate) == (1e-2, 0.2)
    assert config.decay_points == (0.3, 0.6, 0.8)
    assert config.weight_decay == 5e-4 and config.batch_size == 128
    as_json = json.loads(json.dumps(config.to_json()))
    assert RunConfig.from_json(as_json) == config


def test_soft_methods_are_known_as_such():
    assert RunConfig(model="resnet20", method="asfp").is_soft
    assert not RunConfig(model="resnet20", method="l1").is_soft


@pytest.mark.parametrize(
    "settings, flag",
    [
        ({"model": "resnet7"}, "--model"),
        ({"method": "magic"}, "--method"),
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
