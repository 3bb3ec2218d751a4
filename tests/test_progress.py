import io
import logging

from archiver.pipeline.progress import Progress
from tests.clocks import FakeClock


def test_log_lines_when_not_on_a_terminal(caplog):
    clock = FakeClock(0.0)
    progress = Progress(stream=io.StringIO(), clock=clock, log_every=30)
    progress.plan(3600)
    progress.plan(3 * 3600)
    with caplog.at_level(logging.INFO, logger="archiver.pipeline.progress"):
        clock.now = 10
        progress.advance(3600, 5000)  # before log_every: silent
        clock.now = 40
        progress.advance(3600, 5000)
    assert [r.getMessage() for r in caplog.records] == [
        "progress: 50% of the range (2.0h of 4.0h of data), 250 points/s, ETA 40s"
    ]


def test_bar_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress = Progress(stream=stream)
    progress.plan(10)
    progress.advance(5, 50)
    progress.close()
    assert "data exported:  50%" in stream.getvalue()
