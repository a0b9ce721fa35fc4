"""The process hw2 owns: signals and Ctrl-C, closed and full streams, resource limits,
missing or unloadable packages, start-up, warnings, the working folder, file names the
locale cannot decode.

Most tests run hw2.py as a child process.  A test that needs what only POSIX systems
have (a signal, the ``resource`` module, a shell to close a stream) skips, saying which.
"""
import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from conftest import (HW2, KEYS, OLD_BYTES, ROCKET, codebook_of, grader_pixels, load_codebook,
                      noise, printed_error, rlimit, run_child, run_hw2)

# In the child: the signals under test act as in a terminal's foreground job.  A shell
# starts a background job (``cmd &``) with SIGINT ignored, and an ignored signal stays
# ignored in its children: the tests would then hang when their own run was started so.
DEFAULT_SIGNALS = ("import signal\n"
                   "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                   "for name in ('SIGTERM', 'SIGHUP', 'SIGXCPU'):\n"
                   "    if hasattr(signal, name):\n"
                   "        signal.signal(getattr(signal, name), signal.SIG_DFL)\n")
posix_signals = pytest.mark.skipif(
    not hasattr(os, "killpg"), reason="sends POSIX signals to a child (elsewhere os.kill "
                                      "ends the process without running its handler)")


def signal_named(name):
    """``signal.<name>``, or a skip where this system has no such signal."""
    if not hasattr(signal, name):
        pytest.skip(f"this system has no signal.{name}")
    return getattr(signal, name)


def small_png(tmp_path, name="in.png"):
    path = tmp_path / name
    Image.fromarray(noise((12, 16, 3), seed=8)).save(path)
    return path


def wait_for(path, child, seconds=30):
    deadline = time.monotonic() + seconds
    while not path.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


# ---------------------------------------------------------------- signals and Ctrl-C

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


@posix_signals
@pytest.mark.parametrize("mode, name, status, line", [
    ("--compress", "SIGTERM", 143, "hw2: terminated (SIGTERM); no output written"),
    ("--decompress", "SIGTERM", 143, "hw2: terminated (SIGTERM); no output written"),
    ("--compress", "SIGHUP", 129, "hw2: terminated (SIGHUP); no output written"),
    ("--decompress", "SIGINT", 130, "hw2: interrupted; no output written"),
    # A soft CPU-time limit, as batch schedulers set (its default would leave the file).
    ("--compress", "SIGXCPU", 152, "hw2: terminated (SIGXCPU); no output written"),
])
def test_signal_during_the_write_removes_the_partial_file(mode, name, status, line, tmp_path):
    signum = signal_named(name)
    if mode == "--compress":
        source, output = small_png(tmp_path), tmp_path / "c.npz"
    else:
        source, output = codebook_of(tmp_path / "c.npz", noise((20, 30, 3))), tmp_path / "b.png"
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", DEFAULT_SIGNALS + SLOW_WRITE, str(HW2), str(ready), mode,
         str(source), "--output", str(output)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(ready, child)
        assert ready.exists(), child.communicate(timeout=60)
        assert any(name.startswith(".hw2-") for name in os.listdir(tmp_path))  # in progress
        child.send_signal(signum)
        stdout, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == status
    assert stdout == "" and stderr == line + "\n"
    assert sorted(os.listdir(tmp_path)) == sorted([source.name, "ready"])


@posix_signals
@pytest.mark.parametrize("name, status, line", [
    ("SIGINT", 130, "hw2: interrupted; no output written"),
    ("SIGTERM", 143, "hw2: terminated (SIGTERM); no output written"),
])
def test_a_signal_while_numpy_loads_gives_the_usual_line(name, status, line, tmp_path):
    # A stand-in NumPy that takes as long to import as the user likes: the signal arrives
    # at start-up, before any work.
    signum = signal_named(name)
    fake = tmp_path / "fake" / "numpy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import pathlib, sys, time\n"
        f"pathlib.Path({str(tmp_path / 'loading')!r}).touch()\n"
        "time.sleep(60)\n")
    child = subprocess.Popen(
        [sys.executable, "-c", DEFAULT_SIGNALS + "import runpy, sys\nsys.argv = sys.argv[1:]\n"
         "runpy.run_path(sys.argv[0], run_name='__main__')", str(HW2), "--compress",
         str(ROCKET), "--output", str(tmp_path / "c.npz")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(fake.parent)})
    try:
        wait_for(tmp_path / "loading", child)
        child.send_signal(signum)
        stdout, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert (child.returncode, stdout, stderr) == (status, "", line + "\n")
    assert not (tmp_path / "c.npz").exists()


