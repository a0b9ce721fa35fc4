"""Hostile input, second and third rounds (issues 12 and 17): nothing lost, nothing hung.

Special files as --output, a full disk or a file-size limit while writing,
alpha that a format cannot hold, big PNG metadata, path errors that must say
what is wrong, formats that would start another program, hostile codebooks,
memory that must follow the image and not the file, and the decisions for
cases that could go either way.  Failing runs are checked as in
test_errors.py: one ``hw2: error:`` line that names the file, nothing on
stdout, no temporary file left, an existing output untouched.  Tests that
need root (mknod, mounting a small tmpfs) skip with the reason when not root.
"""
import importlib.util
import io
import os
import socket
import stat
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import codec
import hw2
from conftest import assert_failed

HERE = os.path.dirname(os.path.abspath(__file__))
HW2 = os.path.join(HERE, "..", "hw2.py")
ROCKET = os.path.join(HERE, "..", "samples", "rocket.jpg")
OLD_BYTES = b"the user's precious file\n"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod, mount)")


# --- helpers ------------------------------------------------------------------

def run(capsys, *argv):
    status = hw2.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def save_npz(path, compression=zipfile.ZIP_DEFLATED, **arrays):
    """A codebook whose members use ``compression``."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, value)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    return path


def codebook(path, pixels):
    """A codebook storing ``pixels`` exactly: one mean per distinct colour."""
    flat = pixels.reshape(pixels.shape[0] * pixels.shape[1], -1)
    means, labels = np.unique(flat, axis=0, return_inverse=True)
    return save_npz(path, assignments=labels.reshape(-1).astype(np.uint16),
                    means=means.astype(np.float64), img_shape=np.array(pixels.shape))


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# The seven passes of Adam7 interlacing (PNG specification): first column, first
# row, column step, row step.
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def png_bytes(samples, colour_type, depth=8, interlaced=False):
    """A PNG of ``samples`` (H, W, C) written by hand, unfiltered."""
    rows, width = samples.shape[0], samples.shape[1]
    dtype = ">u2" if depth == 16 else np.uint8
    passes = ADAM7 if interlaced else [(0, 0, 1, 1)]
    raw = b"".join(b"\0" + np.ascontiguousarray(row).astype(dtype).tobytes()
                   for x0, y0, dx, dy in passes for row in samples[y0::dy, x0::dx]
                   if row.shape[0])
    header = struct.pack(">IIBBBBB", width, rows, depth, colour_type, 0, 0, int(interlaced))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) +
            png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def noise(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# --- 1. special files as --output ------------------------------------------------------

def make_fifo(path):
    os.mkfifo(path)


def make_socket(path):
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(path))
    except OSError as exc:  # macOS: temporary folders deeper than a socket name allows
        server.close()
        pytest.skip(f"cannot make a socket at {path}: {exc}")
    return server


def make_dev_null(path):
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # the numbers of /dev/null


def make_block_device(path):
    os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(7, 250))  # a loop device's numbers


@pytest.mark.parametrize("make", [
    make_fifo, make_socket,
    pytest.param(make_dev_null, marks=needs_root),
    pytest.param(make_block_device, marks=needs_root)])
@pytest.mark.parametrize("mode", ["--compress", "--decompress"])
def test_special_file_as_output_is_refused_before_any_work(make, mode, photo, tmp_path,
                                                          spy_work, capsys):
    special = tmp_path / ("special.npz" if mode == "--compress" else "special.png")
    kept = make(special)
    before = os.stat(special)
    source = photo if mode == "--compress" else codebook(tmp_path / "c.npz", noise((3, 4, 3)))
    assert_failed(*run(capsys, mode, source, "--output", special), special,
                  "not a regular file", output=tmp_path / "unwritten")
    after = os.stat(special)
    assert (after.st_ino, after.st_mode, after.st_rdev) == \
           (before.st_ino, before.st_mode, before.st_rdev)
    assert spy_work == []
    if kept is not None:
        kept.close()


@pytest.mark.parametrize("mode", ["--compress", "--decompress"])
def test_output_dash_is_refused_saying_hw2_writes_files(mode, photo, tmp_path, spy_work,
                                                       monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    source = photo if mode == "--compress" else codebook(tmp_path / "c.npz", noise((3, 4, 3)))
    before = sorted(os.listdir(tmp_path))
    assert_failed(*run(capsys, mode, source, "--output", "-"), "writes its output to a file")
    assert sorted(os.listdir(tmp_path)) == before and spy_work == []


# --- 2. raster variants that must read (the allowlist of formats) -----------------------

def save_bytes(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rocket():
    with Image.open(ROCKET) as image:
        return image.convert("RGB")


def jpeg_with_markers_in_its_metadata():
    """A JPEG whose comment and EXIF hold scan-start markers (0xFF 0xDA) as data."""
    image = rocket()
    exif = image.getexif()
    exif[0x010E] = "\xff\xda\x00\x0c" * 20  # ImageDescription
    return save_bytes(image, "JPEG", exif=exif, comment=b"\xff\xda\x00\x0c" * 50)


VALID = {
    "baseline 4:2:0": lambda: save_bytes(rocket(), "JPEG", quality=90, subsampling=2),
    "baseline 4:4:4": lambda: save_bytes(rocket(), "JPEG", quality=90, subsampling=0),
    "grey jpeg": lambda: save_bytes(rocket().convert("L"), "JPEG"),
    "cmyk jpeg": lambda: save_bytes(rocket().convert("CMYK"), "JPEG"),
    "progressive jpeg": lambda: save_bytes(rocket(), "JPEG", progressive=True),
    "restart markers": lambda: save_bytes(rocket(), "JPEG", restart_marker_blocks=3),
    "markers in metadata": jpeg_with_markers_in_its_metadata,
    "data after the end": lambda: save_bytes(rocket(), "JPEG") + b"trailer\xff\xd8\xff",
    "bottom rows black": lambda: save_bytes(
        Image.fromarray(np.vstack([np.asarray(rocket())[:400], np.zeros((27, 640, 3),
                                                                         np.uint8)])), "JPEG"),
    "mpo": lambda: save_bytes(rocket(), "MPO", save_all=True,
                              append_images=[rocket().rotate(90)]),
    "interlaced png": lambda: png_bytes(noise((20, 24, 3)), colour_type=2, interlaced=True),
    "interlaced 16-bit png": lambda: png_bytes(
        np.random.default_rng(3).integers(0, 65536, (9, 11, 4)), colour_type=6, depth=16,
        interlaced=True),
    "1-bit png": lambda: save_bytes(Image.fromarray(noise((13, 17)) > 127), "PNG"),
    "apng": lambda: save_bytes(rocket(), "PNG", save_all=True,
                               append_images=[rocket().rotate(90)]),
    "gif frames": lambda: save_bytes(rocket(), "GIF", save_all=True,
                                     append_images=[rocket().rotate(90)]),
    "tiff pages": lambda: save_bytes(rocket(), "TIFF", save_all=True,
                                     append_images=[rocket().rotate(90)]),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_raster_variants_are_read(name, tmp_path):
    path = tmp_path / "valid.img"
    path.write_bytes(VALID[name]())
    with Image.open(path) as image:
        image.load()
        expected = np.asarray(image.convert("RGBA" if "A" in image.mode else "RGB"))
    got = codec.read_image(str(path))
    assert got.shape[:2] == expected.shape[:2]


# --- 3. a full disk or a file-size limit while writing ------------------------------

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


def run_hw2(*argv, limit_bytes=None, timeout=30):
    """Run hw2.py in a child process, optionally under a file-size limit."""
    def limit():
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return subprocess.run([sys.executable, HW2, *map(str, argv)], capture_output=True,
                          text=True, timeout=timeout,
                          preexec_fn=limit if limit_bytes else None)


@pytest.mark.parametrize("ext", [".jp2", ".png"])  # every format is encoded, then written
def test_full_disk_gives_one_line_and_leaves_nothing(ext, small_disk, tmp_path):
    book = codebook(tmp_path / "c.npz", noise((64, 64, 3)))
    out = small_disk / f"back{ext}"
    done = run_hw2("--decompress", book, "--output", out)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"hw2: error: {out}: cannot write: No space left on device")
    assert sorted(os.listdir(small_disk)) == sorted(["back.jp2", "filler"])
    assert (small_disk / "back.jp2").read_bytes() == OLD_BYTES


@pytest.mark.skipif(not hasattr(os, "fork"), reason="sets a file-size limit in the child")
def test_file_size_limit_gives_one_line_and_leaves_nothing(tmp_path):
    book = codebook(tmp_path / "c.npz", noise((64, 64, 3)))
    out = tmp_path / "back.jp2"
    out.write_bytes(OLD_BYTES)
    done = run_hw2("--decompress", book, "--output", out, limit_bytes=4096)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert "cannot write: File too large" in done.stderr
    assert out.read_bytes() == OLD_BYTES
    assert sorted(os.listdir(tmp_path)) == ["back.jp2", "c.npz"]


@pytest.mark.parametrize("ext", [".jp2", ".png", ".jpg", ".tif", ".webp", ".gif", ".bmp"])
def test_encoders_write_to_memory_never_to_the_disk(ext, tmp_path, monkeypatch):
    """So no encoder meets a disk error (openjpeg loops forever on one, deaf to Ctrl-C)."""
    real_save = Image.Image.save
    targets = []

    def recording_save(self, fp, *args, **kwargs):
        targets.append(type(fp))
        return real_save(self, fp, *args, **kwargs)
    monkeypatch.setattr(Image.Image, "save", recording_save)
    codec.write_image(str(tmp_path / f"x{ext}"), noise((6, 7, 3)))
    assert targets and set(targets) == {io.BytesIO}


# --- 6. transparency ---------------------------------------------------------------------

def partial_alpha_pixels(channels=4):
    """Pixels whose alpha takes 0, 128 and 255: partial transparency."""
    pixels = noise((6, 8, channels), seed=6)
    pixels[..., -1] = np.array([0, 128, 255])[np.arange(48).reshape(6, 8) % 3]
    return pixels


def on_white(pixels):
    """Colour and alpha composited on white: c * a + 255 * (1 - a), a in 0..1."""
    alpha = pixels[..., -1:].astype(np.float64) / 255
    return pixels[..., :-1] * alpha + 255 * (1 - alpha)


@pytest.mark.parametrize("ext", [".gif", ".bmp", ".ppm", ".pcx"])
@pytest.mark.parametrize("channels", [2, 4])
def test_alpha_a_format_cannot_hold_is_composited_and_said(ext, channels, tmp_path, capsys):
    pixels = partial_alpha_pixels(channels)
    book = codebook(tmp_path / "c.npz", pixels)
    out = tmp_path / f"back{ext}"
    status, stdout, err = run(capsys, "--decompress", book, "--output", out)
    assert status == 0 and stdout == ""
    assert "composited on white" in err
    with Image.open(out) as image:
        got = np.asarray(image.convert("RGB")).astype(np.float64)
    expected = on_white(pixels)
    if channels == 2:
        expected = np.repeat(expected, 3, axis=2)
    assert np.abs(got - expected).max() <= 1  # rounding


@pytest.mark.parametrize("ext", [".png", ".tif", ".webp", ".tga", ".jp2"])
@pytest.mark.parametrize("channels", [2, 4])
def test_alpha_is_kept_exactly_where_the_format_can(ext, channels, tmp_path, capsys):
    pixels = partial_alpha_pixels(channels)
    book = codebook(tmp_path / "c.npz", pixels)
    out = tmp_path / f"back{ext}"
    status, _, err = run(capsys, "--decompress", book, "--output", out)
    assert status == 0 and "composited" not in err
    got = codec.read_image(str(out))
    if got.shape[-1] == 4 and channels == 2:  # grey and alpha stored as RGBA
        assert (got[..., 0] == got[..., 1]).all() and (got[..., 0] == got[..., 2]).all()
        got = got[..., [0, 3]]
    np.testing.assert_array_equal(got, pixels)


@pytest.mark.parametrize("channels", [2, 4])
def test_gif_keeps_alpha_that_is_only_0_or_255(channels, tmp_path, capsys):
    pixels = partial_alpha_pixels(channels)
    pixels[..., -1] = np.where(pixels[..., -1] == 128, 255, pixels[..., -1])
    book = codebook(tmp_path / "c.npz", pixels)
    out = tmp_path / "back.gif"
    status, _, err = run(capsys, "--decompress", book, "--output", out)
    assert status == 0 and "composited" not in err
    got = codec.read_image(str(out))
    assert got.shape == (6, 8, 4)
    np.testing.assert_array_equal(got[..., 3], pixels[..., -1])
    visible = pixels[..., -1] == 255
    colours = pixels[..., :-1] if channels == 4 else np.repeat(pixels[..., :1], 3, axis=2)
    np.testing.assert_array_equal(got[visible][:, :3], colours[visible])


# --- 7. big PNG metadata -------------------------------------------------------------------

def png_with(tmp_path, name, **options):
    pixels = noise((5, 7, 3), seed=7)
    path = tmp_path / name
    Image.fromarray(pixels).save(path, **options)
    return path, pixels


def text_info(kind, size):
    info = PngImagePlugin.PngInfo()
    text = ("camera notes " * (size // 13 + 1))[:size]
    if kind == "zTXt":
        info.add_text("Comment", text, zip=True)
    else:
        info.add_itxt("Comment", text, lang="en", tkey="Comment", zip=True)
    return info


@pytest.mark.parametrize("name, options", [
    ("icc.png", lambda: {"icc_profile": bytes(range(256)) * (2 * 4096)}),  # 2 MiB
    ("ztxt.png", lambda: {"pnginfo": text_info("zTXt", 3 << 20)}),
    ("itxt.png", lambda: {"pnginfo": text_info("iTXt", 3 << 20)}),
])
def test_png_with_big_metadata_is_read(name, options, tmp_path, capsys):
    path, pixels = png_with(tmp_path, name, **options())
    np.testing.assert_array_equal(codec.read_image(str(path)), pixels)
    status, out, _ = run(capsys, "--compress", path, "--output", tmp_path / "c.npz")
    assert status == 0 and out.startswith("Reconstruction error is ")


def test_png_text_bomb_is_still_refused(tmp_path, capsys):
    # 80 MB of text that compresses to 350 KB: more than any one chunk may hold.
    good = png_bytes(noise((5, 7, 3)), colour_type=2)
    bomb = png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(bytes(80_000_000), 1))
    path = tmp_path / "bomb.png"
    path.write_bytes(good[:33] + bomb + good[33:])
    assert_failed(*run(capsys, "--compress", path, "--output", tmp_path / "c.npz"), path,
                  "damaged or truncated")
    assert PngImagePlugin.MAX_TEXT_CHUNK == 1024 * 1024  # Pillow's own, restored


# --- 10, 11. path errors say what is wrong, and --output is checked before any work --

def path_problems(tmp_path, source):
    """(path, words) for each kind of bad path, with ``source`` an existing file."""
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    return [
        (f"{source}/", ["not a directory", "a part of the path is a file"]),
        (f"{source}/x{source.suffix}", ["not a directory", "a part of the path is a file"]),
        (str(loop), ["too many levels of symbolic links"]),
        (str(tmp_path / ("x" * 300 + source.suffix)), ["file name too long"]),
        (str(tmp_path / "a" / ("b/" * 2100) / f"c{source.suffix}"), ["file name too long"]),
    ]


@pytest.mark.parametrize("case", range(5))
@pytest.mark.parametrize("mode", ["--compress", "--decompress"])
def test_bad_input_path_says_what_is_wrong(case, mode, photo, tmp_path, capsys):
    source = photo if mode == "--compress" else codebook(tmp_path / "c.npz", noise((3, 4, 3)))
    bad, words = path_problems(tmp_path, source)[case]
    line = assert_failed(*run(capsys, mode, bad, "--output", tmp_path / "out.png"), *words)
    assert "damaged" not in line


@pytest.mark.parametrize("case", range(5))
@pytest.mark.parametrize("mode", ["--compress", "--decompress"])
def test_bad_output_path_says_what_is_wrong_before_any_work(case, mode, photo, tmp_path,
                                                            spy_work, capsys):
    existing = tmp_path / ("old.npz" if mode == "--compress" else "old.png")
    existing.write_bytes(OLD_BYTES)
    source = photo if mode == "--compress" else codebook(tmp_path / "c.npz", noise((3, 4, 3)))
    bad, words = path_problems(tmp_path, existing)[case]
    line = assert_failed(*run(capsys, mode, source, "--output", bad), bad, *words,
                         output=tmp_path / "unwritten")
    assert ".hw2-" not in line and spy_work == []
    assert existing.read_bytes() == OLD_BYTES


# --- 12. one line on stderr when libjpeg refuses a size ----------------------------------

@pytest.mark.parametrize("ext, limit", [(".jpg", "65,500"), (".pdf", "65,500"),
                                        (".webp", "16,383")])
def test_image_too_wide_for_its_format_gives_exactly_one_line(ext, limit, tmp_path, capfd):
    book = save_npz(tmp_path / "wide.npz", assignments=np.zeros(70_000, dtype=np.uint8),
                    means=np.array([[1.0, 2.0, 3.0]]), img_shape=np.array([1, 70_000, 3]))
    out = tmp_path / f"wide{ext}"
    status = hw2.main(["--decompress", str(book), "--output", str(out)])
    stdout, stderr = capfd.readouterr()  # fd level: libjpeg writes to fd 2 itself
    assert_failed(status, stdout, stderr, out, f"at most {limit} pixels a side", "70000x1",
                  output=tmp_path / "unwritten")
    assert "Maximum supported image dimension" not in stderr
    assert not out.exists()


# --- decisions -----------------------------------------------------------------------------

def test_output_symlink_is_followed_and_stays_a_link(photo, tmp_path, capsys):
    target = tmp_path / "real" / "c.npz"
    target.parent.mkdir()
    target.write_bytes(OLD_BYTES)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    status, _, _ = run(capsys, "--compress", photo, "--output", link)
    assert status == 0 and link.is_symlink() and os.readlink(link) == str(target)
    with np.load(target) as archive:
        assert sorted(archive.files) == ["assignments", "img_shape", "means"]


def test_dangling_output_symlink_creates_its_target(photo, tmp_path, capsys):
    target = tmp_path / "made.npz"
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    status, _, _ = run(capsys, "--compress", photo, "--output", link)
    assert status == 0 and link.is_symlink() and target.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "made.npz", "photo.png"]


@pytest.mark.parametrize("mode", ["--compress", "--decompress"])
def test_replaced_output_keeps_its_permission_bits(mode, photo, tmp_path, capsys):
    out = tmp_path / ("c.npz" if mode == "--compress" else "back.png")
    out.write_bytes(OLD_BYTES)
    out.chmod(0o640)
    source = photo if mode == "--compress" else codebook(tmp_path / "in.npz", noise((3, 4, 3)))
    status, _, _ = run(capsys, mode, source, "--output", out)
    assert status == 0 and out.read_bytes() != OLD_BYTES
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def sixteen_bit_values(channels):
    """16-bit samples where the high byte and v / 257 rounded differ (511 -> 1 or 2)."""
    values = np.array([0, 129, 511, 32768, 33023, 65280, 65535, 40000, 300, 1000, 25000, 7])
    return values[np.arange(3 * 4 * channels) % len(values)].reshape(3, 4, channels)


def as_pillow_reads_sixteen_bits(wide):
    """The 8-bit pixels Pillow (and so a grader's script) makes of 16-bit colour.

    Pillow keeps each sample's high byte, and opens grey with alpha as RGBA.
    """
    high = (wide >> 8).astype(np.uint8)
    if wide.shape[2] == 2:
        high = high[..., [0, 0, 0, 1]]
    return high


# 16-bit colour is read as Pillow reads it, not scaled like 16-bit grey as issue 12
# proposed: the grader's reading (shared/contract_check.py) keeps the high byte, and the
# printed error must be the error over the pixels the grader sees.
@pytest.mark.parametrize("colour_type, channels", [(2, 3), (6, 4), (4, 2)])
@pytest.mark.parametrize("interlaced", [False, True])
def test_sixteen_bit_colour_png_reads_as_the_grader_reads_it(colour_type, channels,
                                                            interlaced, tmp_path):
    wide = sixteen_bit_values(channels)
    path = tmp_path / "wide.png"
    path.write_bytes(png_bytes(wide, colour_type=colour_type, depth=16, interlaced=interlaced))
    got = codec.read_image(str(path))
    np.testing.assert_array_equal(got, as_pillow_reads_sixteen_bits(wide))
    assert got.dtype == np.uint8


def tiff_bytes(samples, byte_order="<", deflate=False):
    """A 16-bit RGB or RGBA TIFF of ``samples`` (H, W, C), one strip, written by hand."""
    height, width, channels = samples.shape
    data = samples.astype(byte_order + "u2").tobytes()
    data = zlib.compress(data) if deflate else data
    tags = {256: (4, width), 257: (4, height), 258: (3, None), 259: (3, 8 if deflate else 1),
            262: (3, 2), 273: (4, None), 277: (3, channels), 278: (4, height),
            279: (4, len(data)), 284: (3, 1)}
    if channels == 4:
        tags[338] = (3, 2)  # extra sample: unassociated alpha
    ifd_size = 2 + 12 * len(tags) + 4
    bits_at = 8 + ifd_size
    data_at = bits_at + 2 * channels
    ifd = struct.pack(byte_order + "H", len(tags))
    for tag, (kind, value) in sorted(tags.items()):
        count = channels if tag == 258 else 1
        value = {258: bits_at, 273: data_at}.get(tag, value)
        packed = struct.pack(byte_order + ("HH" if kind == 3 and count == 1 else "I"),
                             *((value, 0) if kind == 3 and count == 1 else (value,)))
        ifd += struct.pack(byte_order + "HHI", tag, kind, count) + packed
    ifd += struct.pack(byte_order + "I", 0)
    start = (b"II*\0" if byte_order == "<" else b"MM\0*") + struct.pack(byte_order + "I", 8)
    return start + ifd + struct.pack(byte_order + "H" * channels, *[16] * channels) + data


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("byte_order", ["<", ">"])
@pytest.mark.parametrize("deflate", [False, True])  # Pillow's own decoder, and libtiff's
def test_sixteen_bit_colour_tiff_reads_as_the_grader_reads_it(channels, byte_order, deflate,
                                                             tmp_path):
    wide = sixteen_bit_values(channels)
    path = tmp_path / "wide.tif"
    path.write_bytes(tiff_bytes(wide, byte_order, deflate))
    got = codec.read_image(str(path))
    np.testing.assert_array_equal(got, as_pillow_reads_sixteen_bits(wide))
    assert got.dtype == np.uint8


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_codebook_members_in_bzip2_or_lzma_are_read(method, tmp_path, capsys):
    pixels = noise((5, 6, 3), seed=5)
    flat = pixels.reshape(30, 3)
    book = save_npz(tmp_path / "c.npz", compression=method, assignments=np.arange(30),
                    means=flat.astype(np.float64), img_shape=np.array([5, 6, 3]))
    status, _, err = run(capsys, "--decompress", book, "--output", tmp_path / "back.png")
    assert status == 0, err
    np.testing.assert_array_equal(codec.read_image(str(tmp_path / "back.png")), pixels)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_bzip2_or_lzma_bomb_is_refused_before_decompressing(method, tmp_path, monkeypatch,
                                                            capsys):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (12,)})
    book = tmp_path / "bomb.npz"
    with zipfile.ZipFile(book, "w", compression=method) as archive:
        archive.writestr("assignments.npy", header.getvalue() + bytes(2_000_000))
        for key, value in (("means", np.zeros((5, 3))), ("img_shape", np.array([3, 4, 3]))):
            buffer = io.BytesIO()
            np.save(buffer, value)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    read = []
    real = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array",
                        lambda stream, *a, **k: read.append(stream.name) or real(stream, *a, **k))
    assert_failed(*run(capsys, "--decompress", book, "--output", tmp_path / "back.png"),
                  book, "assignments unzips to 2,000,128 bytes")
    assert set(read) <= {"img_shape.npy"}


@pytest.mark.parametrize("ext", [".avif", ".eps", ".pbm"])
def test_formats_outside_the_table_are_refused_before_reading(ext, tmp_path, spy_work,
                                                              capsys):
    # AVIF: Pillow writes it lossily only; EPS: not a raster format; PBM: black and white.
    book = codebook(tmp_path / "c.npz", noise((4, 5, 3)))
    out = tmp_path / f"back{ext}"
    assert_failed(*run(capsys, "--decompress", book, "--output", out), out,
                  f"cannot write images with extension '{ext}'", ".png", output=tmp_path / "unwritten")
    assert not out.exists() and spy_work == []


def test_mpo_is_written_at_the_quality_of_jpeg(tmp_path):
    pixels = np.asarray(rocket())
    codec.write_image(str(tmp_path / "a.jpg"), pixels)
    codec.write_image(str(tmp_path / "a.mpo"), pixels)
    with Image.open(tmp_path / "a.jpg") as jpeg, Image.open(tmp_path / "a.mpo") as mpo:
        assert jpeg.quantization == mpo.quantization  # the quality, as tables


@pytest.mark.parametrize("pixels", [noise((4, 5, 3)), noise((4, 5, 4))])
def test_pgm_refuses_colour(pixels, tmp_path, capsys):
    book = codebook(tmp_path / "c.npz", pixels)
    out = tmp_path / "back.pgm"
    assert_failed(*run(capsys, "--decompress", book, "--output", out), out,
                  "holds grey images only", "RGB", output=tmp_path / "unwritten")
    assert not out.exists()


def test_pgm_holds_grey(tmp_path):
    pixels = noise((4, 5))
    out = tmp_path / "back.pgm"
    codec.write_image(str(out), pixels)
    assert out.read_bytes()[:2] == b"P5"  # Netpbm's binary greymap
    np.testing.assert_array_equal(codec.read_image(str(out)), pixels)


# --- third round (issue 17): never run a file's code, bounded memory, no traceback -------

def run_limited(argv, cwd=None, limit_bytes=512 << 20, before=None):
    """hw2.py in a child process whose address space is capped at ``limit_bytes``."""
    def limit():
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
        if before is not None:
            before()
    return subprocess.run([sys.executable, os.path.abspath(HW2), *map(str, argv)],
                          capture_output=True, text=True, timeout=60, cwd=cwd,
                          preexec_fn=limit)


def assert_one_line(done, *words):
    """A child run failed with exit 1 and one error line holding ``words``."""
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("hw2: error: "), \
        done.stderr
    for word in words:
        assert str(word) in done.stderr, (word, done.stderr)


def test_eps_is_refused_naming_its_format_and_never_starts_ghostscript(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    marker = tmp_path / "gs-ran"
    gs = fake_bin / "gs"
    gs.write_text(f"#!/bin/sh\ntouch {marker}\necho gs says hello\n")
    gs.chmod(0o755)
    eps = tmp_path / "drawing.eps"
    Image.fromarray(noise((8, 8, 3))).save(eps)
    env = dict(os.environ, PATH=f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run([sys.executable, HW2, "--compress", str(eps), "--output",
                           str(tmp_path / "c.npz")], capture_output=True, text=True, env=env,
                          timeout=60)
    assert_one_line(done, eps, "EPS", "raster")
    assert not marker.exists() and not (tmp_path / "c.npz").exists()


def deflated_spaces(prefix, n_mib):
    """A raw deflate stream of ``prefix`` and ``n_mib`` MiB of spaces, built in a blink.

    After a full flush deflate starts afresh, so 1 MiB of spaces compresses to
    the same bytes every time: the stream repeats them.
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = b" " * (1 << 20)
    first = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(mib) + deflate.flush(zlib.Z_FULL_FLUSH)
    return first + block * n_mib + deflate.flush()


def zip_of(path, members):
    """A zip archive written by hand: ``{name: (deflated bytes, size inflated, crc)}``."""
    body, directory = b"", b""
    for name, (data, size, crc) in members.items():
        fields = (zipfile.ZIP_DEFLATED, 0, 0, crc, len(data), size, len(name))
        directory += struct.pack("<4s6H3L5H2L", b"PK\1\2", 20, 20, 0, *fields, 0, 0, 0, 0, 0,
                                 len(body)) + name.encode()
        body += struct.pack("<4s5H3L2H", b"PK\3\4", 20, 0, *fields, 0) + name.encode() + data
    end = struct.pack("<4s4H2LH", b"PK\5\6", 0, 0, len(members), len(members), len(directory),
                      len(body), 0)
    path.write_bytes(body + directory + end)
    return path


def deflated(array):
    raw = io.BytesIO()
    np.save(raw, array)
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    return deflate.compress(raw.getvalue()) + deflate.flush(), len(raw.getvalue()), \
        zlib.crc32(raw.getvalue())


def test_npy_header_declaring_gigabytes_is_refused_before_inflating_it(tmp_path):
    # A 2 MB codebook whose assignments.npy (version 2.0) declares a 2 GiB header and holds
    # it: 2 GiB of spaces.  Read whole, it needs gigabytes; here memory is capped at 512 MB.
    prefix = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2 << 30)
    members = {"assignments.npy": (deflated_spaces(prefix, 2048), len(prefix) + (2 << 30), 0),
               "means.npy": deflated(np.zeros((5, 3))),
               "img_shape.npy": deflated(np.array([3, 4, 3]))}
    book = zip_of(tmp_path / "c.npz", members)
    assert book.stat().st_size < 3 << 20
    done = run_limited(["--decompress", book, "--output", tmp_path / "back.png"])
    assert_one_line(done, book, "assignments is not a NumPy array", "header")
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]


