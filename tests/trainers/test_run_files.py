"""Files you can trust: a run's files damaged in turn, and settings changed.

One small finished run (l1 on the 8x8 digits) is made once for the module;
on its way it leaves a copy of its directory as a run killed in the
second fine-tuning epoch would (backups of epochs 1 and 2 on disk). Each
case copies one of them, damages a file (truncated, or bytes inverted in
the middle), and checks that the run names the file and what it does;
the end-to-end cases then run it and compare with the undamaged run.
"""

import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from trainer_testing import TINY

import ekg_keras
from trainers import callbacks
from trainers import cifar
from trainers import cli
from trainers import sources
from trainers.run import Run
from trainers.state import RunState

# End to end over many stages: left out of --quick.
pytestmark = pytest.mark.slow

ARGS = [
    "cifar.py",
    *TINY,
    "--method=l1",
    "--pretrain_epochs=1",
    "--epochs=3",
    "--verbose=0",
]

#: Every file a finished run writes and reads back (logs aside), with the
#: stage a damage of it redoes (None: no stage is redone).
FILES = {
    "state.json": None,
    "state.copy.json": None,
    "summary.json": None,
    "pretrain/model.keras": "pretrain",
    "prune/model.keras": "prune",
    "finetune/model.keras": "finetune",
    "export/model.keras": "export",
    "export/saved_model/saved_model.pb": "export",
    "export/saved_model/fingerprint.pb": "export",
    "export/saved_model/variables/variables.index": "export",
    "export/saved_model/variables/variables.data-00000-of-00001": "export",
}


def damage(path, how):
    """Truncates `path` to half, or inverts bytes in its middle."""
    data = bytearray(path.read_bytes())
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        middle = len(data) // 2
        data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle:][:8])
    path.write_bytes(bytes(data))


class Reference:
    """The finished run and the interrupted one, made once."""

    def __init__(self, directory):
        self.finished = directory / "finished"
        self.interrupted = directory / "interrupted"
        original = callbacks.Backup._save

        def save_and_copy(backup, epoch):
            original(backup, epoch)
            if "finetune" in backup.directory and backup._writes == 2:
                shutil.copytree(self.finished, self.interrupted)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(callbacks.Backup, "_save", save_and_copy)
            self.summary = cifar.main([*ARGS, f"--model_dir={self.finished}"])

    def copy(self, tmp_path, which="finished"):
        return shutil.copytree(getattr(self, which), tmp_path / "run")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    yield Reference(tmp_path_factory.mktemp("reference"))
    cli.parse(cifar.FLAGS, ["cifar.py"])  # Defaults again.


def checked(model_dir, *extra):
    """A `Run` on `model_dir` after `check()` (nothing run or written)."""
    cli.parse(cifar.FLAGS, [*ARGS, f"--model_dir={model_dir}", *extra])
    config = cli.config_from_flags(cifar.FLAGS, None)
    run = Run(
        config, sources.digits(image_size=8), tf.distribute.get_strategy()
    )
    run.check()
    return run


def rerun(model_dir, capsys, *extra):
    """Runs the trainer on `model_dir`; returns its summary and output."""
    capsys.readouterr()
    summary = cifar.main([*ARGS, f"--model_dir={model_dir}", *extra])
    return summary, capsys.readouterr().out


def assert_same_weights(path, reference_path):
    """The model files hold the same masks and (to float noise) weights."""
    a = keras.saving.load_model(path)
    b = keras.saving.load_model(reference_path)
    for x, y in zip(a.weights, b.weights, strict=True):
        if x.name == "mask":
            np.testing.assert_array_equal(x.numpy(), y.numpy())
        else:
            np.testing.assert_allclose(
                x.numpy(), y.numpy(), rtol=1e-5, atol=1e-6, err_msg=x.path
            )


def assert_same_result(summary, reference):
    for key in ("top1", "top5", "flops_fraction", "macs", "params"):
        assert summary[key] == reference.summary[key], key


def test_every_file_the_run_writes_is_recorded(reference):
    written = {
        str(p.relative_to(reference.finished))
        for p in reference.finished.rglob("*")
        if p.is_file() and p.parts[len(reference.finished.parts)] != "logs"
    }
    assert written == set(FILES)
    state = RunState(str(reference.finished / "state.json"))
    recorded = set(state.files())
    assert recorded == {
        "summary.json",
        "pretrain/model.keras",
        "prune/model.keras",
        "finetune/model.keras",
        "export/model.keras",
        "export/saved_model",
    }
    for record in state.files().values():
        assert record["size"] > 0 and len(record["sha256"]) == 64
    # Written through temporary files that were all renamed.
    assert not [p for p in reference.finished.rglob(".tmp-*")]


