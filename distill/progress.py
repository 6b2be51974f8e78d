"""One progress display per phase (members, harvest, students): done of total, what runs now, failures, the
best val error so far, and the time left.

On a terminal it is one line rewritten in place, with what runs now; in a log (CI, `ray job logs`, a file) it
prints a line at every tenth of the phase and at its end, so that a phase of any length adds about ten lines.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Progress:
    def __init__(self, phase: str, total: int, clock: Callable[[], float] = time.monotonic, tty: bool | None = None):
        self.phase, self.total, self.clock, self.tty = phase, total, clock, tty
        self.started, self.printed, self.last = clock(), -1, ""

    def update(self, done: int, running: str = "", failed: int = 0, best: float | None = None) -> None:
        """Show the phase's state: `done` of total finished (failed among them), `running` what trains now
        ("2 running", "ecnn[3] epoch 2/5"), `best` the lowest val error so far."""
        tty = sys.stdout.isatty() if self.tty is None else self.tty
        parts = [f"{self.phase}: {done}/{self.total} done"]
        # What runs now changes between a log's lines (they come as one finishes): on a terminal only.
        parts += [running] if running and tty else []
        parts += [f"{failed} failed"] if failed else []
        parts += [f"best val error {best:.4f}"] if best is not None else []
        if 0 < done < self.total:  # the mean time per finished one, times those left
            parts.append(f"about {duration((self.clock() - self.started) / done * (self.total - done))} left")
        elif done >= self.total:
            parts.append(f"in {duration(self.clock() - self.started)}")
        line = ", ".join(parts)
        if tty:
            if line != self.last:
                print(f"\r\033[K{line}", end="\n" if done >= self.total else "", flush=True)
        elif (step := 10 * done // max(self.total, 1)) > self.printed:  # a line per tenth of the way
            self.printed = step
            print(line, flush=True)
        self.last = line


def duration(seconds: float) -> str:
    """42 s, 3 min, 1 h 20 min: what a person reads at a glance."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds // 3600:.0f} h {seconds % 3600 / 60:.0f} min"
