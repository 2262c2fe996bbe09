"""Progress reporting for long loops: tqdm bars in a terminal, a few plain lines anywhere else.

A bar redraws itself with carriage returns many times a second; written to a file or a CI log
that leaves hundreds of frames per epoch. Outside a terminal :func:`progress_bar` therefore
returns a :class:`LineProgress`, which prints nothing while a loop is short, one line every
``interval`` seconds while it is long, and one closing line (when ``leave`` is set or it printed
before).
"""
from __future__ import annotations

import os
import sys
import time
from typing import IO, Any, Iterable, Iterator

from tqdm import tqdm

LINE_INTERVAL_S = 60.0


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def use_bars(stream: IO[str] | None = None) -> bool:
    """Whether progress goes to a terminal (bars) or to a file/log (lines); ``DEEPOBF_PROGRESS=bars|lines`` forces one."""
    forced = os.environ.get("DEEPOBF_PROGRESS", "").strip().lower()
    if forced in ("bars", "lines"):
        return forced == "bars"
    return _is_terminal(stream or sys.stderr)


class LineProgress:
    """The part of tqdm's interface the package uses, printing plain lines instead of a redrawn bar."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, leave: bool = True, interval: float = LINE_INTERVAL_S,
                 file: IO[str] | None = None) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.n, self.leave = total, desc, unit, initial, leave
        self.interval, self.file = interval, file
        self.postfix = ""
        self.started = self.last_line = time.monotonic()
        self.printed = False
        self.closed = False

    def _line(self, final: bool) -> None:
        elapsed = time.monotonic() - self.started
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total and not final else ""
        tail = f" [{self.postfix}]" if self.postfix else ""
        label = f"{self.desc}: " if self.desc else ""
        print(f"{label}{count} {self.unit}{pct} in {elapsed:.1f}s{tail}", file=self.file or sys.stderr, flush=True)
        self.printed, self.last_line = True, time.monotonic()

    def update(self, n: int = 1) -> None:
        """Advance by ``n``; print a line if ``interval`` seconds passed since the last one."""
        self.n += n
        if time.monotonic() - self.last_line >= self.interval:
            self._line(final=False)

    def set_postfix(self, values: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Remember the latest loss values for the next line."""
        values = {**(values or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str) -> None:
        """Rename the loop."""
        self.desc = desc

    def close(self) -> None:
        """Print the closing line where one is due."""
        if not self.closed and (self.leave or self.printed):
            self._line(final=True)
        self.closed = True

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LineProgress without an iterable cannot be iterated")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, leave: bool = True, disable: bool = False) -> Any:
    """A tqdm bar in a terminal, a :class:`LineProgress` elsewhere, a silent one when ``disable``."""
    if disable or use_bars():
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave, disable=disable)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave)


def progress_write(message: str) -> None:
    """Print a line without breaking a bar that is being drawn."""
    tqdm.write(message)
