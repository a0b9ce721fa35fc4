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
import gmm
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
        assert compress(noise_png, tmp_path / name, "--clusters", "6", "--seed", "7",
                        "--init", "random", "-q") == 0
        books.append(load_codebook(tmp_path / name))
    for key in ("assignments", "means", "img_shape"):
        np.testing.assert_array_equal(books[0][key], books[1][key])


def test_runs_without_seed_are_deterministic_and_use_seed_0(noise_png, tmp_path):
    for name, extra in (("a.npz", []), ("b.npz", []), ("zero.npz", ["--seed", "0"])):
        assert compress(noise_png, tmp_path / name, "--clusters", "6", "--init", "random",
                        "-q", *extra) == 0
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
        assert compress(noise_png, out, "--clusters", "6", "--seed", str(seed),
                        "--init", "random", "-q") == 0
        means.append(load_codebook(out)["means"])
    assert any(not np.array_equal(means[0], other) for other in means[1:])


# --- --init ------------------------------------------------------------------

def test_init_reaches_the_mixtures_kmeans_start(noise_png, tmp_path, monkeypatch):
    real_fit = gmm.fit_gmm
    seen = []

    def fit_gmm(X, n_components, *, init="not passed", **kwargs):
        seen.append(init)
        return real_fit(X, n_components, **kwargs)
    monkeypatch.setattr(gmm, "fit_gmm", fit_gmm)
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4", "--model", "mixture",
                    "--init", "random", "-q") == 0
    assert seen == ["random"]


def test_summary_counts_the_seedings_that_ran(noise_png, tmp_path, monkeypatch, capsys):
    # A fit that says it tried one seeding: the summary must not claim more.
    real_kmeans = kmeans.kmeans

    class OneStart:
        def __init__(self, result):
            self.result = result
            self.n_init = 1

        def __getattr__(self, name):
            return getattr(self.result, name)

    monkeypatch.setattr(kmeans, "kmeans", lambda X, k, **kwargs: OneStart(
        real_kmeans(X, k, **{**kwargs, "n_init": 1})))
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4", "--init", "random") == 0
    err = capsys.readouterr().err
    assert "best of" not in err and "seedings" not in err


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


def test_quiet_and_verbose_together_is_a_usage_error(noise_png, tmp_path, capsys):
    assert compress(noise_png, tmp_path / "c.npz", "-q", "-v") == 2
    assert "not allowed with" in capsys.readouterr().err
    assert not (tmp_path / "c.npz").exists()


@pytest.mark.parametrize("model, measure", [("kmeans", "mean sq. distance"),
                                            ("mixture", "log-likelihood")])
def test_verbose_prints_one_line_per_update(model, measure, noise_png, tmp_path, capsys):
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4", "--model", model,
                    "--verbose") == 0
    captured = capsys.readouterr()
    assert RESULT_LINE.match(captured.out)
    lines = captured.err.splitlines()
    # The stages, in order, each on its own line.
    stages = [line for line in lines if re.match(r"(reading|counting|writing) ", line)]
    assert stages == [f"reading {tmp_path / 'noise.png'}", "counting colours",
                      f"writing {tmp_path / 'c.npz'}"]
    update = re.compile(rf"^fitting {model}, (.+), (iteration \d+(/\d+)?|\d+/\d+ centres), "
                        rf"[\d.]+ s(, {measure} (\S+))?$")
    updates = [update.match(line) for line in lines]
    values = [float(m.group(5)) for m in updates if m and m.group(5)]
    assert len([m for m in updates if m]) >= 2 and values
    assert all(np.isfinite(values))
    assert "\r" not in captured.err  # no redrawing when stderr is not a terminal


def test_default_on_a_pipe_prints_no_progress(noise_png, tmp_path, capsys):
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4") == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert all(line.startswith("hw2: ") for line in err.splitlines())
    assert "reading" not in err and "fitting" not in err


# --- the summaries ---------------------------------------------------------

