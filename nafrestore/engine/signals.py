"""Stopping a run cleanly: SIGINT / SIGTERM end it at a step boundary, after ``last.pt`` is saved."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from ..errors import NafrestoreError

__all__ = ["StopSignals", "TrainingInterrupted", "resume_command"]


class TrainingInterrupted(NafrestoreError):
    """SIGINT or SIGTERM stopped the run at a step boundary after saving ``last.pt``.

    Attributes:
        exit_code: 130 for SIGINT, 143 for SIGTERM (128 + the signal number, the shell convention).
        run_dir: the run directory; ``resume_command`` resumes it.
        step: the step saved.
        reported: the run's log already showed the message on the console (the CLI then does not repeat it).
    """

    reported = True

    def __init__(self, message: str, *, signum: int, run_dir: Path, step: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)
        self.run_dir = run_dir
        self.step = step
        self.resume_command = resume_command(run_dir)


def resume_command(run_dir: Path) -> str:
    """The shell command that resumes the run in ``run_dir``."""
    return f"nafrestore train --resume {run_dir}"


class StopSignals:
    """While active, SIGINT and SIGTERM request a stop at the next step boundary instead of killing the run.

    Installed only from the main thread of the process that enters it (Python allows handlers nowhere else) and
    restored on exit. A second signal raises KeyboardInterrupt at once. Forked children (DataLoader workers)
    inherit the handler but ignore the signal: the main process shuts them down.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self._pid = os.getpid()

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            return
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        # os.write, not logging or print: both may hold locks that a signal handler must not wait for.
        name = signal.Signals(signum).name
        os.write(2, f"\n{name} received: stopping after this step and saving last.pt (again to abort now)\n".encode())

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._pid = os.getpid()
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
