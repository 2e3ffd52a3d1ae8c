"""``CompileProgress``: the compile step running now, on one self-erasing stderr line.

It is the pipeline's progress hook (``lpjit.pipeline.Progress``: called as each step starts and
ends).  Nothing is shown for a compile that finishes within ``delay`` seconds; after that a
background thread redraws ``lpjit: compiling [4] lower_program_to_llvm  2.3 s`` every
``interval`` seconds until the ``with`` block ends, then erases the line.
"""

from __future__ import annotations

import threading
import time
from typing import TextIO

CLEAR_LINE = "\r\033[K"


class CompileProgress:
    """Progress display for one or more compiles inside a ``with`` block."""

    def __init__(self, stream: TextIO, label: str = "compiling", delay: float = 0.5,
                 interval: float = 0.1) -> None:
        self.stream, self.label = stream, label
        self.delay, self.interval = delay, interval
        self.step = ""
        self.shown = False
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lpjit-progress", daemon=True)

    def __call__(self, name: str, index: int, record: object) -> None:
        """The pipeline hook: remember the step that starts."""
        if record is None:
            self.step = f"[{index + 1}] {name}"

    def __enter__(self) -> None:
        self._start = time.monotonic()
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.shown:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()

    def line(self) -> str:
        """The text shown now."""
        elapsed = time.monotonic() - self._start
        return f"lpjit: {self.label} {self.step}  {elapsed:.1f} s"

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if time.monotonic() - self._start >= self.delay and self.step:
                self.stream.write(CLEAR_LINE + self.line())
                self.stream.flush()
                self.shown = True