def summary_of(err):
    """The summary lines of stderr, joined: one line, or two if it is wider than 80."""
    lines = [line for line in err.splitlines() if not line.startswith("hw2: note: ")]
    assert 1 <= len(lines) <= 2 and all(line.startswith("hw2: ") for line in lines), err
    if len(lines) == 1:
        assert len(lines[0]) <= 80
    else:  # split only when one line ("hw2: " once, "; " between) would not fit
        assert len(lines[0]) + len(lines[1]) - len("hw2: ") + len("; ") > 80
    return "; ".join(line[len("hw2: "):] for line in lines)


def test_compress_summary_names_output_sizes_clusters_and_convergence(noise_png, tmp_path,
                                                                       capsys):
    out = tmp_path / "codebook.npz"
    assert compress(noise_png, out, "--clusters", "5") == 0
    summary = summary_of(capsys.readouterr().err)
    out_size, in_size = os.path.getsize(out), os.path.getsize(noise_png)
    assert f"wrote {out}, {out_size / 1000:.1f} KB ({round(100 * out_size / in_size)}% of " \
           "the input)" in summary
    assert "kmeans, 5 clusters; " in summary
    assert re.search(r"\b\d+ iterations?(, converged| \(the limit\))", summary)
    assert re.search(r"\b\d+\.\d\d s\b", summary)


@pytest.mark.parametrize("model", ["kmeans", "mixture"])
@pytest.mark.parametrize("clusters", ["3", "2000"])
def test_summary_fits_in_80_columns(model, clusters, noise_png, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert compress("noise.png", "c.npz", "--clusters", clusters, "--model", model) == 0
    lines = capsys.readouterr().err.splitlines()
    summary_of("\n".join(lines))
    assert all(len(line) <= 80 for line in lines), lines


@pytest.mark.parametrize("model", ["kmeans", "mixture"])
def test_summary_is_the_same_with_and_without_progress(model, tmp_path, capsys):
    summaries = []
    for extra in ([], ["--verbose"]):
        assert compress(ROCKET, tmp_path / "c.npz", "--clusters", "4", "--model", model,
                        *extra) == 0
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("hw2: ")]
        summaries.append(re.sub(r"\b[\d.]+ s\b", "", "; ".join(lines)))
    assert summaries[0] == summaries[1]
    assert f"{model}, 4 clusters; " in summaries[0]


def test_summary_says_why_fewer_clusters(three_colour_png, tmp_path, capsys):
    out = tmp_path / "few.npz"
    assert compress(three_colour_png, out, "--clusters", "20") == 0
    captured = capsys.readouterr()
    assert captured.out == "Reconstruction error is 0.0\n"
    summary = summary_of(captured.err)
    assert str(out) in summary and "3 clusters" in summary
    assert "only 3 distinct colours" in summary and "lossless" in summary


def test_summary_speaks_in_the_singular_for_one(tmp_path, capsys):
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((5, 7, 3), 90, dtype=np.uint8)).save(path)
    assert compress(path, tmp_path / "c.npz", "--clusters", "1") == 0
    summary = summary_of(capsys.readouterr().err)
    assert "1 cluster:" in summary and "only 1 distinct colour," in summary
    assert hw2.main(["--decompress", str(tmp_path / "c.npz"),
                     "--output", str(tmp_path / "back.png")]) == 0
    assert "from 1 colour," in capsys.readouterr().err


def test_summary_counts_clusters_left_without_pixels(noise_png):
    class Args:
        output, clusters, model = str(noise_png), 4, "mixture"

    class Fit:
        n_iter, converged = 1, True

    labels = np.array([0, 0, 2, 2, 2])  # clusters 1 and 3 hold no colour
    text = "; ".join(hw2.compress_summary(Args, labels, 4, Fit, 1, 0.5, 1000, 10))
    assert "2 of 4 clusters used; 1 iteration, converged" in text
    assert "best of" not in text


@pytest.mark.parametrize("ratio, shown", [(0.004, "0.4%"), (0.0004, "<0.1%"), (0.27, "27%"),
                                          (2.84, "284%"), (0.0, "0%"), (1.003, "100.3%"),
                                          (0.996, "99.6%"), (1.0, "100%")])