@pytest.mark.parametrize("how", ["truncate", "corrupt"])
@pytest.mark.parametrize("name", sorted(FILES))
def test_each_damaged_file_is_named_with_its_recovery(
    reference, tmp_path, name, how
):
    model_dir = reference.copy(tmp_path)
    damage(model_dir / name, how)
    run = checked(model_dir)
    messages = [str(repair.error) for repair in run._repairs]
    if run.state.repaired is not None:
        messages.append(str(run.state.repaired))
    assert len(messages) == 1, messages
    (message,) = messages
    # A file of the SavedModel: the directory is recorded as one.
    named = "export/saved_model" if "/saved_model/" in name else name
    assert message.startswith(f"{model_dir / named} is damaged (")
    stage = FILES[name]
    if stage is not None:
        assert message.endswith(f": redoing the {stage} stage")
        assert [repair.redo for repair in run._repairs] == [stage]
    elif name == "summary.json":
        assert message.endswith(": rewritten at the end of this run")
    elif name == "state.json":
        assert message.endswith(
            f"read from its copy {model_dir / 'state.copy.json'}, which "
            "rewrites it"
        )
    else:
        assert message.endswith(f"rewritten from {model_dir / 'state.json'}")
    # check() wrote nothing: the damage is still there.
    assert (model_dir / name).read_bytes() != (
        reference.finished / name
    ).read_bytes()


