"""hw2.py end to end: compress and decompress photos, grey and alpha images (in-process),
errors that suggest the fix, and the process hw2 owns: signals, streams, start-up, warnings,
a deleted working folder, isolated mode, file names the locale cannot decode (child processes).

Every expected value is computed here from the input image and the codebook with nothing
but NumPy and Pillow, the way a grader's script would.
"""
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import codec
import gmm
import hw2
from conftest import run_hw2
import kmeans

ROOT = Path(os.path.dirname(os.path.abspath(__file__))).parent
ROCKET = ROOT / "samples" / "rocket.jpg"
RESULT_LINE = re.compile(r"Reconstruction error is (\S+)\n")
MODELS = ["kmeans", "mixture"]


def pixels_of(path):
    """The image as a grader reads it: upright, grey/alpha kept, else RGB."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        keep = image.mode if image.mode in ("L", "LA", "RGB", "RGBA") else "RGB"
        return np.asarray(image.convert(keep))


def load_codebook(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def printed_error(stdout):
    """The float of the one stdout line; fails unless stdout is exactly that line."""
    match = RESULT_LINE.fullmatch(stdout)
    assert match, f"stdout should be one line 'Reconstruction error is X', got {stdout!r}"
    text = match.group(1)
    assert repr(float(text)) == text, f"{text!r} is not a plain Python float repr"
    return float(text)


def direct_error(pixels, book):
    """Mean Euclidean distance between each pixel and the mean it is assigned to."""
    n_channels = book["means"].shape[1]
    diff = pixels.reshape(-1, n_channels).astype(np.float64) - book["means"][book["assignments"]]
    return float(np.mean(np.sqrt((diff ** 2).sum(axis=1))))


def expected_decoding(book):
    rebuilt = book["means"][book["assignments"]].reshape(book["img_shape"])
    return np.clip(np.rint(rebuilt), 0, 255).astype(np.uint8)


def compress(image, output, clusters, model="kmeans"):
    return run_hw2("--compress", image, "--model", model, "--clusters", clusters,
                     "--output", output)


def decompress(codebook, output):
    return run_hw2("--decompress", codebook, "--output", output)


def check_round_trip(image_path, tmp_path, clusters, model):
    """Compress and decompress; check everything a grader checks.  Returns the codebook."""
    book_path = tmp_path / "codebook"  # no extension on purpose: it must be kept as given
    status, stdout, _ = compress(image_path, book_path, clusters, model)
    assert status == 0
    error = printed_error(stdout)
    assert book_path.exists() and not Path(f"{book_path}.npz").exists()
    book = load_codebook(book_path)
    assert sorted(book) == ["assignments", "img_shape", "means"]
    pixels = pixels_of(image_path)
    assert tuple(book["img_shape"]) == pixels.shape
    assert book["means"].dtype == np.float64
    assert book["means"].shape[1] == (pixels.shape[2] if pixels.ndim == 3 else 1)
    assert 1 <= len(book["means"]) <= clusters
    assert book["assignments"].dtype == np.uint8  # every test here has k <= 256
    assert book["assignments"].shape == (pixels.shape[0] * pixels.shape[1],)
    assert error == pytest.approx(direct_error(pixels, book), rel=1e-9, abs=1e-12)

    png = tmp_path / "decoded.png"
    status, _, _ = decompress(book_path, png)
    assert status == 0
    with Image.open(png) as decoded:
        np.testing.assert_array_equal(np.asarray(decoded), expected_decoding(book))
    assert sorted(os.listdir(tmp_path)) == sorted([image_path.name, "codebook", "decoded.png"])
    return book


# ---------------------------------------------------------------- the sample photo

@pytest.fixture(scope="module")
def rocket_run(tmp_path_factory):
    """Compress the sample photo once at k = 4: (folder, stdout, codebook)."""
    folder = tmp_path_factory.mktemp("rocket")
    status, stdout, _ = compress(ROCKET, folder / "rocket.book", 4)
    assert status == 0
    return folder, stdout, load_codebook(folder / "rocket.book")


def test_photo_prints_one_line_with_the_true_error(rocket_run):
    folder, stdout, book = rocket_run
    error = printed_error(stdout)
    assert error == pytest.approx(direct_error(pixels_of(ROCKET), book), rel=1e-9)
    assert error > 0  # the photo has far more than 4 colours
    assert os.listdir(folder) == ["rocket.book"]


def test_photo_codebook_holds_exactly_the_three_arrays(rocket_run):
    _, _, book = rocket_run
    height, width = pixels_of(ROCKET).shape[:2]
    assert sorted(book) == ["assignments", "img_shape", "means"]
    assert book["img_shape"].tolist() == [height, width, 3]
    assert book["means"].dtype == np.float64 and book["means"].shape == (4, 3)
    assert book["assignments"].dtype == np.uint8
    assert book["assignments"].shape == (height * width,)
    assert len(np.unique(book["means"], axis=0)) == 4


def test_photo_pixels_go_to_their_nearest_mean(rocket_run):
    # k-means ends with an assignment step: no pixel has a nearer mean than its own.
    _, _, book = rocket_run
    pixels = pixels_of(ROCKET).reshape(-1, 3).astype(np.float64)
    d2 = ((pixels[:, None, :] - book["means"][None, :, :]) ** 2).sum(axis=2)
    own = d2[np.arange(len(pixels)), book["assignments"]]
    assert (own <= d2.min(axis=1) + 1e-6).all()


def test_photo_decompresses_exactly_to_png_and_to_jpeg(rocket_run, tmp_path):
    folder, _, book = rocket_run
    status, _, _ = decompress(folder / "rocket.book", tmp_path / "back.png")
    assert status == 0
    with Image.open(tmp_path / "back.png") as image:
        assert image.format == "PNG"
        np.testing.assert_array_equal(np.asarray(image), expected_decoding(book))
    status, _, _ = decompress(folder / "rocket.book", tmp_path / "back.jpg")
    assert status == 0
    with Image.open(tmp_path / "back.jpg") as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.size == tuple(book["img_shape"][1::-1])
        # Lossy, but close to the decoded picture.
        diff = np.asarray(image).astype(int) - expected_decoding(book)
        assert np.abs(diff).mean() < 4
    assert sorted(os.listdir(tmp_path)) == ["back.jpg", "back.png"]


# ---------------------------------------------------------------- grey, alpha, small RGB

def smooth_noisy(rng, shape):
    """A gradient plus noise: many distinct values, a few broad groups."""
    height, width = shape[:2]
    ramp = np.linspace(0, 200, width)[None, :] + np.linspace(0, 50, height)[:, None]
    if len(shape) == 3:
        ramp = ramp[..., None] * np.linspace(0.4, 1.0, shape[2])
    return np.clip(ramp + rng.normal(0, 8, size=shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("model", MODELS)
def test_grey_round_trip(tmp_path, model):
    pixels = smooth_noisy(np.random.default_rng(1), (18, 24))
    image_path = tmp_path / "grey.png"
    Image.fromarray(pixels).save(image_path)
    book = check_round_trip(image_path, tmp_path, 5, model)
    assert book["img_shape"].tolist() == [18, 24]  # grey stays two-dimensional
    assert book["means"].shape[1] == 1


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("mode, channels", [("RGBA", 4), ("LA", 2)])
def test_alpha_round_trip(tmp_path, model, mode, channels):
    rng = np.random.default_rng(channels)
    pixels = smooth_noisy(rng, (16, 20, channels))
    pixels[:4, :, -1] = 0  # a transparent band
    image_path = tmp_path / "alpha.png"
    Image.fromarray(pixels, mode=mode).save(image_path)
    book = check_round_trip(image_path, tmp_path, 6, model)
    assert book["img_shape"].tolist() == [16, 20, channels]  # alpha kept as last channel


@pytest.mark.parametrize("model", MODELS)
def test_small_rgb_round_trip(tmp_path, model):
    pixels = smooth_noisy(np.random.default_rng(3), (15, 21, 3))
    image_path = tmp_path / "small.png"
    Image.fromarray(pixels).save(image_path)
    check_round_trip(image_path, tmp_path, 7, model)


def test_alpha_decompressed_to_jpeg_is_flattened(tmp_path):
    pixels = np.zeros((16, 16, 4), dtype=np.uint8)
    pixels[:, :8] = (200, 40, 40, 0)      # transparent: becomes white
    pixels[:, 8:] = (20, 40, 200, 255)    # opaque blue
    image_path = tmp_path / "two.png"
    Image.fromarray(pixels).save(image_path)
    assert compress(image_path, tmp_path / "book", 2)[0] == 0
    status, stdout, _ = decompress(tmp_path / "book", tmp_path / "flat.jpg")
    assert status == 0
    with Image.open(tmp_path / "flat.jpg") as image:
        assert image.mode == "RGB"
        got = np.asarray(image).astype(int)
    assert np.abs(got[:, :4] - 255).max() <= 8
    assert np.abs(got[:, 12:] - (20, 40, 200)).max() <= 8


def codebook_of(tmp_path, n_means, shape=(20, 30)):
    """A grader-style codebook with ``n_means`` distinct RGB means, all of them used."""
    rng = np.random.default_rng(11)
    means = rng.choice(256 ** 3, size=n_means, replace=False)
    means = np.stack([means // 65536, means // 256 % 256, means % 256], axis=1).astype(float)
    assignments = rng.permutation(np.arange(shape[0] * shape[1]) % n_means)
    path = tmp_path / "book.npz"
    np.savez_compressed(path, assignments=assignments.astype(np.uint16), means=means,
                        img_shape=np.array([*shape, 3]))
    return path, means[assignments].reshape(*shape, 3).astype(np.uint8)


# ---------------------------------------------------------------- few colours: lossless

@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("clusters", [5, 9])
@pytest.mark.parametrize("grey", [False, True])
def test_few_colours_are_kept_exactly(tmp_path, model, clusters, grey):
    palette = np.array([[0, 0, 0], [255, 255, 255], [200, 30, 40], [10, 220, 90], [7, 8, 9]],
                       dtype=np.uint8)
    if grey:
        palette = np.array([[0], [255], [200], [10], [7]], dtype=np.uint8)
    indices = np.random.default_rng(5).integers(0, 5, size=(12, 10))
    indices[0, :5] = np.arange(5)  # every colour occurs
    pixels = palette[indices]
    if grey:
        pixels = pixels[..., 0]
    image_path = tmp_path / "five.png"
    Image.fromarray(pixels).save(image_path)
    status, stdout, _ = compress(image_path, tmp_path / "book", clusters, model)
    assert status == 0
    assert stdout == "Reconstruction error is 0.0\n"
    book = load_codebook(tmp_path / "book")
    assert len(book["means"]) == 5  # the colours themselves, fewer than asked when 9
    np.testing.assert_array_equal(np.unique(book["means"], axis=0),
                                  np.unique(palette.reshape(5, -1), axis=0).astype(np.float64))
    np.testing.assert_array_equal(book["means"][book["assignments"]].reshape(book["img_shape"]),
                                  pixels)
    assert decompress(tmp_path / "book", tmp_path / "back.png")[0] == 0
    with Image.open(tmp_path / "back.png") as image:
        np.testing.assert_array_equal(np.asarray(image), pixels)


# ---------------------------------------------------------------- no scikit-learn, no SciPy

CHILD = textwrap.dedent("""
    import sys
    import hw2
    image, book, png = sys.argv[1:]
    for model in ("kmeans", "mixture"):
        compressed = hw2.main(["--compress", image, "--model", model, "--clusters", "3",
                               "--output", book])
        decompressed = hw2.main(["--decompress", book, "--output", png])
        print("STATUS", compressed, decompressed)
    leaked = sorted(name for name in sys.modules if name.split(".")[0] in ("sklearn", "scipy"))
    print("LEAKED", " ".join(leaked))