def test_percentages_never_round_to_zero_or_to_equal(ratio, shown):
    assert hw2.percent(ratio) == shown


def test_summary_time_counts_from_the_process_start():
    # The child sleeps before it even imports hw2: that time is the process's too, up to
    # hw2._MAX_START_UP (a longer life before the import is not start-up).
    child = subprocess.run(
        [sys.executable, "-c", "import sys, time; time.sleep(0.15); sys.path.insert(0, "
         "sys.argv[1]); import hw2; print(time.monotonic() - hw2.process_start())", ROOT],
        capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert 0.15 <= float(child.stdout) < 60


def test_summary_time_leaves_out_a_shell_life_before_python():
    # bash runs the last command of `a && b` in its own process: what ran before is not ours.
    child = subprocess.run(
        ["bash", "-c", f"sleep 2 && exec {sys.executable} -c 'import sys, time; "
         f"sys.path.insert(0, sys.argv[1]); import hw2; "
         f"print(time.monotonic() - hw2.process_start())' {ROOT}"],
        capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert float(child.stdout) < 1.0


def test_decompress_summary_names_output_size_and_format(noise_png, tmp_path, capsys):
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4", "-q") == 0
    capsys.readouterr()
    out = tmp_path / "back.jpg"
    assert hw2.main(["--decompress", str(tmp_path / "c.npz"), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    (summary,) = captured.err.splitlines()
    assert str(out) in summary
    assert "40x30" in summary and "JPEG" in summary and "RGB" in summary


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


@pytest.mark.parametrize("name, noted", [("book.png", True), ("book.JPG", True),
                                         ("book.npz", False), ("book", False)])
def test_note_when_the_codebook_has_an_image_extension(name, noted, noise_png, tmp_path,
                                                       capsys):
    assert compress(noise_png, tmp_path / name, "--clusters", "3") == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("hw2: note: ")]
    assert bool(notes) == noted
    if noted:
        assert "npz codebook" in notes[0] and name in notes[0]
    assert sorted(load_codebook(tmp_path / name)) == ["assignments", "img_shape", "means"]


def test_note_when_the_codebook_is_larger_than_the_image(tmp_path, capsys):
    # Random black and white pixels: PNG stores 1 bit each, the codebook a byte
    # each that deflate cannot pack below a bit.
    path = tmp_path / "bits.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 2, (300, 300)).astype(bool)).save(path)
    assert compress(path, tmp_path / "c.npz", "--clusters", "2") == 0
    err = capsys.readouterr().err
    ratio = os.path.getsize(tmp_path / "c.npz") / os.path.getsize(path)
    assert ratio > 1
    (note,) = [line for line in err.splitlines() if "larger than the input" in line]
    assert f"{round(100 * ratio)}%" in note
    assert compress(path, tmp_path / "c.npz", "--clusters", "2", "-q") == 0
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
    assert " RGB JPEG image" in err


# --- the progress line ------------------------------------------------------

class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def P(stage="exact", run=1, n_runs=1, iteration=1, max_iter=300, value=float("nan")):
    return kmeans.Progress(stage, run, n_runs, iteration, max_iter, value)


def test_progress_line_names_stage_run_iteration_and_cap():
    fields = hw2.progress_fields("kmeans", P("coarse", 2, 20, 12, 300, 123.4), 1.25)
    assert fields[0] == "fitting kmeans"
    assert "coarse 2/20" in fields and "iteration 12/300" in fields
    assert fields[-1] == "mean sq. distance 123.4"
    seeding = ", ".join(hw2.progress_fields("kmeans", P("seeding", 3, 20, 37, 256), 0.5))
    assert "seeding 3/20" in seeding and "37/256 centres" in seeding
    assert "nan" not in seeding  # no value yet: none shown
    single = ", ".join(hw2.progress_fields("mixture", P("EM", 1, 1, 5, 100, -10.5), 2.0))
    assert "1/1" not in single and "EM, iteration 5/100" in single
    assert single.endswith("log-likelihood -10.5")


def test_progress_draws_at_once_then_throttles_and_is_cleared(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(hw2.time, "monotonic", lambda: now[0])
    stream = FakeTerminal()
    report = hw2.Reporter(stream=stream, started=0.0)
    monkeypatch.setattr(hw2, "terminal_columns", lambda stream: 200)
    callback = report.progress_callback("kmeans")
    for iteration, now[0] in zip((1, 2, 3, 4), (0.0, 0.05, 0.08, 0.25)):
        callback(P(iteration=iteration, value=100.0 / iteration))
    report.clear()
    drawn = stream.getvalue().split(ERASE)
    assert drawn[0] == ""
    assert drawn[1].startswith("fitting kmeans, exact, iteration 1/300,")
    assert drawn[2].startswith("fitting kmeans, exact, iteration 4/300,")
    assert drawn[2].endswith("mean sq. distance 25")
    assert drawn[3] == ""  # cleared at the end
    assert len(drawn) == 4


def test_a_stage_shows_at_once_and_so_does_the_next_update(monkeypatch):
    monkeypatch.setattr(hw2.time, "monotonic", lambda: 5.0)  # time stands still
    stream = FakeTerminal()
    report = hw2.Reporter(stream=stream, started=0.0)
    monkeypatch.setattr(hw2, "terminal_columns", lambda stream: 200)
    report.stage("reading photo.jpg")
    report.stage("counting colours")
    callback = report.progress_callback("mixture")
    callback(P("EM", iteration=1, max_iter=100))
    callback(P("EM", iteration=2, max_iter=100))  # within the redraw interval: skipped
    drawn = stream.getvalue().split(ERASE)[1:]
    assert drawn[:2] == ["reading photo.jpg", "counting colours"]
    assert drawn[2].startswith("fitting mixture, EM, iteration 1/100, 5.0 s")
    assert len(drawn) == 3


@pytest.mark.parametrize("columns", [20, 50, 80])
def test_progress_line_is_cut_to_the_terminal(columns, monkeypatch):
    stream = FakeTerminal()
    monkeypatch.setattr(hw2, "terminal_columns", lambda stream: columns)
    report = hw2.Reporter(stream=stream)
    report.stage("reading /a/rather/long/folder/name/\u5199\u771f/of/photos/IMG_0001.jpg")
    report.progress_callback("kmeans")(P("coarse", 12, 20, 123, 300, 1234.5678))
    for line in stream.getvalue().split(ERASE)[1:]:
        assert 0 < columns_of(line) <= columns - 1
    assert stream.getvalue().split(ERASE)[-1].startswith("fitting kmeans")


def test_fields_are_dropped_from_the_end_to_fit():
    fields = ["fitting kmeans", "coarse 2/20", "iteration 12/300", "1.3 s"]
    assert hw2.fit_fields(fields, 80) == "fitting kmeans, coarse 2/20, iteration 12/300, 1.3 s"
    assert hw2.fit_fields(fields, 45) == "fitting kmeans, coarse 2/20, iteration 12/300"
    assert hw2.fit_fields(fields, 10) == "fitting km"
    assert hw2.fit_fields(["\u5199\u771f\u5199\u771f"], 5) == "\u5199\u771f"


def test_verbose_seeding_keeps_its_first_and_last_centre_and_one_line_a_second(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(hw2.time, "monotonic", lambda: now[0])
    stream = io.StringIO()
    callback = hw2.Reporter(verbose=True, stream=stream, started=0.0).progress_callback("kmeans")
    for centre in range(1, 1001):  # a thousand centres over 2.5 s
        now[0] = centre * 0.0025
        callback(P("seeding", 1, 1, centre, 1000))
    callback(P("exact", 1, 1, 1, 300, 5.0))
    callback(P("exact", 1, 1, 2, 300, 4.0))  # iterations all show
    lines = stream.getvalue().splitlines()
    centres = [int(re.search(r"(\d+)/1000 centres", line).group(1)) for line in lines[:-2]]
    assert centres[0] == 1 and centres[-1] == 1000
    assert len(centres) == 4  # 2.5 s: one line a second between the first and the last
    assert "iteration 1/300" in lines[-2] and "iteration 2/300" in lines[-1]


def test_progress_is_cleared_before_an_error(noise_png, tmp_path, monkeypatch):
    stream = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", stream)

    def full_disk(*args, **kwargs):
        raise codec.CodecError("c.npz: cannot write (No space left on device)")
    monkeypatch.setattr(codec, "write_codebook", full_disk)
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4") == 1
    text = stream.getvalue()
    assert "fitting kmeans" in text
    before, after = text.rsplit(ERASE, 1)
    assert after == "hw2: error: c.npz: cannot write (No space left on device)\n"


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
    status, stdout, text = run_on_terminal(["--compress", noise_png, "--clusters", "4",
                                            "--output", out], columns)
    assert status == 0
    assert RESULT_LINE.match(stdout)  # the pipe holds exactly the result line
    drawn = text.split(ERASE)
    assert drawn[0] == ""
    # Every redraw fits on one line of the terminal: nothing wraps, nothing is left behind.
    for line in drawn[1:-1]:
        assert "\n" not in line and columns_of(line) < columns, line
    stages = [line.split(" ")[0] for line in drawn[1:-1]]
    assert stages[:2] == ["reading", "counting"] and "writing" in stages
    assert any(line.startswith("fitting kmeans, ") for line in drawn[1:-1])
    # The last escape erases the progress line; only the summary follows it.
    assert drawn[-1].startswith("hw2: wrote ") and "fitting" not in drawn[-1]
    assert all(line.startswith("hw2: ") for line in drawn[-1].splitlines())


def test_result_line_on_the_same_terminal_starts_on_a_clean_line(noise_png, tmp_path):
    status, _, text = run_on_terminal(["--compress", noise_png, "--clusters", "4",
                                       "--output", tmp_path / "c.npz"], 80, stdout_too=True)
    assert status == 0
    assert re.search(r"\r\x1b\[KReconstruction error is \S+\r\n", text), text
    assert not re.search(r"[^\n\x1b]Reconstruction error", text.replace(ERASE, "\x1b")), text


# --- --help -----------------------------------------------------------------

def test_help_explains_models_examples_and_exit_statuses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        hw2.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert re.search(r"^  kmeans +\S", text, re.MULTILINE)
    assert re.search(r"^  mixture +\S", text, re.MULTILINE)
    assert ("python3 hw2.py --compress photo.jpg --model kmeans --clusters 20 "
            "--output c.npz") in text
    assert "python3 hw2.py --decompress c.npz --output photo.jpg" in text
    for status in ("0 +success", "1 +a file", "2 +a bad command line", "130 +interrupted",
                   "143 +terminated"):
        assert re.search(rf"^  {status}", text, re.MULTILINE)
    for flag in ("--compress", "--decompress", "--clusters", "--model", "--output",
                 "--seed", "--verbose", "--quiet"):
        assert flag in text


def test_summary_lines_stay_single_lines_whatever_the_file_names(noise_png, tmp_path, capsys):
    image = tmp_path / "a\nb.png"
    os.rename(noise_png, image)
    assert compress(image, tmp_path / "c\nd.npz", "--clusters", "3") == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("hw2: ") for line in lines)
    assert any("c\\nd.npz" in line for line in lines)


def test_a_run_with_no_known_total_shows_its_number_alone():
    # The mixture cannot say how many EM runs it will make (a spike may or may not pay):
    # its second run reads "EM run 2", never "EM 2/4" or a bare "EM".
    first = hw2.progress_fields("mixture", kmeans.Progress("EM", 1, 1, 3, 100, -10.0), 1.0)
    second = hw2.progress_fields("mixture", kmeans.Progress("EM", 2, 1, 3, 100, -10.0), 1.0)
    assert first[1] == "EM" and second[1] == "EM run 2"
