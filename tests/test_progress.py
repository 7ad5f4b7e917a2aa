"""Progress bars off a terminal (a log file) print plain lines, not carriage-return redraws."""

import io

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

from eef.progress import Progress, tqdm


def test_rich_progress_prints_plain_lines_to_a_file():
    out = io.StringIO()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("win {task.fields[win]:.1%}"))
    with Progress(*columns, console=Console(file=out), every=3600) as bar:
        assert bar.plain
        job = bar.add_task("expert:oracle on webshop", total=40, win=0.0)
        for i in range(40):
            bar.update(job, advance=1, win=(i + 1) / 40)
    lines = out.getvalue().splitlines()
    # the start and the end; nothing in between within `every` seconds
    assert lines == ["expert:oracle on webshop 0/40 win 0.0%",
                     "expert:oracle on webshop 40/40 win 100.0%"]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_rich_progress_logs_every_interval_and_unfinished_tasks_at_stop():
    out = io.StringIO()
    with Progress(MofNCompleteColumn(), console=Console(file=out), every=0) as bar:
        job = bar.add_task("x", total=10)
        for _ in range(3):
            bar.advance(job)
    assert out.getvalue().splitlines() == ["0/10", "1/10", "2/10", "3/10"]
    quiet = io.StringIO()
    with Progress(MofNCompleteColumn(), console=Console(file=quiet), disable=True) as bar:
        bar.update(bar.add_task("x", total=2), advance=2)
    assert quiet.getvalue() == ""


def test_tqdm_prints_plain_lines_to_a_file():
    out = io.StringIO()
    bar = tqdm(total=200, desc="train", file=out, every=3600)
    for i in range(200):
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}")  # refreshes: rate-limited off a terminal
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 2 and lines[0].startswith("train: 0/200 (0%)")
    assert lines[1].startswith("train: 200/200 (100%)") and lines[1].endswith("loss=0.005]")
    gone = io.StringIO()
    for _ in tqdm(range(3), file=gone, disable=True):
        pass
    assert gone.getvalue() == ""
