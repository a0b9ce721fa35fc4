"""What a user meets at the terminal: --quiet and --verbose, and the live progress line.

The pseudo-terminal tests need ``pty``, ``fcntl`` and ``termios`` (POSIX) and skip,
saying so, where they are missing.
"""
import io
import os
import re
import select
import struct
import subprocess
import sys
import time
import unicodedata

import numpy as np
import pytest
from PIL import Image

import codec
import hw2
import kmeans
from conftest import HW2, printed_error, run_hw2

ERASE = "\r\033[K"


@pytest.fixture
def noise_png(tmp_path):
    """A 40x30 RGB photo of random colours: ~1200 distinct colours, so every fit iterates."""
    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(1234).integers(0, 256, (30, 40, 3), np.uint8)).save(path)
    return path


def columns_of(text):
    """Terminal columns ``text`` takes, counted independently of hw2 (wide characters: 2)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


# ---------------------------------------------------------------- --quiet and --verbose

@pytest.mark.parametrize("flags", [["--quiet"], ["-q", "-v"]], ids=["quiet", "quiet-wins"])
def test_quiet_prints_only_the_result_line_and_decompress_nothing(flags, noise_png, tmp_path):
    status, stdout, stderr = run_hw2("--compress", noise_png, "--clusters", 4,
                                     "--output", tmp_path / "c.npz", *flags)
    assert (status, stderr) == (0, "")
    printed_error(stdout)
    assert run_hw2("--decompress", tmp_path / "c.npz", "--output", tmp_path / "back.png",
                   *flags) == (0, "", "")
    assert (tmp_path / "back.png").exists()


@pytest.mark.parametrize("model", ["kmeans", "mixture"])
def test_verbose_prints_one_line_per_update_and_the_same_summary(model, noise_png, tmp_path):
    runs = [run_hw2("--compress", noise_png, "--clusters", 4, "--model", model,
                    "--output", tmp_path / "c.npz", *extra) for extra in ([], ["--verbose"])]
    (status, stdout, quiet_err), (verbose_status, _, err) = runs
    assert status == verbose_status == 0
    printed_error(stdout)
    lines = err.splitlines()
    # The stages, in order, each on its own line.
    stages = [line for line in lines if re.match(r"(reading|counting|writing) ", line)]
    assert stages == [f"reading {noise_png}", "counting colours", f"writing {tmp_path / 'c.npz'}"]
    update = re.compile(rf"^fitting {model}: \w+, run \d+, step (\d+)/(\d+), [\d.]+ s$")
    steps = [update.match(line) for line in lines if update.match(line)]
    assert len(steps) >= 2 and all(int(m[1]) <= int(m[2]) for m in steps)
    assert "\r" not in err  # no redrawing when stderr is not a terminal
    # Without --verbose, on a pipe: no progress, only the summary, the same one.
    assert "\r" not in quiet_err
    assert all(line.startswith("hw2: ") for line in quiet_err.splitlines())
    summaries = [re.sub(r"\b[\d.]+ s\b", "", "; ".join(line for line in text.splitlines()
                                                       if line.startswith("hw2: ")))
                 for text in (quiet_err, err)]
    assert summaries[0] == summaries[1] and f"{model}, 4 clusters used, " in summaries[0]


# ---------------------------------------------------------------- the progress line

def P(stage="exact", run=1, n_runs=1, iteration=1, max_iter=300, value=float("nan")):
    return kmeans.Progress(stage, run, n_runs, iteration, max_iter, value)


def test_live_line_is_cut_to_the_terminal_throttled_and_erased_first(monkeypatch, capsys):
    now = [9.0]
    monkeypatch.setattr(hw2.time, "monotonic", lambda: now[0])
    report = hw2.Reporter()
    report.columns = 40
    report.progress("reading /a/rather/long/folder/name/of/photos/IMG_0001.jpg")  # at once
    callback = report.callback("kmeans")
    for iteration, now[0] in zip((1, 2, 3), (10.0, 10.05, 10.25)):
        callback(P("coarse", 2, 20, iteration, 300))  # the second within 0.1 s: skipped
    report.say("hw2: a note")
    drawn = capsys.readouterr().err.split(ERASE)
    assert drawn[0] == ""
    assert drawn[1] == "reading /a/rather/long/folder/name/of/p"  # 39 columns
    assert drawn[2] == "fitting kmeans: coarse, run 2, step 1/3"
    assert drawn[3] == "fitting kmeans: coarse, run 2, step 3/3"
    assert drawn[4] == "hw2: a note\n"  # the live line erased before it
    assert len(drawn) == 5


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_cleared_before_an_error(noise_png, tmp_path, monkeypatch):
    stream = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", stream)

    def full_disk(*args, **kwargs):
        raise codec.CodecError("c.npz: cannot write (No space left on device)")
    monkeypatch.setattr(codec, "write_codebook", full_disk)
    assert hw2.main(["--compress", str(noise_png), "--clusters", "4",
                     "--output", str(tmp_path / "c.npz")]) == 1
    text = stream.getvalue()
    assert text.startswith(ERASE + "reading ") and "fitting kmeans" in text
    last = text.rsplit(ERASE, 1)[1]  # the live line erased, then the error alone
    assert last == "hw2: error: c.npz: cannot write (No space left on device)\n"


def test_no_progress_callback_when_nothing_shows_it():
    # A callback costs the fits work: none is passed when stderr is not a terminal.
    report = hw2.Reporter()
    assert report.callback("kmeans") is None
    report.verbose = True
    assert report.callback("kmeans") is not None


def run_on_terminal(argv, columns, timeout=60, stdout_too=False):
    """Run hw2.py with stderr (and stdout, if asked) on a pseudo-terminal ``columns`` wide.

    Returns
    -------
    status : int
    stdout : str
    terminal : str
        Everything written on the terminal.
    """
    pty = pytest.importorskip("pty", reason="opens a pseudo-terminal (pty, POSIX)")
    fcntl = pytest.importorskip("fcntl", reason="sets the terminal's width (fcntl, POSIX)")
    termios = pytest.importorskip("termios", reason="sets the terminal's width (termios, POSIX)")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    try:
        child = subprocess.Popen([sys.executable, str(HW2), *map(str, argv)], env=env,
                                 stdin=subprocess.DEVNULL,
                                 stdout=slave if stdout_too else subprocess.PIPE, stderr=slave)
    finally:
        os.close(slave)
    terminal = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if not ready:
            if child.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # Linux: EIO once the child has closed the terminal
            break
        if not chunk:
            break
        terminal += chunk
    os.close(master)
    stdout = child.communicate(timeout=timeout)[0]
    return child.returncode, (stdout or b"").decode(), terminal.decode()


@pytest.mark.parametrize("columns", [50, 80])
def test_progress_on_a_terminal_fits_names_stages_and_is_cleared(columns, noise_png, tmp_path):
    out = tmp_path / "c.npz"
    status, _, text = run_on_terminal(["--compress", noise_png, "--clusters", "4",
                                       "--output", out], columns, stdout_too=True)
    assert status == 0
    drawn = text.split(ERASE)
    assert drawn[0] == ""
    # Every redraw fits on one line of the terminal: nothing wraps, nothing is left behind.
    for line in drawn[1:-1]:
        assert "\n" not in line and columns_of(line) < columns, line
    stages = [line.split(" ")[0] for line in drawn[1:-1]]
    assert stages[:2] == ["reading", "counting"] and "writing" in stages
    assert any(line.startswith("fitting kmeans") for line in drawn[1:-1])
    # The live line is erased before the result line, which starts on a clean line;
    # only the summary follows.
    assert re.fullmatch(r"Reconstruction error is \S+\r\nhw2: wrote [^\r]+\r\n", drawn[-1])


def test_a_long_run_shows_no_live_line_with_stdout_off_the_terminal(noise_png, tmp_path):
    # stdout to a pipe: the result line is there alone, stderr's terminal has the rest.
    status, stdout, text = run_on_terminal(["--compress", noise_png, "--clusters", "4",
                                            "--output", tmp_path / "c.npz"], 80)
    assert status == 0
    printed_error(stdout)
    assert text.split(ERASE)[-1].startswith("hw2: wrote ")
