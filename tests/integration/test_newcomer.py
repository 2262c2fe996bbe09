"""What a newcomer sees first: `deepobf` alone, the ends of `baseline` and `attack` in a log, the README's links."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from deepobfuscator.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]
TINY_ATTACK = ["--attackers", "linear,oracle,constant,mirror", "--epochs", "1", "--reid-images", "4",
               "--grid-images", "2", "--bootstrap", "10", "--no-progress", "--workers", "1"]


def _commands() -> list[str]:
    return [name.split()[1] for name, _ in _all_parsers() if len(name.split()) == 2]


def test_deepobf_alone_lists_every_command_and_the_quick_start(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in _commands():
        assert re.search(rf"^\s+{re.escape(name)}\b", out, re.M), name  # each command on a line of its own
    for step in ("deepobf train --preset demo", "deepobf attack", "deepobf inspect"):
        assert step in out
    assert main(["data"]) == 0  # a command group without its subcommand shows its help, not a usage error


def _all_parsers(parser=None, name: str = "deepobf") -> list[tuple[str, object]]:
    """Every parser of the command line with its full name, sub-commands of command groups included."""
    parser = parser or build_parser()
    out = [(name, parser)]
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for sub_name, sub in action.choices.items():
                out += _all_parsers(sub, f"{name} {sub_name}")
    return out


@pytest.mark.parametrize("command, hint", [("train", "rerun with --resume"), ("attack", "rerun the same command"),
                                           ("sweep", "rerun the same command")])
def test_an_interrupted_command_says_how_to_continue(command: str, hint: str, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    """Ctrl-C names the way that command resumes (attack and sweep have no --resume: they resume by default)."""
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    parser = build_parser()
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            action.choices[command].set_defaults(handler=interrupted)
    monkeypatch.setattr("deepobfuscator.cli.build_parser", lambda: parser)
    assert main([command, "RUN"] if command != "train" else [command]) == 130
    assert hint in capsys.readouterr().err


def test_every_command_help_renders() -> None:
    """``--help`` of every command and sub-command formats (a stray ``%`` in one help string broke
    ``deepobf attack --help`` once)."""
    failures = []
    for name, parser in _all_parsers():
        try:
            text = parser.format_help()
        except Exception as exc:  # noqa: BLE001 - collect every failure with its command
            failures.append(f"{name}: {exc}")
            continue
        assert "usage:" in text, name
    assert not failures, failures


def test_baseline_and_attack_end_with_the_answer_and_the_next_commands(trained_run: Path, tmp_path: Path,
                                                                       celeba_root: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "enc"
    assert main(["baseline", "encoder", "--preset", "tiny", "--data", str(celeba_root), "--out", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"Run directory: {out}" in text and f"deepobf attack {out}" in text and f"deepobf inspect {out}" in text
    assert "AC_acc" not in text and "AR_msssim" not in text  # no raw co-trained numbers
    assert all(line.startswith("Training diagnostics, not privacy results") for line in text.splitlines()
               if "AC " in line or "AR " in line)
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["attack", str(run), *TINY_ATTACK]) == 0
    text = capsys.readouterr().out
    assert text.index("## Verdict") < text.index("## Utility")  # the answer first, the tables after
    verdict = text[text.index("## Verdict"):text.index("## Utility")]
    assert "Male" in verdict and "above it" in verdict and "Reconstruction" in verdict
    assert f"deepobf inspect {run}" in text


def _links(markdown: Path) -> list[str]:
    return [m.group(1) for m in re.finditer(r"\]\(([^)\s]+)\)", markdown.read_text())]


@pytest.mark.parametrize("page", ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))])
def test_every_link_of_the_readme_and_docs_resolves(page: str) -> None:
    source = REPO / page
    for link in _links(source):
        if link.startswith(("http://", "https://", "mailto:", "#")):
            continue
        target = (source.parent / link.split("#", 1)[0]).resolve()
        assert target.exists(), f"{page}: link {link} -> {target} does not exist"


def test_the_readme_is_short_and_leads_with_the_quick_start() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 130
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[:3] == ["## Quick start", "## What it protects, measured", "## Commands"]


def test_the_command_line_loads_without_the_heavy_optional_libraries() -> None:
    """`deepobf --help` should answer at once: scikit-learn (about 1 s), plotting and the study database load only in
    the commands that use them."""
    import subprocess
    import sys

    code = ("import sys, deepobfuscator.cli; heavy = [m for m in ('sklearn', 'matplotlib', 'optuna', 'onnxruntime') "
            "if m in sys.modules]; print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"importing the CLI loads {done.stdout.strip()}"