# ---------------------------------------------------------------- stdout and stderr

def run_with_streams(tmp_path, redirect):
    """Compress a small image in a shell with ``redirect`` applied; (status, stdout, stderr)."""
    if shutil.which("sh") is None:
        pytest.skip("closes or redirects hw2's streams in a POSIX shell (sh)")
    image = small_png(tmp_path)
    done = subprocess.run(
        ["sh", "-c", f'"$0" "$@" {redirect}', sys.executable, str(HW2), "--compress", str(image),
         "--clusters", "3", "--output", str(tmp_path / "c.npz")],
        capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("redirect, why", [("> /dev/full", "No space left on device"),
                                           (">&-", "closed")])
def test_a_lost_result_line_is_one_error_line(redirect, why, tmp_path):
    if "/dev/full" in redirect and not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    status, _, stderr = run_with_streams(tmp_path, redirect)
    assert status == 1
    assert stderr == (f"hw2: error: stdout: {why}; the result line is lost, but "
                      f"{tmp_path / 'c.npz'} was written\n")
    assert sorted(load_codebook(tmp_path / "c.npz")) == KEYS


@pytest.mark.parametrize("redirect", ["2>&-", "2> /dev/full"])
def test_closed_or_full_stderr_keeps_stdout_to_the_result_line(redirect, tmp_path):
    if "/dev/full" in redirect and not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    status, stdout, _ = run_with_streams(tmp_path, redirect)
    assert status == 0
    error = printed_error(stdout)  # exactly one line: the summary did not come here
    book = load_codebook(tmp_path / "c.npz")
    diff = grader_pixels(tmp_path / "in.png").reshape(-1, 3) - book["means"][book["assignments"]]
    assert error == pytest.approx(np.sqrt((diff ** 2).sum(axis=1)).mean(), rel=1e-9)


def test_stdout_closed_early_exits_1_without_traceback(tmp_path):
    """``python3 hw2.py ... | head -c0``: the reader is gone before the result line."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, str(HW2), "--compress", str(small_png(tmp_path)), "--clusters",
             "3", "--output", str(tmp_path / "c.npz")], stdout=write_end,
            stderr=subprocess.PIPE, text=True, timeout=60,
            # Buffered stdout, as in a user's shell: the lost line shows only when hw2
            # flushes it (PYTHONUNBUFFERED=1 in the environment would hide that).
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr
    assert sorted(load_codebook(tmp_path / "c.npz")) == KEYS


# ---------------------------------------------------------------- resource limits

def test_file_size_limit_gives_one_line_and_leaves_nothing(tmp_path):
    book = codebook_of(tmp_path / "c.npz", noise((64, 64, 3)))
    out = tmp_path / "back.jp2"
    out.write_bytes(OLD_BYTES)
    status, stdout, stderr = run_child("--decompress", book, "--output", out,
                                       before=rlimit("RLIMIT_FSIZE", 4096))
    assert (status, stdout) == (1, "") and stderr.splitlines() == [stderr.strip()]
    assert "cannot write: File too large" in stderr
    assert out.read_bytes() == OLD_BYTES
    assert sorted(os.listdir(tmp_path)) == ["back.jp2", "c.npz"]


def test_numpy_failing_to_load_for_want_of_memory_is_named(tmp_path):
    # Under a 40 MB address space NumPy's libraries cannot be mapped: the ImportError
    # names no missing package.
    status, stdout, stderr = run_child("--compress", small_png(tmp_path), "--output",
                                       tmp_path / "c.npz", before=rlimit("RLIMIT_AS", 40 << 20))
    assert (status, stdout) == (1, "") and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("hw2: error: NumPy or Pillow failed to load (")
    assert "package None" not in stderr and "Traceback" not in stderr
    assert not (tmp_path / "c.npz").exists()


@pytest.mark.parametrize("failure", [OSError(errno.EMFILE, "Too many open files"), MemoryError()],
                         ids=["too-many-open-files", "out-of-memory"])
def test_a_failure_before_the_modules_load_is_one_line(failure, photo, tmp_path, monkeypatch):
    # main() opens os.devnull before it imports codec: that open may fail on its own.
    real_open = os.open

    def failing_open(path, *args, **kwargs):
        if path == os.devnull:
            raise failure
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", failing_open)
    status, stdout, stderr = run_hw2("--compress", photo, "--output", tmp_path / "c.npz")
    assert (status, stdout) == (1, "") and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("hw2: error: ") and "Traceback" not in stderr
    assert ("Too many open files" if isinstance(failure, OSError) else "out of memory") in stderr
    assert not (tmp_path / "c.npz").exists()


# ---------------------------------------------------------------- start-up and environment

@pytest.mark.parametrize("package", ["numpy", "PIL"])
def test_a_missing_package_is_one_line_naming_it(tmp_path, package):
    # A student's python3 without the requirements: the line says what to install.
    status, stdout, stderr = run_child("--compress", small_png(tmp_path), "--output",
                                       tmp_path / "c.npz",
                                       before=f"sys.modules[{package!r}] = None")
    assert (status, stdout) == (1, "")
    assert stderr == (f"hw2: error: the Python package {package!r} is missing; install them "
                      "with: python3 -m pip install -r requirements.txt\n")
    assert not (tmp_path / "c.npz").exists()


def test_no_python_warning_reaches_the_user(tmp_path):
    # Long-double means beyond float64's range: NumPy warns while casting them, and
    # PYTHONWARNINGS=error would turn that warning into a traceback.
    means = np.array([[1e300, 0, 0], [0, 0, 0]], dtype=np.longdouble)
    means[0, 0] *= np.longdouble(1e300)
    book = tmp_path / "ld.npz"
    np.savez(book, assignments=np.array([0, 1, 1, 0], dtype=np.uint8), means=means,
             img_shape=np.array([2, 2, 3]))
    status, stdout, stderr = run_child("--decompress", book, "--output", tmp_path / "b.png",
                                       env={"PYTHONWARNINGS": "error"})
    assert status in (0, 1) and stdout == ""
    assert all(line.startswith("hw2: ") for line in stderr.splitlines()), stderr


def test_isolated_mode_finds_hw2s_own_modules(tmp_path):
    # python3 -I leaves the script's folder off sys.path (and the environment aside).
    done = subprocess.run([sys.executable, "-I", str(HW2), "--compress", str(small_png(tmp_path)),
                           "--clusters", "3", "--output", str(tmp_path / "c.npz"), "-q"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    printed_error(done.stdout)
    assert sorted(load_codebook(tmp_path / "c.npz")) == KEYS


@pytest.mark.parametrize("mode", ["--compress", "--decompress"])
def test_deleted_current_folder_with_a_relative_output_gives_one_line(mode, photo, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    source = photo if mode == "--compress" else codebook_of(tmp_path / "c.npz", noise((3, 4, 3)))
    out = "out.npz" if mode == "--compress" else "out.png"
    status, stdout, stderr = run_child(mode, source, "--output", out, cwd=gone,
                                       before="import os\nos.rmdir(os.getcwd())")
    assert (status, stdout) == (1, "") and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("hw2: error: ")
    assert out in stderr and "current folder" in stderr and "full path" in stderr


def test_a_file_name_the_locale_cannot_decode_is_shown_byte_for_byte(tmp_path):
    # Under LC_ALL=C Python decodes file names as UTF-8 and keeps a byte that is not
    # UTF-8 (here Latin-1 e-acute, 0xE9) as a surrogate; the line shows the byte.
    name = os.fsencode(tmp_path) + b"/caf\xe9.png"
    os.rename(small_png(tmp_path), name)
    done = subprocess.run([sys.executable, str(HW2), "--compress", name, "--clusters", "3",
                           "--output", os.fsencode(tmp_path) + b"/c.npz"],
                          capture_output=True, timeout=60, env={**os.environ, "LC_ALL": "C"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"Reconstruction error is ")
    status, _, stderr = run_hw2("--compress", os.fsdecode(name)[:-4] + ".jpg", "--output",
                                tmp_path / "d.npz")
    assert status == 1 and "caf\\xe9.jpg: no such file" in stderr, stderr
