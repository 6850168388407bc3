"""Progress in a log: plain `step i/N, s/it, ETA` lines every few seconds instead of a redrawn bar."""

import io

from rich.console import Console

from lowvram.generate.progress import PLAIN_EVERY_S, StepWatch, rate_text


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_a_log_gets_plain_lines_every_few_seconds_with_rate_and_eta():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    clock = FakeClock()
    with StepWatch(console, 20, clock=clock) as w:
        for _ in range(20):
            clock.t += 2.0  # 2 s a step: a line every PLAIN_EVERY_S / 2 steps, and at the end
            assert w.advance() is False
    lines = buf.getvalue().splitlines()
    assert lines[0] == "denoising: step 3/20, 2.00 s/it, ETA 0:34"
    assert lines[-1] == "denoising: step 20/20, 2.00 s/it"
    assert len(lines) == len(range(3, 20, 3)) + 1  # 20 steps * 2 s / PLAIN_EVERY_S, plus the last
    assert PLAIN_EVERY_S == 5.0 and "\x1b" not in buf.getvalue()


def test_a_cascade_stage_label_shows_in_the_lines():
    buf = io.StringIO()
    clock = FakeClock()
    with StepWatch(Console(file=buf, force_terminal=False), 2, label="stage I", clock=clock) as w:
        clock.t += 10
        w.advance()
        w.label("stage II")
        clock.t += 10
        w.advance()
    assert buf.getvalue().splitlines() == ["stage I: step 1/2, 10.00 s/it, ETA 0:10", "stage II: step 2/2, 10.00 s/it"]


def test_a_terminal_bar_shows_the_rate():
    buf = io.StringIO()
    clock = FakeClock()
    with StepWatch(Console(file=buf, force_terminal=True, width=120), 4, clock=clock) as w:
        for _ in range(4):
            clock.t += 0.25
            w.advance()
    assert "4.00 it/s" in buf.getvalue()
    assert rate_text(12.345) == "12.35 s/it" and rate_text(None) == "-- s/it"


def test_no_console_shows_nothing_and_ctrl_c_is_a_flag():
    with StepWatch(None, 3) as w:
        w._on_sigint(2, None)
        assert w.advance() is True and w.step == 1