""")


def test_cli_never_imports_sklearn_or_scipy(tmp_path):
    image_path = tmp_path / "small.png"
    Image.fromarray(smooth_noisy(np.random.default_rng(4), (10, 12, 3))).save(image_path)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(image_path), str(tmp_path / "book"),
         str(tmp_path / "back.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines.count("STATUS 0 0") == 2, child.stdout + child.stderr
    assert "LEAKED " in lines, f"imported: {lines[-1]}"


# ---------------------------------------------------------------- errors that suggest the fix

HW2 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hw2.py")


def usage_error(argv):
    """Run hw2 with ``argv``; check it is one usage-error line; return that line."""
    status, stdout, stderr = run_hw2(*argv)
    assert status == 2 and stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hw2: error: "), stderr
    return lines[0]


@pytest.mark.parametrize("typed, meant", [
    (["-compress", "{photo}", "-output", "{out}"], ["--compress", "--output"]),
    (["--compress", "{photo}", "--ouput", "{out}"], ["--output"]),
    (["--compress", "{photo}", "-output={out}"], ["--output"]),
    (["--compress", "{photo}", "--output", "{out}", "--clustres", "4"], ["--clusters"]),
    (["--compress", "{photo}", "--output", "{out}", "--colours", "4"], ["--clusters"]),
])
def test_wrong_flag_names_the_closest_real_one(typed, meant, tmp_path):
    argv = [arg.format(photo=ROCKET, out=tmp_path / "c.npz") for arg in typed]
    line = usage_error(argv)
    assert "unrecognized arguments: " in line
    assert f"(did you mean {' and '.join(meant)}?)" in line
    assert os.listdir(tmp_path) == []


def test_a_flag_far_from_every_real_one_gets_no_guess(tmp_path):
    line = usage_error(["--compress", ROCKET, "--output", tmp_path / "c.npz", "--zzzz"])
    assert line.startswith("hw2: error: unrecognized arguments: --zzzz;")
    assert "did you mean" not in line


def test_no_arguments_say_what_to_give():
    line = usage_error([])
    assert "--compress IMAGE" in line and "--decompress CODEBOOK" in line and "--output" in line


@pytest.mark.parametrize("typed", ["k-means", "KMeans", "gmm"])
def test_wrong_model_is_refused_naming_the_choices(typed, tmp_path):
    line = usage_error(["--compress", ROCKET, "--output", tmp_path / "c.npz", "--model", typed])
    assert "argument --model: invalid choice: " in line and typed in line
    assert "kmeans" in line and "mixture" in line
    assert os.listdir(tmp_path) == []


def test_clusters_above_the_models_limit_are_refused_up_front(tmp_path, monkeypatch):
    monkeypatch.setattr(codec, "read_image", None)  # no work may start
    for model in ("kmeans", "mixture"):
        limit = kmeans.MAX_CLUSTERS if model == "kmeans" else gmm.MAX_COMPONENTS
        line = usage_error(["--compress", ROCKET, "--output", tmp_path / "c.npz",
                            "--model", model, "--clusters", str(limit + 1)])
        assert f"--clusters: {limit + 1} is not between 1 and {limit}" in line
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- signals, moved input, streams

SLOW_WRITE = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, os.path.dirname(sys.argv[1]))
    import hw2
    replace = os.replace

    def slow_replace(source, target, **kwargs):  # the file written, not yet moved into place
        if os.path.basename(source).startswith(".hw2-"):
            open(sys.argv[2], "w").close()
            time.sleep(60)
        return replace(source, target, **kwargs)
    os.replace = slow_replace
    sys.exit(hw2.main(sys.argv[3:]))
""")



