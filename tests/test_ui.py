"""What a user meets at the terminal: dashes, seeds, quiet/verbose, progress, notes, summaries."""
import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import unicodedata

import numpy as np
import pytest
from PIL import Image

import codec
import hw2
import kmeans

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HW2 = os.path.join(ROOT, "hw2.py")
ROCKET = os.path.join(ROOT, "samples", "rocket.jpg")
RESULT_LINE = re.compile(r"^Reconstruction error is \S+\n$")
ERASE = "\r\033[K"


@pytest.fixture
def noise_png(tmp_path):
    """A 40x30 RGB photo of random colours: ~1200 distinct colours, so every fit iterates."""
    rng = np.random.default_rng(1234)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def three_colour_png(tmp_path):
    """A 6x4 RGB image with exactly three distinct colours."""
    pixels = np.zeros((4, 6, 3), dtype=np.uint8)
    pixels[:, 2:4] = (200, 30, 40)
    pixels[:, 4:] = (10, 220, 90)
    path = tmp_path / "three.png"
    Image.fromarray(pixels).save(path)
    return path


def load_codebook(path):
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def compress(image, out, *extra):
    return hw2.main(["--compress", str(image), "--output", str(out), *extra])


def columns_of(text):
    """Terminal columns ``text`` takes, counted independently of hw2 (wide characters: 2)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


# --- pasted dashes ---------------------------------------------------------

@pytest.mark.parametrize("pasted, expected", [
    (["\u2013compress", "a.jpg"], ["--compress", "a.jpg"]),          # en dash
    (["\u2014output", "c.npz"], ["--output", "c.npz"]),              # em dash
    (["\u2014output=c.npz"], ["--output=c.npz"]),
    (["\u2013-clusters", "5"], ["--clusters", "5"]),                 # en dash then hyphen
    (["\u2013v"], ["--v"]),                                          # argparse expands --v
])
def test_pasted_dashes_become_double_hyphens(pasted, expected):
    assert hw2.normalize_dashes(pasted) == expected


@pytest.mark.parametrize("argv", [
    ["--seed", "-1"],                  # a negative number
    ["--seed", "\u22121"],             # a negative number with a minus sign
    ["--compress", "-photo.jpg"],      # a file name starting with a hyphen
    ["--compress", "\u2013photo.jpg"], # ... or with an en dash: not a flag name
    ["--compress", "\u2013 draft"],
    ["--", "\u2013compress"],          # after "--" nothing is an option
    ["-q", "--output", "c.npz"],       # ASCII options are already fine
])
def test_other_arguments_are_left_alone(argv):
    assert hw2.normalize_dashes(argv) == argv


def test_pasted_command_line_compresses(noise_png, tmp_path, capsys):
    out = tmp_path / "pasted.npz"
    status = hw2.main(["\u2013compress", str(noise_png), "\u2014output", str(out),
                       "\u2013clusters", "3", "\u2013quiet"])
    captured = capsys.readouterr()
    assert status == 0
    assert RESULT_LINE.match(captured.out)
    assert len(load_codebook(out)["means"]) == 3


# --- --seed ----------------------------------------------------------------

def test_same_seed_gives_identical_codebooks(noise_png, tmp_path):
    books = []
    for name in ("a.npz", "b.npz"):
        assert compress(noise_png, tmp_path / name, "--clusters", "6", "--seed", "7", "-q") == 0
        books.append(load_codebook(tmp_path / name))
    for key in ("assignments", "means", "img_shape"):
        np.testing.assert_array_equal(books[0][key], books[1][key])


def test_runs_without_seed_are_deterministic_and_use_seed_0(noise_png, tmp_path):
    for name, extra in (("a.npz", []), ("b.npz", []), ("zero.npz", ["--seed", "0"])):
        assert compress(noise_png, tmp_path / name, "--clusters", "6", "-q", *extra) == 0
    a, b, zero = (load_codebook(tmp_path / name) for name in ("a.npz", "b.npz", "zero.npz"))
    np.testing.assert_array_equal(a["means"], b["means"])
    np.testing.assert_array_equal(a["assignments"], b["assignments"])
    np.testing.assert_array_equal(a["means"], zero["means"])


def test_seed_reaches_the_fit(noise_png, tmp_path):
    # Random noise has many near-equal local optima: if --seed were ignored,
    # every seed would give the same codebook.
    means = []
    for seed in range(4):
        out = tmp_path / f"s{seed}.npz"
        assert compress(noise_png, out, "--clusters", "6", "--seed", str(seed), "-q") == 0
        means.append(load_codebook(out)["means"])
    assert any(not np.array_equal(means[0], other) for other in means[1:])


# --- --quiet and --verbose -------------------------------------------------

def test_quiet_compress_prints_only_the_result_line(noise_png, tmp_path, capsys):
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4", "--quiet") == 0
    captured = capsys.readouterr()
    assert RESULT_LINE.match(captured.out)
    assert captured.err == ""


def test_quiet_decompress_prints_nothing(noise_png, tmp_path, capsys):
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4", "-q") == 0
    capsys.readouterr()
    assert hw2.main(["--decompress", str(tmp_path / "c.npz"),
                     "--output", str(tmp_path / "back.png"), "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert (tmp_path / "back.png").exists()


def test_quiet_wins_over_verbose(noise_png, tmp_path, capsys):
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4", "-q", "-v") == 0
    captured = capsys.readouterr()
    assert RESULT_LINE.match(captured.out) and captured.err == ""


@pytest.mark.parametrize("model", ["kmeans", "mixture"])
def test_verbose_prints_one_line_per_update(model, noise_png, tmp_path, capsys):
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4", "--model", model,
                    "--verbose") == 0
    captured = capsys.readouterr()
    assert RESULT_LINE.match(captured.out)
    lines = captured.err.splitlines()
    # The stages, in order, each on its own line.
    stages = [line for line in lines if re.match(r"(reading|counting|writing) ", line)]
    assert stages == [f"reading {tmp_path / 'noise.png'}", "counting colours",
                      f"writing {tmp_path / 'c.npz'}"]
    update = re.compile(rf"^fitting {model}: \w+, run \d+, step (\d+)/(\d+), [\d.]+ s$")
    steps = [update.match(line) for line in lines if update.match(line)]
    assert len(steps) >= 2 and all(int(m[1]) <= int(m[2]) for m in steps)
    assert "\r" not in captured.err  # no redrawing when stderr is not a terminal
    assert lines[-1].startswith("hw2: wrote ")


def test_default_on_a_pipe_prints_no_progress(noise_png, tmp_path, capsys):
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4") == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert all(line.startswith("hw2: ") for line in err.splitlines())
    assert "reading" not in err and "fitting" not in err


# --- the summaries ---------------------------------------------------------

def summary_of(err):
    """The one summary line of stderr (notes aside)."""
    lines = [line for line in err.splitlines() if not line.startswith("hw2: note: ")]
    assert len(lines) == 1 and lines[0].startswith("hw2: wrote "), err
    return lines[0]


def test_compress_summary_names_output_sizes_clusters_and_convergence(noise_png, tmp_path,
                                                                       capsys):
    out = tmp_path / "codebook.npz"
    assert compress(noise_png, out, "--clusters", "5") == 0
    summary = summary_of(capsys.readouterr().err)
    out_size, in_size = os.path.getsize(out), os.path.getsize(noise_png)
    assert f"wrote {out}, {out_size:,} bytes ({round(100 * out_size / in_size)}% of the " \
           "input)" in summary
    assert "kmeans, 5 clusters used, " in summary
    assert re.search(r"\b\d+ iterations?(, converged)?; \d+\.\d\d s$", summary)


@pytest.mark.parametrize("model", ["kmeans", "mixture"])
def test_summary_is_the_same_with_and_without_progress(model, noise_png, tmp_path, capsys):
    summaries = []
    for extra in ([], ["--verbose"]):
        assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4", "--model", model,
                        *extra) == 0
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("hw2: ")]
        summaries.append(re.sub(r"\b[\d.]+ s\b", "", "; ".join(lines)))
    assert summaries[0] == summaries[1]
    assert f"{model}, 4 clusters used, " in summaries[0]


def test_summary_says_when_every_colour_is_kept(three_colour_png, tmp_path, capsys):
    assert compress(three_colour_png, tmp_path / "few.npz", "--clusters", "20") == 0
    captured = capsys.readouterr()
    assert captured.out == "Reconstruction error is 0.0\n"
    assert "kmeans, 3 clusters used, lossless; " in summary_of(captured.err)


def test_summary_speaks_in_the_singular_for_one(tmp_path, capsys):
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((5, 7, 3), 90, dtype=np.uint8)).save(path)
    assert compress(path, tmp_path / "c.npz", "--clusters", "1") == 0
    assert "1 cluster used," in summary_of(capsys.readouterr().err)
    assert hw2.main(["--decompress", str(tmp_path / "c.npz"),
                     "--output", str(tmp_path / "back.png")]) == 0
    assert "from 1 colour," in capsys.readouterr().err


def test_summary_says_a_codebook_is_larger_than_its_image(tmp_path, capsys):
    # Random black and white pixels: PNG stores 1 bit each, the codebook a byte each
    # that deflate cannot pack below a bit.
    path = tmp_path / "bits.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 2, (300, 300)).astype(bool)).save(path)
    assert compress(path, tmp_path / "c.npz", "--clusters", "2") == 0
    ratio = os.path.getsize(tmp_path / "c.npz") / os.path.getsize(path)
    assert ratio > 1
    assert f"({round(100 * ratio)}% of the input)" in summary_of(capsys.readouterr().err)


def test_decompress_summary_names_output_size_and_format(noise_png, tmp_path, capsys):
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4", "-q") == 0
    capsys.readouterr()
    out = tmp_path / "back.jpg"
    assert hw2.main(["--decompress", str(tmp_path / "c.npz"), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"hw2: wrote {out}: 40x30 JPEG image from 4 colours, "
                            f"{os.path.getsize(out):,} bytes\n")


def test_summary_lines_stay_single_lines_whatever_the_file_names(noise_png, tmp_path, capsys):
    image = tmp_path / "a\nb.png"
    os.rename(noise_png, image)
    assert compress(image, tmp_path / "c\nd.npz", "--clusters", "3") == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("hw2: ") for line in lines)
    assert any("c\\nd.npz" in line for line in lines)


# --- notes -------------------------------------------------------------------

def test_note_when_the_image_was_turned_upright(tmp_path, capsys):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: turn 90 degrees to view
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (8, 12, 3), dtype=np.uint8)) \
        .save(path, exif=exif)
    assert compress(path, tmp_path / "c.npz", "--clusters", "3") == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert len(notes) == 1 and str(path) in notes[0] and "EXIF orientation" in notes[0]
    assert compress(path, tmp_path / "c.npz", "--clusters", "3", "-q") == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("alpha, noted", [(255, False), (128, True)])
def test_composited_note_only_when_something_was_transparent(alpha, noted, tmp_path, capsys):
    pixels = np.zeros((6, 8, 4), dtype=np.uint8)
    pixels[..., :3] = (30, 60, 90)
    pixels[..., 3] = 255
    pixels[:3, :, 3] = alpha
    book = tmp_path / "c.npz"
    np.savez_compressed(book, assignments=(pixels[..., 3] != 255).reshape(-1).astype(np.uint8),
                        means=np.array([[30, 60, 90, 255], [30, 60, 90, alpha]], dtype=float),
                        img_shape=np.array(pixels.shape))
    assert hw2.main(["--decompress", str(book), "--output", str(tmp_path / "flat.jpg")]) == 0
    err = capsys.readouterr().err
    assert ("composited on white" in err) == noted
    assert " JPEG image" in err


# --- the progress line ------------------------------------------------------

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
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4") == 1
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
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    try:
        child = subprocess.Popen([sys.executable, HW2, *map(str, argv)], env=env,
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
    assert status == 0 and RESULT_LINE.match(stdout)
    assert text.split(ERASE)[-1].startswith("hw2: wrote ")


# --- --help -----------------------------------------------------------------

def test_help_names_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        hw2.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--compress", "--decompress", "--clusters", "--model", "--output",
                 "--seed", "--verbose", "--quiet", "{kmeans,mixture}"):
        assert flag in text
