"""CPU seconds spent by each part of a benchmark, read from /proc (Linux only).

A benchmark on a shared two-core host is limited by CPU time, not by wall time:
these counts say which process, and which PostgreSQL backend, spent it.
"""

import os
import threading
from collections import Counter
from collections.abc import Callable

TICKS = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float:
    """Return the user and system CPU seconds process `pid` has used (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


OTHERS = "the rest of the host"


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def descendants(pid: int) -> list[int]:
    """Return the pids of every process below `pid`."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def backends(database: str) -> list[int]:
    """Return the pids of the local server's backends connected to `database`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                words = cmdline.read().split()
        except OSError:
            continue
        # A backend names itself "postgres: [cluster:] user database client state".
        if words[:1] == [b"postgres:"] and database.encode() in words[1:4]:
            found.append(int(entry))
    return found


class CpuMeter:
    """CPU seconds by part while it runs, read every POLL_SECONDS from /proc.

    `parts` maps a name to a function returning that part's pids now, and every
    other process on the host is counted as OTHERS (PostgreSQL's WAL writer and
    autovacuum, the broker, the kernel's threads, other users' work): a process
    that starts while the meter runs counts from zero, and one that ends counts
    what it had used at the last reading (so a short-lived connection loses at
    most one interval of its time).
    """

    POLL_SECONDS = 0.1

    def __init__(self, parts: dict[str, Callable[[], list[int]]]) -> None:
        self.parts = parts
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        for pids in self._pids().values():
            for pid in pids:
                self.first[pid] = process_seconds(pid)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._read()

    def spent(self) -> Counter[str]:
        spent: Counter[str] = Counter()
        for pid, (name, seconds) in self.last.items():
            spent[name] += seconds - self.first.get(pid, 0.0)
        return spent

    def report(self, *, count: int, per: int, unit: str) -> str:
        """Return the seconds of each part, scaled to `per` of the `count` units."""
        spent, scale = self.spent(), per / count
        lines = [f"CPU seconds per {per:,} {unit}:"]
        for name, seconds in spent.most_common():
            lines.append(f"  {name:<22} {seconds * scale:6.2f}")
        lines.append(f"  {'in all':<22} {sum(spent.values()) * scale:6.2f}")
        return "\n".join(lines)

    def _pids(self) -> dict[str, list[int]]:
        found = {name: part() for name, part in self.parts.items()}
        named = {pid for pids in found.values() for pid in pids}
        found[OTHERS] = [pid for pid in all_pids() if pid not in named]
        return found

    def _read(self) -> None:
        for name, pids in self._pids().items():
            for pid in pids:
                seconds = process_seconds(pid)
                if seconds:
                    self.last[pid] = (name, seconds)

    def _run(self) -> None:
        while not self._stopping.wait(self.POLL_SECONDS):
            self._read()
