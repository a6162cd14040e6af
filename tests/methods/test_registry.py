"""Tests for ekg_keras.methods: the registry, a method plugged in from
outside (reaching prune() and the trainers with no other change), options."""

import dataclasses

import keras
import numpy as np
import pytest

import ekg_keras
from ekg_keras import allocation
from ekg_keras import methods
from ekg_keras.methods import options as options_lib
from trainers import cifar


def _toy_search(method):
    """Keeps the first channels of every group, uniformly: a toy rule."""
    setup = method.setup
    scores = [
        -np.arange(g.size, dtype=float) if g.prunable else None
        for g in setup.graph.groups
    ]
    counts = allocation.uniform(
        setup.counter, setup.target_macs, scores, setup.levels
    )
    setup.apply(methods.keep_top(scores, counts, setup.graph.sizes))
    return method.model


@pytest.fixture
def toy_method():
    @dataclasses.dataclass(frozen=True)
    class ToyOptions:
        reverse: bool = False

    @methods.register_method("toy_first_channels")
    class FirstChannels(methods.PruningMethod):
        """Keeps the first channels of every group (a test method)."""

        Options = ToyOptions

        def search(self, fitter):
            return _toy_search(self)

    yield FirstChannels
    methods.unregister_method("toy_first_channels")


def _small_model():
    keras.utils.set_random_seed(0)
    return ekg_keras.models.resnet20(input_shape=(8, 8, 3))


def test_a_method_registered_outside_reaches_prune(toy_method):
    assert "toy_first_channels" in methods.names()
    assert "Keeps the first channels" in methods.describe()
    model = _small_model()
    masked = ekg_keras.prune(
        model, 0.5, method="toy_first_channels", slim=False, verbose=0
    )
    layer = masked.get_layer("stem_conv")
    mask = layer.filter_mask.numpy()
    kept = int(mask.sum())
    assert 0 < kept < len(mask)
    np.testing.assert_array_equal(mask[:kept], 1)
    small = ekg_keras.slim(masked)
    fraction = (
        ekg_keras.count_flops(small).macs / ekg_keras.count_flops(model).macs
    )
    assert 0.49 <= fraction <= 0.5
    with pytest.raises(ValueError, match="Unknown option criterion"):
        ekg_keras.prune(model, 0.5, method="toy_first_channels", criterion="l1")


@pytest.mark.slow
def test_a_method_registered_outside_reaches_the_trainer(toy_method, tmp_path):
    pretrained = tmp_path / "pretrained.keras"
    _small_model().save(pretrained)
    summary = cifar.main(
        [
            "cifar.py",
            "--dataset=digits",
            "--image_size=8",
            "--model=resnet20",
            "--method=toy_first_channels",
            "--method_options=reverse=true",
            "--flops=0.5",
            "--epochs=1",
            "--steps_per_epoch=2",
            "--batch_size=64",
            "--verbose=0",
            f"--pretrained={pretrained}",
            f"--model_dir={tmp_path / 'run'}",
        ]
    )
    assert summary["method"] == "toy_first_channels"
    assert summary["stages"]["finetune"]["completed"]
    assert 0.49 <= summary["flops_fraction"] <= 0.5


def test_unknown_names_and_presets():
    with pytest.raises(ValueError, match="Unknown method 'x'. Registered: "):
        methods.get("x")
    with pytest.raises(ValueError, match="registered already"):
        methods.register_method("ekg")(methods.PruningMethod)
    with pytest.raises(ValueError, match="Presets of method 'y' should be"):
        methods.registry.add("y", methods.PruningMethod, colour="red")
    with pytest.raises(KeyError, match="No method named 'z'"):
        methods.unregister_method("z")
    asfp = methods.get("asfp")
    assert asfp.presets == {"schedule": "asymptotic"}
    assert asfp.method_class is methods.get("sfp").method_class


def test_defaults_come_from_the_registry():
    assert methods.default(with_data=True) == "ekg"
    assert methods.default(with_data=False) == "oneshot"
    assert methods.names() == tuple(sorted(methods.names()))
    with pytest.raises(ValueError, match="`default_for` should be one of"):
        methods.register_method("toy", default_for="always")
    with pytest.raises(ValueError, match="default method with data is 'ekg'"):
        methods.register_method("toy", default_for="with data")(
            methods.get("oneshot").method_class
        )
    assert "toy" not in methods.names()  # Not left half-registered.


def test_every_method_declares_its_protocol_attributes():
    for name in methods.names():
        cls = methods.get(name).method_class
        assert issubclass(cls, methods.PruningMethod), name
        assert dataclasses.is_dataclass(cls.Options), name
        assert cls.mode in ("hard", "soft"), name
        assert cls.finetuner in (None, *ekg_keras.training.finetuners.names())


@dataclasses.dataclass(frozen=True)
class _Options:
    count: int = 3
    rate: float = 0.5
    flag: bool = False
    name: str = "a"
    epochs: int = dataclasses.field(default=1, metadata={"setting": "epochs"})


def test_options_from_keywords_settings_and_text():
    made = options_lib.make_options(_Options, values={"count": 5})
    assert made == _Options(count=5)
    with pytest.raises(ValueError, match="Unknown option colour for method"):
        options_lib.make_options(_Options, values={"colour": 1})
    with pytest.raises(ValueError, match="should be a _Options"):
        options_lib.make_options(_Options, options=object())
    assert options_lib.from_settings(
        _Options, {"epochs": 9, "count": 4, "other": 1}
    ) == {"epochs": 9}
    parsed = options_lib.parse(
        _Options, ["count=7", "rate=0.25", "flag=yes", "name=b c"]
    )
    assert parsed == {"count": 7, "rate": 0.25, "flag": True, "name": "b c"}
    with pytest.raises(ValueError, match="should be of type int"):
        options_lib.parse(_Options, ["count=many"])
    with pytest.raises(ValueError, match="key=value"):
        options_lib.parse(_Options, ["count"])


def test_every_method_declares_a_cpu_and_a_paper_option_set():
    for name in methods.names():
        entry = methods.get(name)
        sets = entry.method_class.option_sets
        assert set(sets) >= {"cpu", "paper"}, name
        assert sets["paper"] == {}, name  # Its paper's defaults.
        # Valid options, and the name's presets win over the set.
        values = entry.options_for("cpu")
        options_lib.make_options(entry.method_class.Options, values=values)
        assert values.items() >= entry.presets.items(), name
    assert methods.get("nppm").options_for("cpu")["epochs"] < 200
    assert methods.get("asfp").options_for("paper") == {
        "schedule": "asymptotic"
    }
    assert methods.get("ekg").options_for("tpu") == {}  # Undeclared: empty.


def test_option_sets_name_options_of_the_class(toy_method):
    class Sized(toy_method):
        option_sets = {"cpu": {"reverse": True}, "paper": {"colour": 1}}

    with pytest.raises(ValueError, match="Option set 'paper' of method 'w'"):
        methods.registry.add("w", Sized)
    assert "w" not in methods.names()


def test_follower_names_the_option_of_a_run_setting():
    assert options_lib.follower(_Options, "epochs") == "epochs"
    assert options_lib.follower(_Options, "search_epochs") is None
    followers = {
        name: options_lib.follower(
            methods.get(name).method_class.Options, "search_epochs"
        )
        for name in ("nppm", "lfpc", "sp", "ekg")
    }
    assert followers == {
        "nppm": "epochs",
        "lfpc": "search_epochs",
        "sp": "supernet_epochs",
        "ekg": None,
    }
