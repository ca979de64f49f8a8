"""Write a benchmark's row into docs/benchmarks.md, replacing its previous row."""

from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Each row is written by the benchmark named in its command, re-measured on every\n"
    "run. The figure is the number the issue's goal is about; the baseline is measured\n"
    "in the same run on the same machine, so the ratio holds on a noisy host.\n\n"
    "| name | figure | baseline | command | date |\n"
    "| --- | --- | --- | --- | --- |\n"
)


def bench_row_write(*, name: str, figure: str, baseline: str, command: str) -> None:
    """Insert or replace the row called `name` in docs/benchmarks.md."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    day = datetime.now(tz=UTC).date().isoformat()
    row = f"| {name} | {figure} | {baseline} | `{command}` | {day} |"

    lines = text.splitlines()
    mine = [i for i, line in enumerate(lines) if line.startswith(f"| {name} |")]
    if mine:
        # Replaced where it stands, so the table keeps its order between runs.
        lines[mine[0]] = row
        lines = [line for i, line in enumerate(lines) if i not in mine[1:]]
    else:
        lines.append(row)
    BENCHMARKS_MD.write_text("\n".join(lines) + "\n")
