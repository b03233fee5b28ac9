"""``perceiver plot``: curves from metrics.csv files in Lightning's CSVLogger layout, and its refusals."""

from __future__ import annotations

import sys

import pytest

from perceiver.cli import main
from perceiver.commands.plot import read_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEADER = "epoch,step,tok/s,train_loss,val_bpb,val_loss\n"


def write_run(root, name, versions):
    """A training output directory whose logs/version_N/metrics.csv hold ``versions`` (lists of CSV lines)."""
    run = root / name
    for index, lines in enumerate(versions):
        directory = run / "logs" / f"version_{index}"
        directory.mkdir(parents=True)
        (directory / "metrics.csv").write_text(HEADER + "".join(line + "\n" for line in lines))
    return run


FIRST = ["0,4,6000.0,5.5,,", "0,9,6100.0,5.2,,", "0,9,,,7.2,5.0"]
RESUMED = ["0,14,6000.0,4.8,,", "0,19,6000.0,4.5,,", "0,19,,,6.2,4.3"]


@pytest.fixture
def cli(capsys, monkeypatch):
    def run(*args):
        monkeypatch.setenv("COLUMNS", "200")
        try:
            main(list(args))
            code = 0
        except SystemExit as exit:
            code = exit.code or 0
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


def test_curves_join_the_versions_of_a_resumed_run_by_optimizer_step(tmp_path):
    curves = read_curves(write_run(tmp_path, "a", [FIRST, RESUMED]))
    assert curves["train_loss"] == {5: 5.5, 10: 5.2, 15: 4.8, 20: 4.5}  # Lightning's step n - 1 is step n here
    assert curves["val_loss"] == {10: 5.0, 20: 4.3} and curves["val_bpb"] == {10: 7.2, 20: 6.2}


def test_plot_writes_a_png_into_the_first_run_and_says_where(tmp_path, cli):
    first = write_run(tmp_path, "a", [FIRST, RESUMED])
    second = write_run(tmp_path, "b", [FIRST])
    code, out, err = cli("plot", str(first), str(second))
    assert code == 0, err
    path = first / "curves.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 10_000
    assert f"to {path}" in " ".join(out.split()) and "loss, bpb" in out
    code, _, err = cli("plot", str(first))  # its own earlier plot is replaced
    assert code == 0, err
    target = tmp_path / "chosen.png"
    code, out, err = cli("plot", str(second), "--output", str(target))
    assert code == 0 and target.read_bytes()[:8] == PNG_SIGNATURE and not (second / "curves.png").exists()


def test_plot_never_replaces_a_file_it_did_not_write(tmp_path, cli):
    run = write_run(tmp_path, "a", [FIRST])
    (run / "curves.png").write_bytes(b"the user's own picture")
    code, _, err = cli("plot", str(run))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--output" in err
    assert (run / "curves.png").read_bytes() == b"the user's own picture"


def test_a_run_without_metrics_is_one_line(tmp_path, cli):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    code, _, err = cli("plot", str(tmp_path / "empty"))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "no training metrics in" in err
    code, _, err = cli("plot", str(tmp_path / "missing"))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "does not exist" in err
    assert not (tmp_path / "empty" / "curves.png").exists()


def test_without_matplotlib_one_line_names_the_extra(tmp_path, cli, monkeypatch):
    run = write_run(tmp_path, "a", [FIRST])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib... raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, _, err = cli("plot", str(run))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "pip install 'perceiver[plot]'" in err
    assert not (run / "curves.png").exists()
