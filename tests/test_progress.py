"""Long runs announce themselves and stay visible (issue 30, part 4)."""

import re

import pytest
from model_testing import random_classification
from model_testing import two_conv_net

import ekg_keras
from ekg_keras import methods
from ekg_keras import progress as progress_lib
from ekg_keras.progress import EpochProgress
from ekg_keras.progress import Progress


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _lines(capsys):
    return [line for line in capsys.readouterr().out.splitlines() if line]


def test_a_long_run_is_estimated_after_its_first_unit_then_reported(capsys):
    clock = _Clock()
    progress = Progress(
        "search", 100, "steps", hint="Fewer steps.", clock=clock
    )
    clock.now = 20.0  # The first step compiles.
    progress.update()
    assert _lines(capsys) == []
    clock.now = 32.0
    progress.update()
    (estimate,) = _lines(capsys)
    # 32 s so far, then 98 steps at 12 s: about 20 minutes.
    assert estimate == (
        "search: 100 steps at 12.0 s each: about 20.1 min in all on this "
        "machine. Fewer steps."
    )
    for _ in range(3):
        clock.now += 12.0
        progress.update(detail="stage 2")
    lines = _lines(capsys)
    assert lines == [
        "search: 5/100 steps in 68 s, about 19.0 min left; stage 2"
    ]


def test_a_short_run_prints_nothing_and_verbose_0_silences(capsys):
    clock = _Clock()
    short = Progress("search", 10, clock=clock)
    silent = Progress("search", 1000, verbose=0, clock=clock)
    for _ in range(10):
        clock.now += 1.0
        short.update()
        silent.update()
    assert _lines(capsys) == []
    assert silent.done == 10


def test_epoch_progress_reports_within_and_after_epochs(capsys):
    clock = _Clock()
    callback = EpochProgress("ekg_keras: nppm_search", 200, every=25)
    callback.progress.clock = clock
    callback.on_train_begin()
    for epoch in range(2):
        for batch in range(10):
            clock.now += 3.0
            callback.on_train_batch_end(batch)
        callback.on_epoch_end(epoch)
    lines = _lines(capsys)
    assert lines[0] == "ekg_keras: nppm_search: 0/200 epochs in 27 s; 9 batches"
    assert "200 epochs at 30.0 s each: about 100.0 min in all" in lines[-1]


def test_prune_summarises_the_returned_model(capsys):
    """The last line is measured from the returned model, soft methods
    included (whose masks alone can misdescribe it)."""
    # A ResNet: soft pruning's residual groups are where its keep counts
    # and its model differed (47.1% of the FLOPs kept, 50.0% printed).
    model = ekg_keras.models.resnet20(input_shape=(8, 8, 3), num_classes=4)
    data = random_classification(32, size=8)
    for name in ("oneshot", "sfp"):
        small = ekg_keras.prune(
            model,
            0.5,
            data=data,
            method=name,
            verbose=1,
            **methods.get(name).method_class.smoke_options,
        )
        lines = _lines(capsys)
        report = ekg_keras.count_flops(small)
        full = ekg_keras.count_flops(model)
        mine = f"ekg_keras: {name} "
        (method_line,) = [x for x in lines if x.startswith(mine)]
        assert f"kept {report.macs / full.macs:.1%} of the FLOPs" in method_line
        assert f"-> {report.macs / 1e6:.2f}M MACs" in method_line
        assert f"-> {report.params / 1e6:.3f}M;" in method_line
        line = lines[-1]
        assert line.startswith("ekg_keras.prune: returned a slim model"), line
        assert f"{report.macs / full.macs:.1%} of the FLOPs" in line
        assert f"-> {report.macs / 1e6:.2f}M MACs" in line
        assert f"-> {report.params / 1e6:.3f}M)" in line


class _SlowClock:
    """Every reading is `step` seconds after the last: any loop looks long."""

    def __init__(self, step):
        self.now, self.step = 0.0, step

    def perf_counter(self):
        self.now += self.step
        return self.now


@pytest.mark.parametrize("name", ["ekg", "sp", "nppm", "lfpc", "sfp"])
def test_every_search_loop_estimates_and_reports_through_prune(
    name, capsys, monkeypatch
):
    """Each method's long loops (EKG's steps, SP's stage EAs under its
    manager, the epochs of NPPM's, LFPC's and soft pruning's training)
    announce an estimate and print progress lines, on a clock where every
    reading is two minutes later."""
    monkeypatch.setattr(progress_lib, "time", _SlowClock(120.0))
    # SP's search needs stages enough for a few stage EAs.
    model = (
        ekg_keras.models.resnet20(input_shape=(8, 8, 3), num_classes=4)
        if name == "sp"
        else two_conv_net(size=8)
    )
    ekg_keras.prune(
        model,
        0.5,
        data=random_classification(64, size=8),
        method=name,
        verbose=1,
        **methods.get(name).method_class.smoke_options,
    )
    lines = _lines(capsys)
    estimates = [line for line in lines if "in all on this machine" in line]
    assert estimates, lines
    reports = [x for x in lines if re.search(r" in [\d.]+ (s|min|h)\b", x)]
    assert reports, lines
