"""Bad images, bad paths and bad outputs: one clear line and a non-zero exit, nothing lost.

Every failing run is checked the same way (see ``assert_failed``): exit status 1,
exactly one stderr line starting ``hw2: error:`` that names the file, nothing on
stdout, no traceback, no temporary file left beside the output, and an existing
``--output`` file byte for byte unchanged.  Tests that need root (mknod, mounting a
small tmpfs) or a POSIX call (mkfifo, Unix sockets) skip with the reason elsewhere.
"""
import builtins
import errno
import io
import math
import os
import socket
import stat
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import codec
from conftest import (KEYS, OLD_BYTES, ROCKET, assert_failed, codebook_of, good_arrays,
                      load_codebook, noise, rlimit, run_child, run_hw2, save_npz)

MODES = ["--compress", "--decompress"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def source_for(mode, photo, tmp_path):
    """The input of ``mode``: the photo, or a codebook of a small image."""
    return photo if mode == "--compress" else codebook_of(tmp_path / "c.npz", noise((3, 4, 3)))


def tree(folder):
    """Every path below ``folder`` (links not followed)."""
    return sorted(os.path.join(top, name) for top, dirs, files in os.walk(folder)
                  for name in dirs + files)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring_size(width, height):
    """A PNG whose header declares ``width`` x ``height`` (the data is one pixel)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def saved(fmt, pixels=None, **options):
    """The bytes of ``pixels`` (default: a small noisy RGB image) saved by Pillow as ``fmt``."""
    buffer = io.BytesIO()
    Image.fromarray(noise((10, 12, 3)) if pixels is None else pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def png_text_bomb():
    # 80 MB of text that compresses to 350 KB: more than any one chunk may hold.
    good = saved("PNG")
    return good[:33] + png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(bytes(80_000_000), 1)) \
        + good[33:]


def codebook_bytes():
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **good_arrays())
    return buffer.getvalue()


# ---------------------------------------------------------------- images hw2 does not read

@pytest.mark.parametrize("name, data, words", [
    ("notes.jpg", lambda: b"shopping list: eggs\n", ["not an image file"]),
    ("empty.png", lambda: b"", ["not an image file"]),
    ("cut.png", lambda: saved("PNG")[:len(saved("PNG")) * 2 // 3], ["damaged or truncated"]),
    ("cut.jpg", lambda: saved("JPEG")[:len(saved("JPEG")) * 2 // 3], ["damaged or truncated"]),
    ("bomb.png", png_text_bomb, ["damaged or truncated"]),
    ("c.npz", codebook_bytes, ["not an image but a zip archive, as codebooks are: "
                               "use --decompress for those"]),
    ("slice.spi", lambda: saved("SPIDER", np.zeros((8, 8), np.float32)),
     ["its format is SPIDER; hw2 reads the raster formats PNG, JPEG, ",
      "(and HEIC with pillow-heif): convert it to PNG first"]),
    # An iPhone photo's first box; Pillow reads HEIF only through pillow-heif, optional.
    ("IMG_0001.HEIC", lambda: b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64),
     ["pillow-heif", "save it as JPEG"]),
])
def test_a_file_hw2_cannot_read_as_an_image_is_one_line(name, data, words, tmp_path,
                                                         monkeypatch):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as where the plugin is not installed
    path = tmp_path / name
    path.write_bytes(data())
    assert_failed(*run_hw2("--compress", path, "--output", tmp_path / "out.npz"), path, *words)
    assert os.listdir(tmp_path) == [name]  # no output, no temporary file
    assert PngImagePlugin.MAX_TEXT_CHUNK == 1024 * 1024  # Pillow's own limit, restored


def test_a_small_file_claiming_a_large_image_that_fits_is_damaged(tmp_path, old_output):
    # 98 MP fit in memory, so the image is decoded, and its missing data found at once.
    side = math.isqrt(int(1.1 * 89_478_485))  # past Pillow's own guard against bombs
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring_size(side, side))
    out = old_output("c.npz")
    assert_failed(*run_hw2("--compress", bomb, "--output", out), bomb, "damaged or truncated",
                  output=out)


def test_eps_is_refused_naming_its_format_and_never_starts_ghostscript(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    marker = tmp_path / "gs-ran"
    gs = fake_bin / "gs"
    gs.write_text(f"#!/bin/sh\ntouch {marker}\necho gs says hello\n")
    gs.chmod(0o755)
    eps = tmp_path / "drawing.eps"
    Image.fromarray(noise((8, 8, 3))).save(eps)
    path = f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    status, stdout, stderr = run_child("--compress", eps, "--output", tmp_path / "c.npz",
                                       env={"PATH": path})
    assert_failed(status, stdout, stderr, eps, "its format is EPS", "raster")
    assert not marker.exists() and not (tmp_path / "c.npz").exists()


def test_a_library_log_line_never_reaches_stderr(tmp_path):
    """A TIFF declaring 9999 samples a pixel: Pillow logs an error, hw2 shows its one line."""
    data = bytearray(saved("TIFF"))
    ifd = struct.unpack_from("<I", data, 4)[0]
    for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack_from("<H", data, ifd)[0], 12):
        if struct.unpack_from("<H", data, entry)[0] == 277:  # SamplesPerPixel
            struct.pack_into("<H", data, entry + 8, 9999)
    path = tmp_path / "odd.tif"
    path.write_bytes(data)
    # In a child: in-process, pytest would catch the log line.
    assert_failed(*run_child("--compress", path, "--output", tmp_path / "c.npz"), path,
                  output=tmp_path / "c.npz")


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_photo_followed_by_a_gigabyte_is_read_with_the_memory_of_the_photo(ext, tmp_path):
    photo = tmp_path / f"photo{ext}"
    with Image.open(ROCKET) as image:
        image.resize((160, 107)).save(photo)  # small: the point is the file's size
    with open(photo, "r+b") as handle:  # 1 GiB of zeros after the image, sparse on disk
        handle.truncate(photo.stat().st_size + (1 << 30))
    status, stdout, stderr = run_child("--compress", photo, "--clusters", 4, "--output",
                                       tmp_path / "c.npz", "-q",
                                       before=rlimit("RLIMIT_AS", 512 << 20))
    assert status == 0, stderr
    assert stdout.startswith("Reconstruction error is ")


# ---------------------------------------------------------------- bad input paths

def bad_path(case, tmp_path, existing):
    """A bad path of kind ``case`` near ``existing`` (a file), and the words that name it."""
    folder, suffix = tmp_path / "folder", existing.suffix
    folder.mkdir()
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    part_is_a_file = ["not a directory", "a part of the path is a file"]
    path, words = {
        "under-a-file": (f"{existing}/", part_is_a_file),
        "under-a-file-deeper": (f"{existing}/x{suffix}", part_is_a_file),
        "symlink-loop": (str(loop), ["too many levels of symbolic links"]),
        "name-too-long": (str(tmp_path / ("x" * 300 + suffix)), ["file name too long"]),
        "path-too-long": (str(tmp_path / "a" / ("b/" * 2100) / f"c{suffix}"),
                          ["file name too long"]),
        "missing": (str(tmp_path / f"nope{suffix}"), ["no such file"]),
        "missing-folder": (str(tmp_path / "no" / "such" / f"out{suffix}"), ["does not exist"]),
        "directory": (str(folder), ["is a directory"]),
        "directory/": (f"{folder}/", ["is a directory", folder]),
    }[case]
    return path, [path] + words if case != "directory/" else words


COMMON = ["under-a-file", "under-a-file-deeper", "symlink-loop", "name-too-long",
          "path-too-long"]


@pytest.mark.parametrize("case", COMMON + ["missing", "directory"])
@pytest.mark.parametrize("mode", MODES)
def test_bad_input_path_says_what_is_wrong(case, mode, photo, tmp_path, old_output):
    bad, words = bad_path(case, tmp_path, source_for(mode, photo, tmp_path))
    out = old_output("out.npz" if mode == "--compress" else "out.png")
    line = assert_failed(*run_hw2(mode, bad, "--output", out), *words, output=out)
    assert "damaged" not in line


@pytest.mark.parametrize("mode, what", [("--compress", "an image"),
                                        ("--decompress", "a codebook")])
def test_input_that_is_a_pipe_is_refused_without_blocking(mode, what, tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("makes a named pipe (os.mkfifo, POSIX)")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it for reading would wait forever for a writer
    assert_failed(*run_hw2(mode, fifo, "--output", tmp_path / "out.png"),
                  fifo, f"not a regular file, so not {what}")


@pytest.mark.parametrize("mode", MODES)
def test_unreadable_input(mode, photo, tmp_path, old_output, monkeypatch):
    # Opening the input fails with EACCES, as chmod 000 makes it for a user who is not
    # root (the tests may run as root); Pillow opens with builtins.open, zipfile io.open.
    source = source_for(mode, photo, tmp_path)
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(source):
            raise PermissionError(13, "Permission denied", str(source))
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    out = old_output("out.npz" if mode == "--compress" else "out.png")
    assert_failed(*run_hw2(mode, source, "--output", out), source, "permission denied",
                  output=out)


def test_control_characters_in_a_path_stay_on_one_line(tmp_path):
    missing = tmp_path / "two\nlines.png"
    line = assert_failed(*run_hw2("--compress", missing, "--output", tmp_path / "c"),
                         "no such file")
    assert "two\\nlines.png" in line


# ---------------------------------------------------------------- bad output paths

@pytest.mark.parametrize("case", COMMON + ["missing-folder", "directory", "directory/"])
@pytest.mark.parametrize("mode", MODES)
def test_bad_output_path_says_what_is_wrong_before_any_work(case, mode, photo, tmp_path,
                                                            spy_work):
    existing = tmp_path / ("old.npz" if mode == "--compress" else "old.png")
    existing.write_bytes(OLD_BYTES)
    source = source_for(mode, photo, tmp_path)
    bad, words = bad_path(case, tmp_path, existing)
    before = tree(tmp_path)
    line = assert_failed(*run_hw2(mode, source, "--output", bad), *words,
                         output=tmp_path / "unwritten")
    assert ".hw2-" not in line and spy_work == []
    assert existing.read_bytes() == OLD_BYTES and tree(tmp_path) == before


def make_fifo(path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("makes a named pipe (os.mkfifo, POSIX)")
    os.mkfifo(path)


def make_socket(path):
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("makes a Unix socket (socket.AF_UNIX)")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
    except OSError as exc:  # macOS: temporary folders deeper than a socket name allows
        server.close()
        pytest.skip(f"cannot make a socket at {path}: {exc}")
    return server


def make_device(kind, numbers):
    def make(path):
        if not (hasattr(os, "mknod") and IS_ROOT):
            pytest.skip("makes a device file (os.mknod, as root)")
        os.mknod(path, kind | 0o600, os.makedev(*numbers))
    return make


@pytest.mark.parametrize("make", [
    make_fifo, make_socket,
    make_device(stat.S_IFCHR, (1, 3)),     # the numbers of /dev/null
    make_device(stat.S_IFBLK, (7, 250)),   # a loop device's numbers
], ids=["fifo", "socket", "dev-null", "block-device"])
@pytest.mark.parametrize("mode", MODES)
def test_special_file_as_output_is_refused_before_any_work(make, mode, photo, tmp_path,
                                                          spy_work):
    special = tmp_path / ("special.npz" if mode == "--compress" else "special.png")
    kept = make(special)
    before = os.stat(special)
    source = source_for(mode, photo, tmp_path)
    assert_failed(*run_hw2(mode, source, "--output", special), special, "not a regular file",
                  output=tmp_path / "unwritten")
    after = os.stat(special)
    assert (after.st_ino, after.st_mode, after.st_rdev) == \
           (before.st_ino, before.st_mode, before.st_rdev)
    assert spy_work == []
    if kept is not None:
        kept.close()


@pytest.mark.parametrize("mode", MODES)
def test_output_dash_is_refused_saying_hw2_writes_files(mode, photo, tmp_path, spy_work,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = source_for(mode, photo, tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert_failed(*run_hw2(mode, source, "--output", "-"), "writes its output to a file")
    assert sorted(os.listdir(tmp_path)) == before and spy_work == []


@pytest.mark.parametrize("link", [False, True])
def test_output_that_is_the_input_is_refused(link, photo, tmp_path, spy_work):
    out = tmp_path / "link.png" if link else photo
    if link:
        out.symlink_to(photo)
    before = photo.read_bytes()
    assert_failed(*run_hw2("--compress", photo, "--output", out), out, "is the input file")
    assert photo.read_bytes() == before and spy_work == [] and out.is_symlink() == link


def test_deleted_current_folder_is_named_by_check_output_path(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(codec.CodecError, match="c.npz: the current folder no longer exists"):
        codec.check_output_path("c.npz")


# ---------------------------------------------------------------- output paths kept as they are

def test_output_symlink_is_followed_and_stays_a_link(photo, tmp_path):
    target = tmp_path / "real" / "c.npz"
    target.parent.mkdir()
    target.write_bytes(OLD_BYTES)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    assert run_hw2("--compress", photo, "--output", link)[0] == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert sorted(load_codebook(target)) == KEYS


def test_dangling_output_symlink_creates_its_target(photo, tmp_path):
    target = tmp_path / "made.npz"
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    assert run_hw2("--compress", photo, "--output", link)[0] == 0
    assert link.is_symlink() and target.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "made.npz", "photo.png"]


@pytest.mark.parametrize("mode", MODES)
def test_replaced_output_keeps_its_permission_bits(mode, photo, tmp_path):
    out = tmp_path / ("out.npz" if mode == "--compress" else "back.png")
    out.write_bytes(OLD_BYTES)
    out.chmod(0o640)
    assert run_hw2(mode, source_for(mode, photo, tmp_path), "--output", out)[0] == 0
    assert out.read_bytes() != OLD_BYTES
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


# ---------------------------------------------------------------- image outputs hw2 refuses

@pytest.mark.parametrize("name, words", [
    ("back", ["no file extension"]),
    ("back.xyz", ["cannot write images with extension '.xyz'", ".png"]),
    ("back.xbm", ["cannot write", "'.xbm'"]),   # Pillow writes XBM from bilevel images only
    ("back.bufr", ["cannot write", "'.bufr'"]),  # registered, but no save handler installed
    # Pillow's ICNS writer stretches any image to 1024x1024.
    ("back.icns", ["cannot write", "'.icns'"]),
    # AVIF: Pillow writes it lossily only; EPS: not a raster format; PBM: black and white.
    ("back.avif", ["cannot write images with extension '.avif'"]),
    ("back.eps", ["cannot write images with extension '.eps'"]),
    ("back.pbm", ["cannot write images with extension '.pbm'"]),
])
def test_decompress_output_extension_is_checked_before_reading(name, words, tmp_path,
                                                               old_output, spy_work):
    book = save_npz(tmp_path / "c.npz", **good_arrays())
    out = old_output(name)
    assert_failed(*run_hw2("--decompress", book, "--output", out), out, *words, output=out)
    assert spy_work == []


WIDE = (1, 70_000, 3)


@pytest.mark.parametrize("name, img_shape, words", [
    ("back.ico", (200, 300, 3), ["at most 256 pixels a side", "300x200"]),  # Pillow would shrink
    ("back.gif", WIDE, ["cannot write this 70000x1 RGB image as GIF"]),     # 16-bit sizes
    ("back.jpg", WIDE, ["at most 65,500 pixels a side", "70000x1"]),
    ("back.pdf", WIDE, ["at most 65,500 pixels a side", "70000x1"]),
    ("back.webp", WIDE, ["at most 16,383 pixels a side", "70000x1"]),
    ("back.pgm", (4, 5, 3), ["holds grey images only", "RGB"]),
    ("back.pgm", (4, 5, 4), ["holds grey images only", "RGB"]),
])
def test_an_image_its_format_cannot_hold_is_one_line(name, img_shape, words, tmp_path,
                                                     old_output, capfd):
    book = codebook_of(tmp_path / "c.npz", np.full(img_shape, 7, np.uint8))
    out = old_output(name)
    capfd.readouterr()
    result = run_hw2("--decompress", book, "--output", out)
    assert capfd.readouterr() == ("", "")  # at fd level too: libjpeg writes to fd 2 itself
    assert_failed(*result, out, *words, output=out)


# ---------------------------------------------------------------- writes that fail

@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs, filled up but for an existing output file; unmounted after."""
    if not IS_ROOT:
        pytest.skip("needs root to mount a tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (disk / "back.jp2").write_bytes(OLD_BYTES)
        filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(filler, b"\0" * 4096):
                pass
        except OSError:
            pass  # full
        finally:
            os.close(filler)
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("ext", [".jp2", ".png"])  # every format is encoded, then written
def test_full_disk_gives_one_line_and_leaves_nothing(ext, small_disk, tmp_path):
    book = codebook_of(tmp_path / "c.npz", noise((64, 64, 3)))
    out = small_disk / f"back{ext}"
    status, stdout, stderr = run_child("--decompress", book, "--output", out)
    assert_failed(status, stdout, stderr, f"{out}: cannot write: No space left on device")
    assert sorted(os.listdir(small_disk)) == sorted(["back.jp2", "filler"])
    assert (small_disk / "back.jp2").read_bytes() == OLD_BYTES


@pytest.mark.parametrize("failure, status, message", [
    (KeyboardInterrupt, 130, "hw2: interrupted; no output written"),
    (MemoryError, 1, "hw2: error: out of memory"),
    (OSError(28, "No space left on device"), 1, "hw2: error: "),
])
def test_failed_codebook_write_leaves_no_trace(failure, status, message, photo, old_output,
                                               monkeypatch):
    out = old_output("c.npz")

    def half_written(handle, **arrays):
        handle.write(b"PK\x03\x04 partial")
        raise failure
    monkeypatch.setattr(np, "savez_compressed", half_written)
    result_status, stdout, err = run_hw2("--compress", photo, "--output", out)
    assert result_status == status and stdout == ""
    assert err.splitlines() == [err.strip()] and err.startswith(message)
    assert out.read_bytes() == OLD_BYTES
    assert sorted(p.name for p in out.parent.iterdir()) == ["c.npz", "photo.png"]


def fail_saving(monkeypatch, fail, tmp_path, pixels, ext):
    """Make Pillow's ``save`` call ``fail(handle)``, once codec has written ``pixels``.

    codec asks Pillow once per format and mode whether it can write them and
    remembers the answer; writing the same kind of image first, with the real
    ``save``, keeps that answer true, so later tests do not inherit this failure.
    """
    warm_up = tmp_path / f"warm-up{ext}"
    codec.write_image(str(warm_up), Image.fromarray(pixels))
    warm_up.unlink()
    monkeypatch.setattr(Image.Image, "save", lambda image, fp, *args, **kwargs: fail(fp))


@pytest.mark.parametrize("failure, status", [(KeyboardInterrupt, 130), (MemoryError, 1)])
def test_failed_image_write_leaves_no_trace(failure, status, tmp_path, old_output,
                                            monkeypatch):
    book = save_npz(tmp_path / "c.npz", **good_arrays())
    out = old_output("back.png")

    def half_saved(handle):
        handle.write(b"\x89PNG partial")
        raise failure
    fail_saving(monkeypatch, half_saved, tmp_path, np.zeros((3, 4, 3), np.uint8), ".png")
    result_status, stdout, err = run_hw2("--decompress", book, "--output", out)
    assert result_status == status and stdout == "" and len(err.splitlines()) == 1
    assert out.read_bytes() == OLD_BYTES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.png", "c.npz"]


def test_a_full_disk_is_reported_as_such_not_as_a_format_problem(tmp_path, monkeypatch):
    def full_disk(handle):
        raise OSError(errno.ENOSPC, "No space left on device")
    pixels = np.zeros((4, 4), dtype=np.uint8)
    fail_saving(monkeypatch, full_disk, tmp_path, pixels, ".png")
    with pytest.raises(codec.CodecError, match="No space left on device") as caught:
        codec.write_image(str(tmp_path / "out.png"), Image.fromarray(pixels))
    assert "Pillow cannot write" not in str(caught.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("memory_left", [False, True])
def test_an_encoders_own_error_is_out_of_memory_only_when_memory_is_short(memory_left, tmp_path,
                                                                         monkeypatch):
    # Encoders word running out of memory their own way (libwebp: "encoding error 1").
    def encoder_error(handle):
        raise OSError("encoding error 1")
    pixels = noise((6, 7, 3))
    fail_saving(monkeypatch, encoder_error, tmp_path, pixels, ".webp")
    real_empty = np.empty

    def short_of_memory(shape, *args, **kwargs):
        if shape == 32 * 7 * 6:  # the 8 copies of the image codec asks for
            raise MemoryError
        return real_empty(shape, *args, **kwargs)
    if not memory_left:
        monkeypatch.setattr(np, "empty", short_of_memory)
    expected = codec.CodecError if memory_left else MemoryError
    with pytest.raises(expected):
        codec.write_image(str(tmp_path / "x.webp"), Image.fromarray(pixels))
    assert os.listdir(tmp_path) == []