def default_signal_handlers():
    """In the child: the signals under test act as in a terminal's foreground job.

    A shell starts a background job (``cmd &``) with SIGINT ignored, and an ignored
    signal stays ignored in its children: this test would then hang when its own
    run was started that way.
    """
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGXCPU):
        signal.signal(signum, signal.SIG_DFL)


@pytest.mark.parametrize("mode, signum, status, line", [
    ("--compress", signal.SIGTERM, 143, "hw2: terminated (SIGTERM); no output written"),
    ("--decompress", signal.SIGTERM, 143, "hw2: terminated (SIGTERM); no output written"),
    ("--compress", signal.SIGHUP, 129, "hw2: terminated (SIGHUP); no output written"),
    ("--decompress", signal.SIGINT, 130, "hw2: interrupted; no output written"),
    # A soft CPU-time limit, as batch schedulers set (its default would leave the file).
    ("--compress", signal.SIGXCPU, 152, "hw2: terminated (SIGXCPU); no output written"),
])
def test_signal_during_the_write_removes_the_partial_file(mode, signum, status, line,
                                                         tmp_path):
    if mode == "--compress":
        source, output = tmp_path / "in.png", tmp_path / "c.npz"
        Image.fromarray(smooth_noisy(np.random.default_rng(5), (20, 30, 3))).save(source)
    else:
        source, output = codebook_of(tmp_path, 5)[0], tmp_path / "back.png"
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITE, HW2, str(ready), mode, str(source),
         "--output", str(output)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_signal_handlers)
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), child.communicate(timeout=60)
        assert any(name.startswith(".hw2-") for name in os.listdir(tmp_path))  # in progress
        child.send_signal(signum)
        stdout, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == status
    assert stdout == "" and stderr == line + "\n"
    assert sorted(os.listdir(tmp_path)) == sorted([source.name, "ready"])


