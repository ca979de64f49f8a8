"""The benchmarks' CPU meter counts the time a process spends, by part."""

import subprocess
import sys

from bench.cpu import OTHERS, CpuMeter, descendants

BUSY = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"


def test_a_busy_child_is_counted_in_its_part_and_nowhere_else():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        meter = CpuMeter({"busy": lambda: [*descendants(child.pid)]})
        meter.start()
        # A grandchild that starts after the meter and ends before it stops.
        subprocess.run([sys.executable, "-c", BUSY], check=True)
        meter.stop()
    finally:
        child.kill()
        child.wait()

    spent = meter.spent()
    # The grandchild is this process's child, not `child`'s: it is among the rest.
    assert spent["busy"] < 0.1
    assert spent[OTHERS] >= 0.2


def test_a_process_that_starts_during_the_meter_counts_from_zero():
    started: list[int] = []
    meter = CpuMeter({"late": lambda: started})
    meter.start()
    late = subprocess.Popen([sys.executable, "-c", f"{BUSY}\ntime.sleep(30)"])
    started.append(late.pid)
    try:
        subprocess.run(
            [sys.executable, "-c", "import time; time.sleep(1.0)"], check=True
        )
        meter.stop()
    finally:
        late.kill()
        late.wait()

    assert meter.spent()["late"] >= 0.3
    report = meter.report(count=2, per=100, unit="events")
    assert "late" in report
    assert "in all" in report
