"""trainers/presets.py: `--preset` sizes a run; flags given always win."""

import pytest

from trainers import cifar
from trainers import cli
from trainers import imagenet
from trainers import presets
from trainers.config import ConfigError
from trainers.config import RunConfig


@pytest.fixture
def parsed():
    """Parses a trainer's command line into its `RunConfig`; the flags are
    parsed back to their defaults afterwards."""
    used = []

    def parse(module, *args):
        used.append(module)
        name = module.__name__.split(".")[-1]
        cli.parse(module.FLAGS, [f"{name}.py", *args])
        return cli.config_from_flags(module.FLAGS, "imagenet2012")

    yield parse
    for module in used:
        cli.parse(module.FLAGS, ["trainer.py"])


def test_cifar_runs_the_cpu_preset_by_default(parsed):
    config = parsed(cifar)
    assert config.preset == "cpu"
    assert (config.model, config.pretrain_epochs, config.epochs) == (
        "resnet20",
        15,
        5,
    )
    # The default method's search takes its "cpu" option set.
    assert config.options()["val_per_class"] == 16


def test_the_paper_preset_keeps_the_paper_settings(parsed):
    config = parsed(cifar, "--preset=paper", "--method=nppm")
    assert (config.model, config.pretrain_epochs, config.epochs) == (
        "resnet56",
        200,
        100,
    )
    assert config.decay_points == (0.3, 0.6, 0.8)
    assert "epochs" not in config.options()  # NPPM's 200 of the paper.


def test_flags_given_override_the_preset(parsed):
    config = parsed(cifar, "--preset=paper", "--epochs=3", "--model=resnet20")
    assert (config.model, config.epochs, config.pretrain_epochs) == (
        "resnet20",
        3,
        200,
    )
    config = parsed(cifar, "--pretrain_epochs=200")  # Given: kept.
    assert (config.model, config.pretrain_epochs) == ("resnet20", 200)
    config = parsed(cifar, "--method=nppm", "--method_options=window=3")
    assert config.options()["window"] == 3
    assert config.options()["epochs"] == 30  # The cpu set's.


def test_imagenet_runs_the_paper_preset_by_default(parsed):
    config = parsed(imagenet)
    assert (config.preset, config.model, config.pretrain_epochs) == (
        "paper",
        "resnet50",
        90,
    )
    config = parsed(imagenet, "--preset=cpu")
    assert (config.model, config.steps_per_epoch) == ("resnet20", 50)
    assert imagenet.FLAGS.image_size == 64


def test_search_epochs_reach_the_methods_search_option(parsed):
    for method, option in (
        ("nppm", "epochs"),
        ("lfpc", "search_epochs"),
        ("sp", "supernet_epochs"),
    ):
        config = parsed(cifar, f"--method={method}", "--search_epochs=3")
        assert config.options()[option] == 3, method
    config = parsed(
        cifar, "--method=nppm", "--search_epochs=3", "--method_options=epochs=4"
    )
    assert config.options()["epochs"] == 4  # --method_options wins.


def test_search_epochs_without_a_search_are_refused():
    with pytest.raises(ConfigError, match=r"^--search_epochs applies to .*"):
        RunConfig(model="resnet20", method="ekg", search_epochs=3)
    with pytest.raises(ConfigError, match="--preset should be one of"):
        RunConfig(model="resnet20", preset="gpu")


def test_help_says_what_each_preset_sets():
    text = presets.describe(presets.CIFAR)
    assert text.startswith("cpu: --model=resnet20 --epochs=5")
    assert "paper: --model=resnet56 --flops=0.45 --epochs=100" in text
    assert "the methods' 'cpu' option sets" in text
    for name in presets.NAMES:
        assert set(presets.CIFAR[name]) == set(presets.CIFAR["paper"])