def test_input_moved_while_fitting_is_no_error(tmp_path, monkeypatch):
    image = tmp_path / "in.png"
    Image.fromarray(smooth_noisy(np.random.default_rng(6), (20, 30, 3))).save(image)
    fit_colours = hw2.fit_colours

    def moving(*args):
        os.rename(image, tmp_path / "moved.png")
        return fit_colours(*args)
    monkeypatch.setattr(hw2, "fit_colours", moving)
    status, stdout, stderr = compress(image, tmp_path / "c.npz", 3)
    assert status == 0
    printed_error(stdout)
    assert "Traceback" not in stderr and stderr.startswith(f"hw2: wrote {tmp_path / 'c.npz'}")
    assert sorted(load_codebook(tmp_path / "c.npz")) == ["assignments", "img_shape", "means"]


def run_with_streams(tmp_path, redirect):
    """Compress a small image in a shell with ``redirect`` applied; (status, stdout, stderr)."""
    image = tmp_path / "in.png"
    Image.fromarray(smooth_noisy(np.random.default_rng(7), (12, 16, 3))).save(image)
    done = subprocess.run(
        ["sh", "-c", f'"$0" "$@" {redirect}', sys.executable, HW2, "--compress", str(image),
         "--clusters", "3", "--output", str(tmp_path / "c.npz")],
        capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_result_line_on_a_full_disk_is_one_error_line(tmp_path):
    status, stdout, stderr = run_with_streams(tmp_path, "> /dev/full")
    assert status == 1
    assert stderr == (f"hw2: error: stdout: No space left on device; the result line is lost, "
                      f"but {tmp_path / 'c.npz'} was written\n")
    assert sorted(load_codebook(tmp_path / "c.npz")) == ["assignments", "img_shape", "means"]


def test_closed_stdout_is_an_error_not_a_success(tmp_path):
    status, stdout, stderr = run_with_streams(tmp_path, ">&-")
    assert status == 1
    assert stderr == (f"hw2: error: stdout: closed; the result line is lost, but "
                      f"{tmp_path / 'c.npz'} was written\n")
    assert sorted(load_codebook(tmp_path / "c.npz")) == ["assignments", "img_shape", "means"]


def test_closed_stderr_keeps_stdout_to_the_result_line(tmp_path):
    status, stdout, stderr = run_with_streams(tmp_path, "2>&-")
    assert status == 0
    error = printed_error(stdout)  # exactly one line: the summary did not come here
    book = load_codebook(tmp_path / "c.npz")
    assert error == pytest.approx(direct_error(pixels_of(tmp_path / "in.png"), book), rel=1e-9)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_stderr_does_not_fail_the_run(tmp_path):
    # Nothing on stderr can be read, but the codebook and the result line are right.
    status, stdout, _ = run_with_streams(tmp_path, "2> /dev/full")
    assert status == 0
    printed_error(stdout)
    assert sorted(load_codebook(tmp_path / "c.npz")) == ["assignments", "img_shape", "means"]


# ---------------------------------------------------------------- issue 17: the process

def run_child(argv, cwd=None, env=None, **kwargs):
    """Run hw2.py as a user does; (status, stdout, stderr)."""
    done = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})}, **kwargs)
    return done.returncode, done.stdout, done.stderr


