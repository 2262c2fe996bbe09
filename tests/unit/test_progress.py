"""Progress output: bars in a terminal, a few plain lines in a file or CI log."""
from __future__ import annotations

import io

import pytest

from deepobfuscator import progress as progress_mod
from deepobfuscator.progress import LineProgress, progress_bar


def test_line_progress_prints_closing_line_only(capsys: pytest.CaptureFixture) -> None:
    bar = LineProgress(total=5, desc="pretrain 1/2", unit="batch", leave=False)
    for _ in range(5):
        bar.update(1)
    bar.set_postfix({"L_C": "0.693"})
    bar.close()
    assert capsys.readouterr().err == ""  # a short loop with leave=False says nothing (the epoch line follows)
    for _ in LineProgress(range(3), desc="caching", unit="img"):
        pass
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\r" not in err and err.startswith("caching: 3/3 img in ")


def test_line_progress_prints_periodic_lines_on_long_loops() -> None:
    out = io.StringIO()
    bar = LineProgress(total=4, desc="attack", unit="batch", leave=False, interval=0.0, file=out)
    for _ in range(4):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 5 and lines[1].startswith("attack: 2/4 batch (50%)") and "\r" not in out.getvalue()


def test_progress_bar_picks_lines_outside_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPOBF_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    assert isinstance(progress_bar(total=3), LineProgress)
    monkeypatch.setenv("DEEPOBF_PROGRESS", "bars")
    assert not isinstance(progress_bar(total=3), LineProgress)
    monkeypatch.setenv("DEEPOBF_PROGRESS", "lines")
    assert progress_mod.use_bars() is False
    assert not isinstance(progress_bar(total=3, disable=True), LineProgress)  # disabled: a silent tqdm
