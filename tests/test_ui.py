"""What a user meets at the terminal: dashes, seeds, quiet/verbose, summaries, progress, help."""
import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hw2

ROOT = Path(__file__).resolve().parent.parent
RESULT_LINE = re.compile(r"^Reconstruction error is \S+\n$")


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
    try:
        status = compress(noise_png, tmp_path / "c.npz", "-q", "-v")
    except SystemExit as exc:  # argparse's own way out
        status = exc.code
    assert status == 2
    assert "not allowed with" in capsys.readouterr().err
    assert not (tmp_path / "c.npz").exists()


@pytest.mark.parametrize("model, measure", [("kmeans", "objective per pixel"),
                                            ("mixture", "log-likelihood per pixel")])
def test_verbose_prints_one_line_per_iteration(model, measure, noise_png, tmp_path, capsys):
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4", "--model", model,
                    "--verbose") == 0
    captured = capsys.readouterr()
    assert RESULT_LINE.match(captured.out)
    line = re.compile(rf"^{model}: (run (\d+), )?iteration (\d+), {measure} (\S+), "
                      r"[\d.]+ s$")
    matches = [line.match(text) for text in captured.err.splitlines()]
    iterations = [m for m in matches if m]
    assert len(iterations) >= 2
    assert all(np.isfinite(float(m.group(4))) for m in iterations)
    # Within the first run the iteration numbers count up without gaps, from 1
    # (or from 0, the mixture's k-means start).
    first = [int(m.group(3)) for m in iterations if m.group(1) is None]
    assert first[0] in (0, 1)
    assert first == list(range(first[0], first[0] + len(first)))
    # Everything else on stderr is the summary: no progress escapes when not a terminal.
    others = [text for text, m in zip(captured.err.splitlines(), matches) if not m]
    assert len(others) == 1 and others[0].startswith("hw2: wrote ")
    assert "\r" not in captured.err


def test_default_on_a_pipe_prints_no_iterations(noise_png, tmp_path, capsys):
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", "4") == 0
    err = capsys.readouterr().err
    assert "iteration " not in err.replace(" iterations", "")
    assert "\r" not in err and len(err.splitlines()) == 1


# --- the summaries ---------------------------------------------------------

def test_compress_summary_names_output_sizes_clusters_and_convergence(noise_png, tmp_path,
                                                                       capsys):
    out = tmp_path / "codebook.npz"
    assert compress(noise_png, out, "--clusters", "5") == 0
    err = capsys.readouterr().err
    (summary,) = err.splitlines()
    assert str(out) in summary
    assert f"{os.path.getsize(out) / 1000:.1f} KB" in summary
    assert f"input {os.path.getsize(noise_png) / 1000:.1f} KB" in summary
    assert "kmeans" in summary and "5 clusters" in summary
    assert re.search(r"\b\d+ iterations, (converged|stopped at the iteration limit);", summary)
    assert re.search(r"; \d+\.\d\d s$", summary)


@pytest.mark.parametrize("model", ["kmeans", "mixture"])
def test_summary_is_the_same_with_and_without_progress(model, tmp_path, capsys):
    # The sample photo has over 20,000 distinct colours: k-means seeds on a
    # summary of them and runs only the best seedings in full, so counting the
    # restarts the progress callback sees would tell fewer seedings than tried.
    summaries = []
    for extra in ([], ["--verbose"]):
        assert compress(ROOT / "samples" / "rocket.jpg", tmp_path / "c.npz",
                        "--clusters", "4", "--model", model, *extra) == 0
        summary = capsys.readouterr().err.splitlines()[-1]
        summaries.append(re.sub(r"; [\d.]+ s$", "", summary))
    assert summaries[0] == summaries[1]
    assert f"; {model}, 4 clusters, " in summaries[0]
    if model == "kmeans":
        assert "seedings" in summaries[0]