def small_png(tmp_path, name="in.png"):
    path = tmp_path / name
    Image.fromarray(smooth_noisy(np.random.default_rng(8), (12, 16, 3))).save(path)
    return path


@pytest.mark.parametrize("signum, status, line", [
    (signal.SIGINT, 130, "hw2: interrupted; no output written"),
    (signal.SIGTERM, 143, "hw2: terminated (SIGTERM); no output written"),
])
def test_a_signal_while_numpy_loads_gives_the_usual_line(signum, status, line, tmp_path):
    # A stand-in NumPy that takes as long to import as the user likes: the signal arrives
    # at start-up, before any work, where a traceback used to be all one saw.
    fake = tmp_path / "fake" / "numpy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import pathlib, sys, time\n"
        f"pathlib.Path({str(tmp_path / 'loading')!r}).touch()\n"
        "time.sleep(60)\n")
    child = subprocess.Popen(
        [sys.executable, HW2, "--compress", str(ROCKET), "--output", str(tmp_path / "c.npz")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(fake.parent)}, preexec_fn=default_signal_handlers)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "loading").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signum)
        stdout, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert (child.returncode, stdout, stderr) == (status, "", line + "\n")
    assert not (tmp_path / "c.npz").exists()


def test_no_python_warning_reaches_the_user(tmp_path):
    # Long-double means beyond float64's range: NumPy warns while casting them, and
    # PYTHONWARNINGS=error would turn that warning into a traceback.
    means = np.array([[1e300, 0, 0], [0, 0, 0]], dtype=np.longdouble)
    means[0, 0] *= np.longdouble(1e300)
    book = tmp_path / "ld.npz"
    np.savez(book, assignments=np.array([0, 1, 1, 0], dtype=np.uint8), means=means,
             img_shape=np.array([2, 2, 3]))
    status, stdout, stderr = run_child([HW2, "--decompress", str(book), "--output",
                                      str(tmp_path / "b.png")], env={"PYTHONWARNINGS": "error"})
    assert status in (0, 1) and stdout == ""
    assert all(line.startswith("hw2: ") for line in stderr.splitlines()), stderr