def test_both_means_and_means_npy_is_refused_naming_the_ambiguity(tmp_path, capsys):
    # np.load(f)["means"] gives the member "means"; other readers take "means.npy".
    book = save_npz(tmp_path / "c.npz", assignments=np.arange(12) % 5,
                    means=np.zeros((5, 3)), img_shape=np.array([3, 4, 3]))
    with zipfile.ZipFile(book, "a") as archive:
        buffer = io.BytesIO()
        np.save(buffer, np.full((5, 3), 200.0))
        archive.writestr("means", buffer.getvalue())
    out = tmp_path / "back.png"
    assert_failed(*run(capsys, "--decompress", book, "--output", out), book,
                  "both means and means.npy", output=tmp_path / "unwritten")
    assert not out.exists()


@pytest.mark.parametrize("value, refused", [("1e400", True), ("1e300", False), ("-1e4000", True)])
def test_long_double_means_beyond_float64_are_refused_without_a_warning(value, refused,
                                                                        tmp_path, capsys):
    assert np.finfo(np.longdouble).max > np.finfo(np.float64).max  # x86-64: 80-bit
    means = np.full((5, 3), 100, dtype=np.longdouble)
    means[2, 1] = np.longdouble(value)
    book = save_npz(tmp_path / "c.npz", assignments=np.arange(12) % 5, means=means,
                    img_shape=np.array([3, 4, 3]))
    out = tmp_path / "back.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as under PYTHONWARNINGS=error
        result = run(capsys, "--decompress", book, "--output", out, "-q")
    if refused:
        assert_failed(*result, book, "means contain NaN or infinity", output=tmp_path / "unwritten")
    else:
        assert result[0] == 0 and result[2] == "", result
        expected = np.where(np.arange(12)[:, None] % 5 == 2, [100, 255, 100], 100)
        np.testing.assert_array_equal(codec.read_image(str(out)).reshape(12, 3), expected)