def test_summary_says_why_fewer_clusters(three_colour_png, tmp_path, capsys):
    out = tmp_path / "few.npz"
    assert compress(three_colour_png, out, "--clusters", "20") == 0
    captured = capsys.readouterr()
    assert captured.out == "Reconstruction error is 0.0\n"
    assert str(out) in captured.err
    assert "3 clusters" in captured.err
    assert "only 3 distinct colours" in captured.err and "lossless" in captured.err


def test_summary_counts_clusters_left_without_pixels(noise_png, tmp_path):
    class Args:
        output, compress, clusters, model = str(noise_png), str(noise_png), 4, "mixture"

    class Fit:
        n_iter, converged = 12, True

    labels = np.array([0, 0, 2, 2, 2])  # clusters 1 and 3 hold no colour
    line = hw2.compress_summary(Args, labels, 4, Fit, 1, 0.5)
    assert "2 of 4 clusters used (2 components are no pixel's most likely one)" in line
    assert "12 iterations, converged" in line


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


# --- the progress line ------------------------------------------------------

class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_draws_first_call_then_throttles(monkeypatch):
    clock = iter([0.0, 0.0, 0.05, 0.08, 0.25])  # the first value is the start time
    monkeypatch.setattr(hw2.time, "perf_counter", lambda: next(clock))
    stream = FakeTerminal()
    report = hw2.Reporter(stream=stream)
    callback = report.progress_callback("kmeans")
    for iteration in (1, 2, 3, 4):
        callback(iteration, 100.0 / iteration)
    report.clear()
    drawn = stream.getvalue().split("\r\033[K")
    assert drawn[0] == ""
    assert drawn[1].startswith("kmeans: iteration 1, objective 100,")
    assert drawn[2].startswith("kmeans: iteration 4, objective 25,")
    assert drawn[3] == ""  # cleared at the end
    assert len(drawn) == 4


def test_restarts_are_counted_and_shown():
    stream = io.StringIO()
    report = hw2.Reporter(verbose=True, stream=stream)
    callback = report.progress_callback("kmeans")
    for iteration in (1, 2, 3, 1, 2):
        callback(iteration, 1.0)
    assert report.n_starts == 2
    lines = stream.getvalue().splitlines()
    assert lines[2].startswith("kmeans: iteration 3,")
    assert lines[3].startswith("kmeans: run 2, iteration 1,")


def test_kmeans_objective_is_shown_per_pixel():
    stream = io.StringIO()
    report = hw2.Reporter(verbose=True, stream=stream)
    report.progress_callback("kmeans", n_pixels=8)(1, 100.0)   # a sum over 8 pixels
    report.progress_callback("mixture", n_pixels=8)(0, -10.5)  # already per pixel
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("kmeans: iteration 1, objective per pixel 12.5,")
    assert lines[1].startswith("mixture: iteration 0, log-likelihood per pixel -10.5,")


def test_progress_on_a_terminal_updates_in_place_and_is_cleared(noise_png, tmp_path):
    master, slave = pty.openpty()
    out = tmp_path / "c.npz"
    try:
        child = subprocess.Popen(
            [sys.executable, "hw2.py", "--compress", str(noise_png), "--clusters", "4",
             "--output", str(out)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    finally:
        os.close(slave)
    terminal = b""
    deadline = time.monotonic() + 60
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
    stdout = child.communicate(timeout=60)[0].decode()
    assert child.returncode == 0
    assert RESULT_LINE.match(stdout)  # the pipe holds exactly the result line
    text = terminal.decode()
    assert "\r\033[Kkmeans: iteration 1, objective per pixel " in text
    # The last escape erases the progress line; only the summary follows it.
    before, after = text.rsplit("\r\033[K", 1)
    assert "kmeans: iteration" in before
    assert after.startswith("hw2: wrote ") and "iteration " not in after.replace(
        " iterations", "")
    assert after.count("\n") == 1


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
    for status in ("0 +success", "1 +a file", "2 +a bad command line", "130 +interrupted"):
        assert re.search(rf"^  {status}", text, re.MULTILINE)
    for flag in ("--compress", "--decompress", "--clusters", "--model", "--output",
                 "--seed", "--verbose", "--quiet"):
        assert flag in text
