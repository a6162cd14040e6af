"""trainers/cli.py through the scripts: help, and bad input (exit code 2).

Bad input ends a trainer with one line on stderr and exit code 2, and
nothing written in --model_dir.
"""

import json
import subprocess
import sys

import keras
import pytest
from trainer_testing import ROOT
from trainer_testing import trainer_env

import ekg_keras
from trainers import cifar
from trainers import imagenet


def run_expecting_usage_error(module, args, capsys, model_dir):
    with pytest.raises(SystemExit) as exit_info:
        module.main([f"{module.__name__.split('.')[-1]}.py", *args])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert not model_dir.exists()
    return lines[0]


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cifar.main(["cifar.py", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for flag in (
        "strategy",
        "tpu",
        "model",
        "method",
        "method_options",
        "finetuner",
        "flops",
        "pretrained",
        "stages",
        "epochs",
        "batch_size",
        "learning_rate",
        "decay_points",
        "weight_decay",
        "jit_compile",
        "mixed_precision",
        "model_dir",
        "data_dir",
        "seed",
        "dataset",
    ):
        assert f"--{flag}: " in printed or f"--[no]{flag}: " in printed


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--strategy=horovod"], "flag --strategy=horovod: value should be"),
        (["--model=resnet7"], "flag --model=resnet7: value should be"),
        (["--method=magic"], "--method should be one of asfp, ekg, "),
        (
            ["--method=ekg", "--method_options=tau=1"],
            "--method_options: Unknown option 'tau' for method 'ekg'",
        ),
        (
            ["--finetuner=magic"],
            "--finetuner should be one of cosine, ekg, plain",
        ),
        (["--dataset=mnist"], "flag --dataset=mnist: value should be"),
        (["--flops=1.5"], "--flops should be the fraction of FLOPs to keep"),
        (["--flops=0"], "--flops should be the fraction of FLOPs to keep"),
        (["--stages=prune,deploy"], "--stages should be a comma-separated"),
        (["--decay_points=a,b"], "--decay_points should be comma-separated"),
        (["--epochs=two"], "flag --epochs=two"),
        (["--unknown_flag=1"], "Unknown command line flag 'unknown_flag'"),
        (["typo"], "unexpected arguments (flags start with --): typo"),
        (["--image_size=4"], "--image_size should be at least 8"),
        (
            ["--pretrained=/no/such/model.keras"],
            "--pretrained should be a .keras file. Not found",
        ),
        (
            ["--stages=prune,finetune"],
            "--stages without pretrain needs --pretrained",
        ),
        (
            ["--strategy=multi_worker_mirrored"],
            "TF_CONFIG environment variable, which is not set",
        ),
        (["--strategy=tpu"], "--strategy=tpu needs --tpu"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    args, expected, capsys, tmp_path, monkeypatch
):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    model_dir = tmp_path / "run"
    line = run_expecting_usage_error(
        cifar, [*args, f"--model_dir={model_dir}"], capsys, model_dir
    )
    assert line.startswith("cifar.py: error: ")
    assert expected in line


def test_missing_cifar_says_how_to_prepare_it(capsys, tmp_path):
    model_dir = tmp_path / "run"
    line = run_expecting_usage_error(
        cifar,
        [
            "--dataset=cifar10",
            f"--data_dir={tmp_path / 'tfds'}",
            f"--model_dir={model_dir}",
        ],
        capsys,
        model_dir,
    )
    assert "'cifar10' is not prepared" in line
    assert "tfds build cifar10 --data_dir=DIR" in line


def test_missing_imagenet_says_how_to_prepare_it(capsys, tmp_path):
    model_dir = tmp_path / "run"
    line = run_expecting_usage_error(
        imagenet,
        [f"--data_dir={tmp_path / 'tfds'}", f"--model_dir={model_dir}"],
        capsys,
        model_dir,
    )
    assert line.startswith("imagenet.py: error: ")
    assert "ILSVRC2012_img_train.tar" in line and "manual_dir" in line


def test_manual_dir_without_the_archives(capsys, tmp_path):
    model_dir = tmp_path / "run"
    line = run_expecting_usage_error(
        imagenet,
        [
            f"--data_dir={tmp_path / 'tfds'}",
            f"--manual_dir={tmp_path}",
            f"--model_dir={model_dir}",
        ],
        capsys,
        model_dir,
    )
    assert "ILSVRC2012_img_train.tar" in line and "is missing" in line


@pytest.mark.parametrize(
    "model_args, expected",
    [
        ({"num_classes": 100}, "output 10 classes. Received: input shape"),
        ({"input_shape": (16, 16, 3)}, "images of shape (8, 8, 3)"),
    ],
)
def test_incompatible_pretrained_model(model_args, expected, capsys, tmp_path):
    options = {"num_classes": 10, "input_shape": (8, 8, 3), **model_args}
    path = tmp_path / "other.keras"
    ekg_keras.models.resnet20(**options).save(path)
    model_dir = tmp_path / "run"
    line = run_expecting_usage_error(
        cifar,
        ["--image_size=8", f"--pretrained={path}", f"--model_dir={model_dir}"],
        capsys,
        model_dir,
    )
    assert f"--pretrained '{path}' should take digits images" in line
    assert expected in line


def test_unreadable_pretrained_file(capsys, tmp_path):
    path = tmp_path / "notes.keras"
    path.write_text("not a model")
    model_dir = tmp_path / "run"
    line = run_expecting_usage_error(
        cifar,
        [f"--pretrained={path}", f"--model_dir={model_dir}"],
        capsys,
        model_dir,
    )
    assert "--pretrained should be a .keras model file" in line


def test_model_dir_of_another_run_is_refused(capsys, tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    earlier = {"config": {"model": "resnet56", "method": "l1"}, "stages": {}}
    (model_dir / "state.json").write_text(json.dumps(earlier))
    with pytest.raises(SystemExit) as exit_info:
        cifar.main(["cifar.py", "--model=resnet20", f"--model_dir={model_dir}"])
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip()
    assert "holds a run with other settings" in line
    assert "--model=resnet56 there, resnet20 now" in line
    assert "--method=l1 there, ekg now" in line
    assert sorted(p.name for p in model_dir.iterdir()) == ["state.json"]


def _earlier_run(model_dir, stages, **config):
    """A model_dir whose state.json holds `stages` begun with `config`."""
    from trainers import config as config_lib

    earlier = config_lib.RunConfig(
        model="resnet20", model_dir=str(model_dir), **config
    )
    model_dir.mkdir()
    state = {
        "config": earlier.to_json(),
        "stages": {stage: {"completed": True} for stage in stages},
    }
    (model_dir / "state.json").write_text(json.dumps(state))


def test_a_finished_run_with_other_epochs_is_refused(capsys, tmp_path):
    # Rerun, every stage would be skipped: the --epochs asked for would
    # silently not be what the fine-tuned model had.
    model_dir = tmp_path / "run"
    _earlier_run(model_dir, ("prune", "finetune", "export"), epochs=3)
    with pytest.raises(SystemExit) as exit_info:
        cifar.main(
            [
                "cifar.py",
                "--model=resnet20",
                "--epochs=5",
                f"--model_dir={model_dir}",
            ]
        )
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip()
    assert "--epochs=3 there, 5 now" in line
    assert sorted(p.name for p in model_dir.iterdir()) == ["state.json"]


def test_settings_of_stages_not_begun_may_change():
    from trainers import run

    # Fine-tuning settings bind once fine-tuning began, not before.
    assert "epochs" not in run.settings_of("prune")
    assert "epochs" in run.settings_of("finetune")
    assert "min_channels" in run.settings_of("export")
    config_fields = set(
        __import__("trainers.config", fromlist=["RunConfig"]).RunConfig(
            model="resnet20"
        ).to_json()
    )
    assert set(run.settings_of("export")) <= config_fields


def test_an_unwritable_model_dir_is_one_line(capsys, tmp_path):
    # A file in the way: unwritable for root too (the suite may run as
    # root, for whom a read-only directory is writable).
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        cifar.main(
            [
                "cifar.py",
                "--synthetic_data",
                "--dataset=digits",
                "--image_size=8",
                "--model=resnet20",
                f"--model_dir={blocker / 'run'}",
            ]
        )
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "--model_dir should be a directory this process can write" in (
        lines[0]
    )
    assert f"{blocker} is not a directory" in lines[0]


@pytest.mark.slow
def test_a_fresh_process_prints_one_line_before_tensorflow_noise():
    """TensorFlow's C++ start-up lines do not precede the error."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "trainers" / "imagenet.py"),
            "--strategy=x",
        ],
        capture_output=True,
        text=True,
        env=trainer_env(),
        check=False,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "imagenet.py: error: flag --strategy=x: value should be one of "
        "<default|one_device|mirrored|multi_worker_mirrored|tpu>"
    ]


@pytest.mark.slow
def test_a_synthetic_data_run_goes_through_every_stage(tmp_path):
    model_dir = tmp_path / "run"
    summary = cifar.main(
        [
            "cifar.py",
            "--synthetic_data",
            "--dataset=digits",
            "--image_size=8",
            "--model=resnet20",
            "--method=l1",
            "--flops=0.5",
            "--pretrain_epochs=1",
            "--epochs=1",
            "--steps_per_epoch=2",
            "--batch_size=32",
            "--verbose=0",
            f"--model_dir={model_dir}",
        ]
    )
    assert summary["dataset"] == "synthetic-digits"
    assert summary["flops_fraction"] <= 0.5
    assert (model_dir / "export" / "saved_model").is_dir()
    # Random labels: accuracy near chance (10 classes).
    assert summary["top1"] < 0.3


def test_synthetic_data_has_its_own_default_model_dir():
    from trainers import cli

    cli.parse(cifar.FLAGS, ["cifar.py", "--synthetic_data"])
    config = cli.config_from_flags(cifar.FLAGS, None)
    assert config.model_dir.startswith("runs/synthetic-digits-")
    cli.parse(cifar.FLAGS, ["cifar.py"])


def test_imagenet_synthetic_data_needs_no_data_set(capsys, tmp_path):
    pretrained = tmp_path / "small.keras"
    ekg_keras.models.resnet20(input_shape=(8, 8, 3)).save(pretrained)
    model_dir = tmp_path / "run"
    line = run_expecting_usage_error(
        imagenet,
        [
            "--synthetic_data",
            "--image_size=16",
            f"--pretrained={pretrained}",
            f"--model_dir={model_dir}",
        ],
        capsys,
        model_dir,
    )
    # The data set was not looked for; the synthetic one was checked.
    assert "should take synthetic-imagenet2012 images of shape (16, 16, 3)" in (
        line
    )


@pytest.mark.slow
def test_a_pretrained_model_of_any_image_size_is_counted_at_the_data_size(
    tmp_path,
):
    # KerasHub's default: a model that takes images of any size. The run
    # counts FLOPs at --image_size, so the pruned model meets the budget
    # there and keeps its dynamic input.
    pretrained = tmp_path / "dynamic.keras"
    ekg_keras.models.resnet20(input_shape=(None, None, 3)).save(pretrained)
    model_dir = tmp_path / "run"
    summary = cifar.main(
        [
            "cifar.py",
            "--synthetic_data",
            "--dataset=digits",
            "--image_size=8",
            "--model=resnet20",
            "--method=l1",
            "--flops=0.5",
            f"--pretrained={pretrained}",
            "--stages=prune,finetune,export",
            "--epochs=1",
            "--steps_per_epoch=2",
            "--batch_size=32",
            "--verbose=0",
            f"--model_dir={model_dir}",
        ]
    )
    assert 0.495 <= summary["flops_fraction"] <= 0.5
    exported = keras.saving.load_model(model_dir / "export" / "model.keras")
    assert tuple(exported.inputs[0].shape[1:3]) == (None, None)