def test_isolated_mode_finds_hw2s_own_modules(tmp_path):
    # python3 -I leaves the script's folder off sys.path (and the environment aside).
    image = small_png(tmp_path)
    status, stdout, stderr = run_child(["-I", HW2, "--compress", str(image), "--clusters", "3",
                                      "--output", str(tmp_path / "c.npz"), "-q"], cwd=tmp_path)
    assert (status, stderr) == (0, "")
    printed_error(stdout)
    assert sorted(load_codebook(tmp_path / "c.npz")) == ["assignments", "img_shape", "means"]


@pytest.mark.parametrize("package", ["numpy", "PIL"])
def test_a_missing_package_is_one_line_naming_it(tmp_path, package):
    # A student's python3 without the requirements: the line says what to install.
    status, stdout, stderr = run_child(
        ["-c", f"import runpy, sys; sys.modules[{package!r}] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')",
         HW2, "--compress", str(small_png(tmp_path)), "--output", str(tmp_path / "c.npz")])
    assert (status, stdout) == (1, "")
    assert stderr == (f"hw2: error: the Python package {package!r} is missing; install them "
                      "with: python3 -m pip install -r requirements.txt\n")
    assert not (tmp_path / "c.npz").exists()


def test_a_file_name_the_locale_cannot_decode_is_shown_byte_for_byte(tmp_path):
    # Under LC_ALL=C Python decodes file names as UTF-8 and keeps a byte that is not
    # UTF-8 (here Latin-1 e-acute, 0xE9) as a surrogate; the line shows the byte.
    image = small_png(tmp_path)
    name = os.fsencode(tmp_path) + b"/caf\xe9.png"
    os.rename(image, name)
    done = subprocess.run([sys.executable, HW2, "--compress", name, "--clusters", "3",
                           "--output", os.fsencode(tmp_path) + b"/c.npz"],
                          capture_output=True, timeout=60, env={**os.environ, "LC_ALL": "C"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"Reconstruction error is ")
    status, _, stderr = run_hw2("--compress", os.fsdecode(name)[:-4] + ".jpg", "--output",
                                  tmp_path / "d.npz")
    assert status == 1 and "caf\\xe9.jpg: no such file" in stderr, stderr
