"""Every command refuses abbreviated flags: `--epoch 3` must not silently mean `--epochs 3`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from pvae.bench.train import main as bench_train_main
from pvae.clients.cli import main as client_main
from pvae.export.cli import main as export_main
from pvae.serving.server import main as serve_main
from pvae.training.evaluate import main as eval_main
from pvae.training.study.report import main as report_main
from pvae.training.train import main as train_main

CASES: list[tuple[str, Callable[[Sequence[str] | None], int], list[str], str]] = [
    ("pvae-train", train_main, ["--out", "/nonexistent/pvae-test-run", "--epoch", "3"], "--epoch"),
    ("pvae-eval", eval_main, ["--max-sample", "5"], "--max-sample"),
    ("pvae-bench-train", bench_train_main, ["--real-epoch", "2"], "--real-epoch"),
    ("pvae-report", report_main, ["--qui"], "--qui"),
    ("pvae-export", export_main, ["model.pt", "--format", "onnx"], "--format"),
    ("pvae-serve", serve_main, ["--metrics-p", "0"], "--metrics-p"),
    ("pvae-client stream", client_main, ["stream", "--source", "synthetic", "--fram", "3"], "--fram"),
]


@pytest.mark.parametrize(("name", "entry", "argv", "flag"), CASES, ids=[c[0] for c in CASES])
def test_abbreviated_flags_are_refused(name: str, entry: Callable[[Sequence[str] | None], int], argv: list[str],
                                       flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        entry(argv)
    assert exited.value.code == 2, name
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and flag in err, err


def test_train_help_shows_the_chosen_presets_values(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train_main(["--help"])
    quick = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in quick
    assert "Passes over the training set. (default: 15)" in quick
    with pytest.raises(SystemExit):
        train_main(["--preset", "default-model", "--help"])
    default_model = " ".join(capsys.readouterr().out.split())
    assert "Passes over the training set. (default: 300)" in default_model
    assert "(default: exact)" in default_model and "(default: paper)" in default_model
