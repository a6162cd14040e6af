"""Tests for ekg_keras.PruningScope: one validated, serialisable set-up."""

import json

import keras
import numpy as np
import pytest
from model_testing import two_conv_net

import ekg_keras
from ekg_keras import methods
from ekg_keras.scope import FIELDS
from ekg_keras.scope import PruningScope


def test_defaults_and_budget():
    scope = PruningScope(flops=0.5)
    assert scope.budget == "flops" and scope.fraction == 0.5
    assert scope.ignored_layers == () and scope.round_to == 1
    assert PruningScope().budget is None and PruningScope().fraction is None
    latency = PruningScope(latency=0.4, latency_batch_size=2)
    assert latency.budget == "latency" and latency.fraction == 0.4


def test_config_round_trips_through_json_and_keras_serialization():
    scope = PruningScope(
        latency=0.5,
        ignored_layers=["a", "b"],
        round_to=8,
        min_channels=0.25,
        include_bn=True,
        include_fc=False,
        latency_batch_size=4,
        latency_options={"runs": 3},
    )
    config = json.loads(json.dumps(scope.get_config()))
    assert sorted(config) == sorted(FIELDS)
    assert PruningScope.from_config(config) == scope
    serialized = keras.saving.serialize_keras_object(scope)
    assert keras.saving.deserialize_keras_object(serialized) == scope


def test_numpy_scalars_are_numbers():
    scope = PruningScope(
        flops=np.float32(0.5), round_to=np.int64(8), min_channels=np.int32(2)
    )
    assert scope.flops == 0.5 and type(scope.flops) is float
    assert scope.round_to == 8 and type(scope.round_to) is int
    assert PruningScope(latency=np.array(0.5)).latency == 0.5


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"flops": 1.5}, r"`flops` should be the fraction .* flops=1.5"),
        ({"flops": 0.5, "latency": 0.5}, "not both"),
        ({"latency": 0}, "`latency` should be"),
        ({"round_to": 0}, "`round_to` should be a positive integer"),
        ({"round_to": 2.5}, "`round_to` should be a positive integer"),
        ({"min_channels": 0}, "`min_channels` should be"),
        ({"ignored_layers": [3]}, r"layer names .* \[3\]"),
        ({"latency": 0.5, "runtime": "nope"}, "`runtime` should be one of"),
        ({"latency": 0.5, "latency_batch_size": 0}, "latency_batch_size"),
    ],
)
def test_bad_fields_are_refused_when_the_scope_is_made(fields, message):
    with pytest.raises(ValueError, match=message):
        PruningScope(**fields)


def test_the_scope_is_frozen_and_derives_new_scopes():
    scope = PruningScope(latency=0.5, round_to=4)
    with pytest.raises(AttributeError):
        scope.round_to = 8
    assert scope.with_fraction(0.3).latency == 0.3
    assert scope.with_fraction(0.3).round_to == 4
    assert scope.without_budget().budget is None
    assert PruningScope().with_fraction(0.7).flops == 0.7
    assert PruningScope.of(0.4, round_to=2) == PruningScope(0.4, round_to=2)
    assert PruningScope.of(scope) is scope
    assert PruningScope.of(scope, round_to=8).round_to == 8
    with pytest.raises(TypeError, match="Unknown scope option"):
        PruningScope.of(0.5, rounding=8)
    with pytest.raises(TypeError, match="should be a PruningScope"):
        PruningScope.of("half")
    assert PruningScope.split({"round_to": 2, "epochs": 3}) == (
        {"round_to": 2},
        {"epochs": 3},
    )


def test_a_method_receives_the_scope_whole():
    scope = PruningScope(flops=0.5, round_to=2, ignored_layers=("a",))
    method = methods.get("oneshot").create(two_conv_net(), scope, verbose=0)
    assert method.scope is scope and method.setup.scope is scope
    assert method.target == 0.5
    # Scope fields given as keywords replace the scope's.
    method = methods.get("oneshot").create(
        two_conv_net(), scope, round_to=1, verbose=0
    )
    assert method.scope.round_to == 1
    assert method.scope.ignored_layers == ("a",)


def test_prune_accepts_numpy_budgets():
    small = ekg_keras.prune(two_conv_net(), flops=np.float32(0.6), verbose=0)
    assert ekg_keras.count_flops(small).macs > 0
