"""Fixtures and helpers shared by the tests (``from conftest import assert_failed``)."""
import contextlib
import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import codec
import hw2
import kmeans

ROOT = Path(os.path.dirname(os.path.abspath(__file__))).parent
HW2 = ROOT / "hw2.py"
ROCKET = ROOT / "samples" / "rocket.jpg"
MODELS = ["kmeans", "mixture"]
KEYS = ["assignments", "img_shape", "means"]
# The pixel limit hw2.py must apply: whatever Pillow's decompression-bomb guard is set to
# (89,478,485 pixels by default). Read once, before any test patches it.
# What an existing output file holds before a run that must leave it alone.
OLD_BYTES = b"the user's precious file\n"


@pytest.fixture
def spy_work(monkeypatch):
    """Record whether an input file was read or a model fitted."""
    calls = []
    for module, name in ((codec, "read_image"), (codec, "read_codebook"),
                         (kmeans, "kmeans")):
        real = getattr(module, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, name, spy)
    return calls


@pytest.fixture
def photo(tmp_path):
    """A 12x10 RGB image with 120 distinct colours."""
    y, x = np.mgrid[0:10, 0:12]
    pixels = np.dstack([x * 20, y * 25, (x * y) % 256]).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def old_output(tmp_path):
    """Factory: an existing file at an output path, which no failed run may touch."""
    def make(name):
        path = tmp_path / name
        path.write_bytes(OLD_BYTES)
        return path
    return make


def noise(shape, seed=0):
    """Random 8-bit pixels of ``shape``."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def save_npz(path, compression=zipfile.ZIP_DEFLATED, **arrays):
    """A codebook holding ``arrays``, as ``np.savez`` would write it, members in ``compression``."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, value)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    return path


def good_arrays():
    """A valid 3x4 RGB codebook with 5 means."""
    return {"assignments": (np.arange(12) % 5).astype(np.uint8),
            "means": np.linspace(0, 255, 15).reshape(5, 3),
            "img_shape": np.array([3, 4, 3])}


def codebook_of(path, pixels):
    """A codebook storing ``pixels`` exactly: one mean per distinct colour."""
    flat = pixels.reshape(pixels.shape[0] * pixels.shape[1], -1)
    means, labels = np.unique(flat, axis=0, return_inverse=True)
    return save_npz(path, assignments=labels.reshape(-1).astype(np.uint16),
                    means=means.astype(np.float64), img_shape=np.array(pixels.shape))


def load_codebook(path):
    """A codebook's arrays, by key, read as a grader reads them."""
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def printed_error(stdout):
    """The float of the one stdout line; fails unless stdout is exactly that line."""
    match = re.fullmatch(r"Reconstruction error is (\S+)\n", stdout)
    assert match, f"stdout should be one line 'Reconstruction error is X', got {stdout!r}"
    assert repr(float(match.group(1))) == match.group(1), "not a plain Python float repr"
    return float(match.group(1))


def assert_failed(status, out, err, *words, expected=1, output=None):
    """A run of hw2 failed cleanly: status ``expected``, one error line holding ``words``.

    Nothing on stdout, no traceback; when ``output`` is given, a file there still
    holds ``OLD_BYTES`` (if it existed) and no temporary file is left beside it.
    Returns the error line.
    """
    assert status == expected, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("hw2: error: ") and "Traceback" not in err, err
    for word in words:
        assert str(word) in lines[0], (word, lines[0])
    if output is not None:
        if output.is_file():
            assert output.read_bytes() == OLD_BYTES
        if output.parent.is_dir():
            assert [p.name for p in output.parent.iterdir() if p.name.startswith(".hw2-")] == []
    return lines[0]


def grader_pixels(path):
    """An image as a grader's script reads it: upright, grey and alpha kept, else RGB."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        keep = image.mode if image.mode in ("L", "LA", "RGB", "RGBA") else "RGB"
        return np.asarray(image.convert(keep))


def grader_decode(book):
    """What a grader rebuilds from a codebook file, rounded and clipped to 8 bits."""
    arrays = load_codebook(book)
    rebuilt = arrays["means"][arrays["assignments"]].reshape(arrays["img_shape"])
    return np.clip(np.rint(rebuilt), 0, 255).astype(np.uint8)


def run_hw2(*argv):
    """``hw2.main`` in-process: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = hw2.main([str(arg) for arg in argv])
    return status, out.getvalue(), err.getvalue()


def run_child(*argv, before=None, env=None, cwd=None, timeout=60):
    """hw2.py in a child process, as a user runs it: (status, stdout, stderr).

    ``before``: Python statements the child runs first (hw2 then runs as its
    ``__main__``); ``env`` is added to the environment.
    """
    # -P (Python 3.11 on): no current folder on sys.path under -c, as for "python hw2.py";
    # NumPy 2.5 on Python 3.13 fails to import with a deleted one there.
    start = [HW2] if before is None else ["-P"] * (sys.version_info >= (3, 11)) + [
        "-c", f"import runpy, sys\n{before}\nsys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')", HW2]
    done = subprocess.run([sys.executable, *map(str, start), *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    return done.returncode, done.stdout, done.stderr


def rlimit(name, n_bytes):
    """Statements for ``run_child(before=...)`` capping ``resource.<name>`` at ``n_bytes``.

    Skips the test where the ``resource`` module is missing (Windows).
    """
    pytest.importorskip("resource", reason="sets a resource limit (the resource module)")
    return f"import resource\nresource.setrlimit(resource.{name}, ({n_bytes}, {n_bytes}))"


def check_round_trip(image_path, tmp_path, clusters, model, expected=None):
    """Compress and decompress ``image_path``, checking everything a grader checks.

    ``expected`` holds the pixels the contract says are clustered (default:
    :func:`grader_pixels`).  The codebook is written without an extension, and
    must land at exactly that path; the printed error must be the mean
    distance between ``expected`` and the grader's decoding, and the PNG the
    rounded decoding.

    Returns
    -------
    book : dict of ndarray
        The codebook's arrays, by key.
    error : float
        The printed reconstruction error.
    """
    expected = grader_pixels(image_path) if expected is None else expected
    before = set(os.listdir(tmp_path))
    book_path, png = tmp_path / f"{model}-codebook", tmp_path / f"{model}-decoded.png"
    status, stdout, stderr = run_hw2("--compress", image_path, "--model", model,
                                     "--clusters", clusters, "--output", book_path, "-q")
    assert (status, stderr) == (0, ""), stderr
    error = printed_error(stdout)
    book = load_codebook(book_path)
    assert sorted(book) == KEYS
    assert tuple(book["img_shape"]) == expected.shape
    assert book["means"].dtype == np.float64 and 1 <= len(book["means"]) <= clusters
    # The narrowest unsigned type for k - 1 (the tests use fewer than 65,537 clusters).
    assert book["assignments"].dtype == (np.uint8 if len(book["means"]) <= 256 else np.uint16)
    rebuilt = book["means"][book["assignments"]].reshape(book["img_shape"])
    diff = expected.astype(np.float64) - rebuilt
    diff = diff.reshape(expected.shape[0] * expected.shape[1], -1)
    assert error == pytest.approx(np.sqrt((diff ** 2).sum(axis=1)).mean(), rel=1e-9, abs=1e-9)

    assert run_hw2("--decompress", book_path, "--output", png, "-q") == (0, "", "")
    with Image.open(png) as decoded:
        np.testing.assert_array_equal(np.asarray(decoded),
                                      np.clip(np.rint(rebuilt), 0, 255).astype(np.uint8))
    assert set(os.listdir(tmp_path)) - before == {book_path.name, png.name}
    return book, error
