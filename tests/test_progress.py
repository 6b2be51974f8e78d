"""The progress display: in a log a phase of any length prints about ten lines; on a terminal one line is
rewritten in place; the time left is the mean time per finished item times those left."""

from distill import progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_long_phase_prints_about_ten_lines_in_a_log(capsys):
    clock = Clock()
    shown = progress.Progress("students", 48, clock=clock, tty=False)
    for done in range(49):
        clock.now = 10.0 * done
        shown.update(done, "2 running", failed=1 if done > 5 else 0, best=0.03 if done else None)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 11  # the start, then every tenth of the way
    assert lines[0] == "students: 0/48 done"  # what runs now: on a terminal only
    # After 24 of 48 in 240 s: 24 more at 10 s each.
    assert lines[5] == "students: 24/48 done, 1 failed, best val error 0.0300, about 4 min left"
    assert lines[-1] == "students: 48/48 done, 1 failed, best val error 0.0300, in 8 min"


def test_on_a_terminal_one_line_is_rewritten(capsys):
    shown = progress.Progress("members", 3, clock=Clock(), tty=True)
    for done in range(4):
        shown.update(done, f"ecnn[{done}] epoch 1/2" if done < 3 else "")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("members: 3/3 done, in 0 s\n") and "ecnn[1] epoch 1/2" in out
    assert out.count("\r\033[K") == 4


def test_durations_read_at_a_glance():
    assert [progress.duration(s) for s in (42, 200, 5000, 3 * 3600 + 20 * 60)] == ["42 s", "3 min", "83 min",
                                                                                     "3 h 20 min"]