def test_both_records_damaged_is_one_line(reference, tmp_path, capsys):
    model_dir = reference.copy(tmp_path)
    damage(model_dir / "state.json", "truncate")
    damage(model_dir / "state.copy.json", "corrupt")
    with pytest.raises(SystemExit) as exit_info:
        cifar.main([*ARGS, f"--model_dir={model_dir}"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{model_dir / 'state.json'} is damaged (JSONDecodeError" in lines[0]
    assert f"so is its copy {model_dir / 'state.copy.json'}" in lines[0]
    assert f"move or delete {model_dir} to start over" in lines[0]


def test_a_damaged_input_of_a_stage_not_asked_for_names_the_flag(
    reference, tmp_path, capsys
):
    model_dir = reference.copy(tmp_path, "interrupted")
    damage(model_dir / "prune" / "model.keras", "corrupt")
    with pytest.raises(SystemExit) as exit_info:
        cifar.main(
            [*ARGS, f"--model_dir={model_dir}", "--stages=finetune,export"]
        )
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{model_dir / 'prune' / 'model.keras'} is damaged" in line
    assert line.endswith(
        "the finetune stage needs it; add prune to --stages to redo it"
    )
    # Not needed by what runs: said, and the run goes on.
    model_dir = reference.copy(tmp_path / "other")
    damage(model_dir / "pretrain" / "model.keras", "truncate")
    run = checked(model_dir, "--stages=export")
    (repair,) = run._repairs
    assert repair.redo is None
    assert str(repair.error).endswith(
        "not needed now; add pretrain to --stages to redo it"
    )


def test_a_changed_setting_of_a_finished_stage_is_refused(
    reference, tmp_path, capsys
):
    model_dir = reference.copy(tmp_path)
    with pytest.raises(SystemExit):
        cifar.main([*ARGS, f"--model_dir={model_dir}", "--epochs=2"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "(--epochs=3 there, 2 now)" in line


def test_a_changed_pretrained_file_is_refused(tmp_path):
    keras.utils.set_random_seed(0)
    pretrained = tmp_path / "pretrained.keras"
    ekg_model = ekg_keras.models.resnet20(input_shape=(8, 8, 3))
    ekg_model.save(pretrained)
    model_dir = tmp_path / "run"
    run = checked(model_dir, f"--pretrained={pretrained}")
    # What run() records before the first stage begins.
    run.state.data["pretrained_file"] = run._pretrained_file
    run.state.begin("prune")
    checked(model_dir, f"--pretrained={pretrained}")  # Unchanged: fine.
    ekg_model.layers[1].kernel.assign(ekg_model.layers[1].kernel * 2)
    ekg_model.save(pretrained)
    with pytest.raises(cli.ConfigError, match="changed since --model_dir"):
        checked(model_dir, f"--pretrained={pretrained}")


# End to end: the run after each recovery.


@pytest.mark.parametrize(
    "name, how",
    [
        ("pretrain/model.keras", "truncate"),
        ("prune/model.keras", "corrupt"),
        ("finetune/model.keras", "truncate"),
        ("export/model.keras", "truncate"),
        ("state.json", "corrupt"),
        ("summary.json", "truncate"),
    ],
)
def test_a_damaged_finished_run_is_repaired_to_the_same_result(
    reference, tmp_path, capsys, name, how
):
    model_dir = reference.copy(tmp_path)
    damage(model_dir / name, how)
    summary, out = rerun(model_dir, capsys)
    assert f"{model_dir / name} is damaged (" in out
    assert_same_result(summary, reference)
    stage = FILES[name]
    for other in ("pretrain", "prune", "finetune", "export"):
        redone = f"{other}: starting" in out
        assert redone == (other == stage), (other, out)
    if stage in ("pretrain", "prune", "finetune"):
        assert_same_weights(
            model_dir / stage / "model.keras",
            reference.finished / stage / "model.keras",
        )
    # Intact again: a next run finds nothing to repair.
    _, out = rerun(model_dir, capsys)
    assert "is damaged" not in out and "starting" not in out
    assert (
        json.loads((model_dir / "summary.json").read_text())["top1"]
        == (reference.summary["top1"])
    )


@pytest.mark.parametrize("how", ["newest", "record"])
def test_damaged_backups_resume_to_the_same_result(
    reference, tmp_path, capsys, how
):
    model_dir = reference.copy(tmp_path, "interrupted")
    backup = model_dir / "finetune" / "backup" / "finetune"
    assert sorted(p.name for p in backup.iterdir()) == [
        "backup-1.weights.h5",
        "backup-2.weights.h5",
        "backup.json",
    ]
    if how == "newest":
        damage(backup / "backup-2.weights.h5", "corrupt")
        expected = (
            f"finetune: {backup / 'backup-2.weights.h5'} is damaged (its "
            "SHA-256 differs from the one recorded): resumed from the backup"
            f" before it, {backup / 'backup-1.weights.h5'} (epoch 1)"
        )
        resumed_at = 1
    else:
        damage(backup / "backup.json", "truncate")
        expected = (
            f"finetune: {backup / 'backup.json'} is damaged (JSONDecodeError"
        )
        resumed_at = 0
    summary, out = rerun(model_dir, capsys)
    assert expected in out
    assert summary["stages"]["finetune"]["resumed_at_epoch"] == resumed_at
    assert_same_result(summary, reference)
    assert_same_weights(
        model_dir / "finetune" / "model.keras",
        reference.finished / "finetune" / "model.keras",
    )


def test_a_damaged_search_checkpoint_restarts_the_prune_stage(
    reference, tmp_path, capsys
):
    model_dir = reference.copy(tmp_path)
    state = RunState(str(model_dir / "state.json"))
    state.reopen("prune")  # As if killed during the search.
    search = model_dir / "prune" / "search"
    search.mkdir(parents=True)
    (search / "state.npz").write_bytes(b"PK\x03\x04 not a whole zip file")
    summary, out = rerun(model_dir, capsys)
    assert (
        f"{search / 'state.npz'} is damaged (BadZipFile: File is not a zip "
        "file): the prune stage starts over"
    ) in out
    assert not search.exists()
    assert "prune: starting" in out and "finetune: starting" not in out
    assert_same_result(summary, reference)
    assert_same_weights(
        model_dir / "prune" / "model.keras",
        reference.finished / "prune" / "model.keras",
    )


def test_a_changed_setting_runs_exactly_the_stages_that_depend_on_it(
    reference, tmp_path, capsys
):
    # Pre-trained and pruned, fine-tuning not begun: --epochs binds no
    # stage yet, so it may change, and only the stages after run.
    model_dir = reference.copy(tmp_path)
    state = RunState(str(model_dir / "state.json"))
    for stage in ("finetune", "export"):
        state.reopen(stage)
        del state.data["stages"][stage]
    state.save()
    summary, out = rerun(model_dir, capsys, "--epochs=1")
    assert "pretrain: done in an earlier run, skipped" in out
    assert "prune: done in an earlier run, skipped" in out
    assert "finetune: starting" in out and "export: starting" in out
    assert summary["stages"]["prune"] == reference.summary["stages"]["prune"]
    recorded = json.loads((model_dir / "state.json").read_text())
    assert recorded["config"]["epochs"] == 1