@pytest.mark.parametrize("mode", ["--compress", "--decompress"])
def test_deleted_current_folder_with_a_relative_output_gives_one_line(mode, photo, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    source = photo if mode == "--compress" else codebook(tmp_path / "c.npz", noise((3, 4, 3)))
    out = "out.npz" if mode == "--compress" else "out.png"
    done = run_limited([mode, source, "--output", out], cwd=gone,
                       before=lambda: os.rmdir(gone))
    assert_one_line(done, out, "current folder", "full path")


def test_deleted_current_folder_is_named_by_check_output_path(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(codec.CodecError, match="c.npz: the current folder no longer exists"):
        codec.check_output_path("c.npz")


ENCODE_UNDER_A_LIMIT = """
import resource, sys
import numpy as np
sys.path.insert(0, {root!r})
import codec
pixels = np.random.default_rng(0).integers(0, 256, size=(2000, 2000, 3), dtype=np.uint8)
status = open("/proc/self/status").read()
in_use = int(status.split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (in_use + (40 << 20), resource.RLIM_INFINITY))
try:
    codec.write_image({out!r}, pixels)
except MemoryError:
    print("MemoryError")
except codec.CodecError as exc:
    print("CodecError", exc)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmSize (Linux)")
@pytest.mark.parametrize("ext", [".webp"])  # libwebp: "encoding error 1" when out of memory
def test_encoder_out_of_memory_is_a_memory_error(ext, tmp_path):
    # 40 MB more than the 12 MB image in use: the encoders need several times the image.
    code = ENCODE_UNDER_A_LIMIT.format(root=os.path.dirname(HERE), out=str(tmp_path / f"x{ext}"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout == "MemoryError\n", done.stdout + done.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_photo_followed_by_a_gigabyte_is_read_with_the_memory_of_the_photo(ext, tmp_path):
    photo = tmp_path / f"photo{ext}"
    with Image.open(ROCKET) as image:
        image.resize((160, 107)).save(photo)  # small: the point is the file's size
    with open(photo, "r+b") as handle:  # 1 GiB of zeros after the image, sparse on disk
        handle.truncate(photo.stat().st_size + (1 << 30))
    done = run_limited(["--compress", photo, "--output", tmp_path / "c.npz", "-q"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Reconstruction error is ")


def test_heic_without_its_plugin_says_how_to_read_it(tmp_path, capsys):
    # An iPhone photo's first box; Pillow reads HEIF only through pillow-heif, optional.
    heic = tmp_path / "IMG_0001.HEIC"
    heic.write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64))
    has_plugin = importlib.util.find_spec("pillow_heif") is not None
    words = ["damaged or truncated"] if has_plugin else ["pillow-heif", "JPEG"]
    assert_failed(*run(capsys, "--compress", heic, "--output", tmp_path / "c.npz"), heic,
                  *words, output=tmp_path / "unwritten")


def test_a_library_log_line_never_reaches_stderr(tmp_path):
    """A TIFF declaring 9999 samples a pixel: Pillow logs an error, hw2 shows its one line."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack_from("<H", data, ifd)[0], 12):
        if struct.unpack_from("<H", data, entry)[0] == 277:  # SamplesPerPixel
            struct.pack_into("<H", data, entry + 8, 9999)
    path = tmp_path / "odd.tif"
    path.write_bytes(data)
    done = run_hw2("--compress", path, "--output", tmp_path / "c.npz")  # pytest catches logs
    assert_failed(done.returncode, done.stdout, done.stderr, path, output=tmp_path / "c.npz")
