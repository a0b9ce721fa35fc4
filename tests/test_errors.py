"""Bad input gets one clear line and a non-zero exit, and nothing is lost.

Every failing run here is checked the same way (see ``assert_failed``): the
exit status, exactly one stderr line starting ``hw2: error:`` that names the
file or argument, nothing on stdout, no traceback, no temporary file left
beside the output, and an existing ``--output`` file byte-for-byte unchanged.
"""
import builtins
import io
import math
import os
import shutil
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

import codec
import hw2
import kmeans
from conftest import OLD_BYTES, assert_failed

# The limit hw2.py must apply: whatever Pillow's decompression-bomb guard is set to
# (89,478,485 pixels by default). Read once, before any test patches it.
LIMIT = Image.MAX_IMAGE_PIXELS


# --- helpers ------------------------------------------------------------------

@pytest.fixture
def old_output(tmp_path):
    """Factory: an existing file at an output path, which no failed run may touch."""
    def make(name):
        path = tmp_path / name
        path.write_bytes(OLD_BYTES)
        return path
    return make


def run(capsys, *argv):
    status = hw2.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def save_npz(path, compressed=True, **arrays):
    (np.savez_compressed if compressed else np.savez)(open(path, "wb"), **arrays)
    return path


def good_arrays():
    """A valid 3x4 RGB codebook with 5 means."""
    return {"assignments": (np.arange(12) % 5).astype(np.uint8),
            "means": np.linspace(0, 255, 15).reshape(5, 3),
            "img_shape": np.array([3, 4, 3])}


# --- the command line: exit 2 ---------------------------------------------------

@pytest.mark.parametrize("clusters", ["0", "-3", "abc", "2.5", "", "8193", str(10 ** 30)])
def test_bad_clusters_is_a_usage_error(clusters, photo, old_output, spy_work, capsys):
    out = old_output("c.npz")
    line = assert_failed(*run(capsys, "--compress", photo, "--clusters", clusters,
                              "--output", out), "--clusters", expected=2, output=out)
    assert line.endswith("; try 'python3 hw2.py --help'")
    assert spy_work == []  # refused before any file is read


def test_largest_clusters_value_is_accepted(photo, tmp_path, capsys):
    status, out, _ = run(capsys, "--compress", photo, "--clusters", kmeans.MAX_CLUSTERS,
                         "--output", tmp_path / "c.npz")
    assert status == 0 and out.startswith("Reconstruction error is ")


@pytest.mark.parametrize("argv, words", [
    (["--compress", "{photo}", "--decompress", "{photo}"], ["give --compress IMAGE or"]),
    ([], ["give --compress IMAGE or --decompress CODEBOOK"]),
    (["--compress", "{photo}", "--model", "kmedoids"], ["--model", "kmedoids", "kmeans"]),
    (["--compress", "{photo}", "--seed", "-1"], ["--seed", "-1 is negative"]),
    (["--compress", "{photo}", "--colors", "5"], ["unrecognized arguments: --colors 5",
                                                  "did you mean --clusters?"]),
    (["--compress", ""], ["--compress", "'' is not a file name"]),
    # Given twice: argparse would keep the last one silently.
    (["--compress", "{photo}", "--compress", "{photo}"], ["--compress: given more than once"]),
    # A pipe cannot be checked or read with bounded memory before the work: files only.
    (["--compress", "-"], ["--compress: '-' is not a file name", "standard input"]),
    (["--decompress", "-"], ["--decompress: '-' is not a file name"]),
])
def test_bad_command_line_is_a_usage_error(argv, words, photo, old_output, spy_work, capsys):
    out = old_output("c.npz")
    argv = [arg.format(photo=photo) for arg in argv]
    assert_failed(*run(capsys, *argv, "--output", out), *words, expected=2, output=out)
    assert spy_work == []


def test_output_given_twice_is_a_usage_error(photo, tmp_path, capsys):
    assert_failed(*run(capsys, "--compress", photo, "--output", tmp_path / "a.npz",
                       "--output", tmp_path / "b.npz"), "--output: given more than once",
                  expected=2)
    assert sorted(os.listdir(tmp_path)) == ["photo.png"]


def test_missing_output_flag_is_a_usage_error(photo, capsys):
    assert_failed(*run(capsys, "--compress", photo), "--output PATH", expected=2)


def test_empty_output_is_a_usage_error(photo, capsys):
    assert_failed(*run(capsys, "--compress", photo, "--output", ""), "--output",
                  "'' is not a file name", expected=2)


# --- paths: exit 1 ----------------------------------------------------------------

def test_missing_input(tmp_path, old_output, capsys):
    out = old_output("c.npz")
    assert_failed(*run(capsys, "--compress", tmp_path / "nope.jpg", "--output", out),
                  tmp_path / "nope.jpg", "no such file", output=out)
    out = old_output("back.png")
    assert_failed(*run(capsys, "--decompress", tmp_path / "nope.npz", "--output", out),
                  tmp_path / "nope.npz", "no such file", output=out)


def test_input_is_a_directory(tmp_path, old_output, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    out = old_output("c.npz")
    assert_failed(*run(capsys, "--compress", folder, "--output", out),
                  folder, "is a directory", output=out)
    out = old_output("back.png")
    assert_failed(*run(capsys, "--decompress", folder, "--output", out),
                  folder, "is a directory", output=out)


@pytest.mark.parametrize("mode, what", [("--compress", "an image"),
                                        ("--decompress", "a codebook")])
def test_input_that_is_a_pipe_is_refused_without_blocking(mode, what, tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it for reading would wait forever for a writer
    assert_failed(*run(capsys, mode, fifo, "--output", tmp_path / "out.png"),
                  fifo, f"not a regular file, so not {what}")


@pytest.fixture
def forbid_reading(monkeypatch):
    """Make opening one path fail with EACCES, as chmod 000 does for a non-root user.

    Tests run as root in the container, where chmod cannot stop a read; Pillow
    opens with ``builtins.open`` and zipfile with ``io.open``.
    """
    real_open = builtins.open

    def forbid(path):
        def guarded_open(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(path):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(file, *args, **kwargs)
        monkeypatch.setattr(builtins, "open", guarded_open)
        monkeypatch.setattr(io, "open", guarded_open)
    return forbid


def test_unreadable_image(photo, old_output, forbid_reading, capsys):
    out = old_output("c.npz")
    forbid_reading(photo)
    assert_failed(*run(capsys, "--compress", photo, "--output", out),
                  photo, "permission denied", output=out)


def test_unreadable_codebook(tmp_path, old_output, forbid_reading, capsys):
    book = save_npz(tmp_path / "c.npz", **good_arrays())
    out = old_output("back.png")
    forbid_reading(book)
    assert_failed(*run(capsys, "--decompress", book, "--output", out),
                  book, "permission denied", output=out)


@pytest.mark.parametrize("mode", ["--compress", "--decompress"])
def test_output_folder_missing_is_found_before_any_work(mode, photo, tmp_path, spy_work,
                                                        capsys):
    source = photo if mode == "--compress" else save_npz(tmp_path / "c.npz", **good_arrays())
    out = tmp_path / "no" / "such" / "folder" / "out.png"
    assert_failed(*run(capsys, mode, source, "--output", out),
                  out, "does not exist", output=out)
    assert spy_work == []
    assert not (tmp_path / "no").exists()


def test_output_folder_that_is_a_file(photo, old_output, capsys):
    not_a_folder = old_output("notes.txt")
    out = not_a_folder / "c.npz"
    assert_failed(*run(capsys, "--compress", photo, "--output", out),
                  out, "not a directory", output=not_a_folder)


@pytest.mark.parametrize("suffix", ["", "/"])
def test_output_is_a_directory(suffix, photo, tmp_path, spy_work, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    assert_failed(*run(capsys, "--compress", photo, "--output", f"{folder}{suffix}"),
                  folder, "is a directory", output=folder / "x")
    assert list(folder.iterdir()) == [] and spy_work == []


@pytest.mark.parametrize("name, words", [
    ("back", ["no file extension"]),
    ("back.xyz", ["cannot write", "'.xyz'"]),
    ("back.xbm", ["cannot write", "'.xbm'"]),   # Pillow writes XBM from bilevel images only
    ("back.bufr", ["cannot write", "'.bufr'"]),  # registered, but no save handler installed
])
def test_decompress_output_extension_is_checked_before_reading(name, words, tmp_path,
                                                               old_output, spy_work, capsys):
    book = save_npz(tmp_path / "c.npz", **good_arrays())
    out = old_output(name)
    assert_failed(*run(capsys, "--decompress", book, "--output", out), out, *words,
                  output=out)
    assert spy_work == []


@pytest.mark.parametrize("name, words", [("back.ico", ["at most 256 pixels a side", "300x200"]),
                                         ("back.icns", ["cannot write", "'.icns'"])])
def test_decompress_to_an_icon_that_cannot_hold_the_image_is_refused(name, words, tmp_path,
                                                                     old_output, capsys):
    # An .ico icon holds at most 256x256 pixels (Pillow's writer would shrink the image),
    # and Pillow's ICNS writer stretches any image to 1024x1024, so hw2 does not write .icns.
    arrays = {"assignments": (np.arange(200 * 300) % 5).astype(np.uint8),
              "means": np.linspace(0, 255, 15).reshape(5, 3), "img_shape": np.array([200, 300, 3])}
    book = save_npz(tmp_path / "c.npz", **arrays)
    out = old_output(name)
    assert_failed(*run(capsys, "--decompress", book, "--output", out), out, *words,
                  output=out)


def test_output_that_is_the_input_is_refused(photo, spy_work, capsys):
    before = photo.read_bytes()
    assert_failed(*run(capsys, "--compress", photo, "--output", photo),
                  photo, "is the input file")
    assert photo.read_bytes() == before and spy_work == []


def test_output_that_is_a_link_to_the_input_is_refused(photo, tmp_path, capsys):
    link = tmp_path / "link.png"
    link.symlink_to(photo)
    before = photo.read_bytes()
    assert_failed(*run(capsys, "--compress", photo, "--output", link), "is the input file")
    assert photo.read_bytes() == before and link.is_symlink()


def test_control_characters_in_a_path_stay_on_one_line(tmp_path, capsys):
    missing = tmp_path / "two\nlines.png"
    line = assert_failed(*run(capsys, "--compress", missing, "--output", tmp_path / "c"),
                         "no such file")
    assert "two\\nlines.png" in line


# --- images -------------------------------------------------------------------------

def test_loading_truncated_images_stays_off():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_not_an_image(tmp_path, old_output, capsys):
    text = tmp_path / "notes.jpg"
    text.write_text("shopping list: eggs\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path in (text, empty):
        out = old_output("c.npz")
        assert_failed(*run(capsys, "--compress", path, "--output", out),
                      path, "not an image file", output=out)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(fmt, photo, tmp_path, old_output, capsys):
    whole = io.BytesIO()
    with Image.open(photo) as image:
        image.save(whole, format=fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(whole.getvalue()[: len(whole.getvalue()) * 2 // 3])
    out = old_output("c.npz")
    assert_failed(*run(capsys, "--compress", cut, "--output", out),
                  cut, "damaged or truncated", output=out)


def png_declaring_size(path, width, height):
    """A PNG whose header declares ``width`` x ``height`` (the data is one pixel)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("times", [
    1.1,   # between one and two times the limit: Pillow alone would only warn
    4.5,   # over twice the limit: Pillow raises
])
def test_decompression_bomb_is_refused_and_the_limit_named(times, tmp_path, old_output,
                                                           capsys):
    side = math.isqrt(int(LIMIT * times))
    assert LIMIT < side * side < 2 * LIMIT if times < 2 else side * side > 2 * LIMIT
    bomb = png_declaring_size(tmp_path / "bomb.png", side, side)
    out = old_output("c.npz")
    assert_failed(*run(capsys, "--compress", bomb, "--output", out),
                  bomb, f"{side * side:,} pixels", f"limit of {LIMIT:,} pixels",
                  output=out)


@pytest.mark.parametrize("side, refused", [(10, False), (11, True), (15, True)])
def test_pixel_limit_applies_from_one_times_the_limit(side, refused, monkeypatch, tmp_path,
                                                      capsys):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "square.png"
    Image.new("RGB", (side, side), (1, 2, 3)).save(path)
    result = run(capsys, "--compress", path, "--output", tmp_path / "c.npz")
    if refused:
        assert_failed(*result, f"{side * side:,} pixels", "limit of 100 pixels")
    else:
        assert result[0] == 0


# --- codebooks ---------------------------------------------------------------------

def decompress_fails(capsys, book, old_output, *words):
    out = old_output("back.png")
    assert_failed(*run(capsys, "--decompress", book, "--output", out), book, *words,
                  output=out)


def test_codebook_that_is_a_single_npy_array(tmp_path, old_output, capsys):
    book = tmp_path / "c.npz"
    np.save(open(book, "wb"), np.arange(5))
    decompress_fails(capsys, book, old_output, "a single .npy array, not an .npz codebook")


def test_codebook_that_is_not_a_zip(photo, old_output, capsys):
    decompress_fails(capsys, photo, old_output, "not an .npz codebook (not a zip archive)")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_codebook(keep, tmp_path, old_output, capsys):
    whole = save_npz(tmp_path / "whole.npz", **good_arrays()).read_bytes()
    book = tmp_path / "cut.npz"
    book.write_bytes(whole[: int(len(whole) * keep)])
    decompress_fails(capsys, book, old_output, "zip archive is damaged or truncated")


@pytest.mark.parametrize("key", ["assignments", "means", "img_shape"])
def test_codebook_missing_a_key(key, tmp_path, old_output, capsys):
    arrays = good_arrays()
    del arrays[key]
    book = save_npz(tmp_path / "c.npz", extra=np.zeros(2), **arrays)
    decompress_fails(capsys, book, old_output, f"no {key}", "found: ")


def test_object_array_is_refused_without_unpickling(tmp_path, old_output, monkeypatch,
                                                    capsys):
    arrays = good_arrays()
    arrays["means"] = np.array([[0, 0, 0]] * 5, dtype=object)
    book = save_npz(tmp_path / "c.npz", compressed=False, **arrays)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the codebook was unpickled")
    monkeypatch.setattr("pickle.load", no_unpickling)
    monkeypatch.setattr("pickle.loads", no_unpickling)
    decompress_fails(capsys, book, old_output, "means", "object array", "unpickle")


@pytest.mark.parametrize("labels, words", [
    (np.array([0, 1, -1, 2] * 3), ["assignments range over -1..2"]),
    (np.arange(12) % 5 + 0.0, ["assignments have type float64, not integers"]),
    (np.arange(12) % 6, ["assignments range over 0..5", "5 means"]),
    (np.full(12, 255, dtype=np.uint8), ["range over 255..255", "5 means"]),
    ((np.arange(12) % 2).astype(bool), ["type bool"]),
])
def test_bad_labels(labels, words, tmp_path, old_output, capsys):
    book = save_npz(tmp_path / "c.npz", **{**good_arrays(), "assignments": labels})
    decompress_fails(capsys, book, old_output, *words)


@pytest.mark.parametrize("img_shape, words", [
    ([4, 4, 3], ["img_shape (4, 4, 3) is 16 pixels but there are 12 assignments"]),
    ([3, 4], ["does not match means of shape (5, 3)"]),
    ([3, 4, 1], ["does not match means of shape (5, 3)"]),
    ([-3, -4, 3], ["has a size below 1"]),
    ([0, 4, 3], ["has a size below 1"]),
    ([3, 4, 0], ["has a size below 1"]),
    ([2 ** 20, 2 ** 20, 3], ["1,099,511,627,776 pixels", f"limit of {LIMIT:,}"]),
    ([46_341, 46_341, 3], ["more than the limit"]),   # just over 2**31 pixels
    ([12], ["img_shape should be 2 or 3 integers"]),
    ([1, 3, 4, 3], ["img_shape should be 2 or 3 integers"]),
    ([3.0, 4.0, 3.0], ["img_shape should be 2 or 3 integers", "float64"]),
    ([3, 4, 6], ["6 channels; an image has 1 to 4"]),
])
def test_bad_img_shape(img_shape, words, tmp_path, old_output, capsys):
    book = save_npz(tmp_path / "c.npz", **{**good_arrays(), "img_shape": np.array(img_shape)})
    decompress_fails(capsys, book, old_output, *words)


def test_img_shape_2d_array_is_refused(tmp_path, old_output, capsys):
    book = save_npz(tmp_path / "c.npz", **{**good_arrays(), "img_shape": np.array([[3, 4, 3]])})
    decompress_fails(capsys, book, old_output, "img_shape should be 2 or 3 integers")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_means(bad, tmp_path, old_output, capsys):
    arrays = good_arrays()
    arrays["means"][2, 1] = bad
    book = save_npz(tmp_path / "c.npz", **arrays)
    decompress_fails(capsys, book, old_output, "means contain NaN or infinity")


@pytest.mark.parametrize("means, words", [
    (np.zeros((0, 3)), ["non-empty numeric"]),
    (np.zeros((5, 3), dtype=complex), ["complex128"]),
    (np.array(["red"] * 5), ["<U3"]),
    (np.zeros((5, 3, 1)), ["shape (5, 3, 1)"]),
])
def test_bad_means(means, words, tmp_path, old_output, capsys):
    book = save_npz(tmp_path / "c.npz", **{**good_arrays(), "means": means})
    decompress_fails(capsys, book, old_output, *words)


def zip_with_members(path, members, compression=zipfile.ZIP_DEFLATED):
    """Write raw member bytes (``{name: bytes}``) into a zip archive."""
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def npy_header_only(shape, descr="|u1"):
    """An .npy header declaring ``shape``, with no data after it."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.fixture
def spy_array_reads(monkeypatch):
    """Names of the zip members whose data NumPy reads."""
    read = []
    real = np.lib.format.read_array

    def spy(stream, *args, **kwargs):
        read.append(getattr(stream, "name", "?"))
        return real(stream, *args, **kwargs)
    monkeypatch.setattr(np.lib.format, "read_array", spy)
    return read


def declare_size(path, name, file_size):
    """Patch the size the zip's central directory declares for member ``name``."""
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")
    while data[at + 46: at + 46 + int.from_bytes(data[at + 28: at + 30], "little")] \
            != name.encode():
        at = data.index(b"PK\x01\x02", at + 4)
    data[at + 24: at + 28] = file_size.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


FOUR_BILLION = 4_000_000_000


@pytest.mark.parametrize("members, declared, img_shape, words", [
    # The header says 12 labels, but the member inflates to 20 MB of zeros (a zip bomb).
    ({"assignments.npy": npy_header_only((12,)) + bytes(20_000_000)}, None, (3, 4, 3),
     ["assignments unzips to 20,000,128 bytes", "needs 140", "damaged"]),
    # Four billion labels declared, consistently in the header and the zip directory.
    ({"assignments.npy": npy_header_only((FOUR_BILLION,))}, FOUR_BILLION + 128, (3, 4, 3),
     ["img_shape (3, 4, 3) is 12 pixels but there are 4,000,000,000 assignments"]),
    ({"assignments.npy": npy_header_only((FOUR_BILLION,))}, FOUR_BILLION + 128,
     (40_000, 100_000, 3), ["4,000,000,000 pixels", f"limit of {LIMIT:,}"]),
    # Four billion labels in the header, 128 bytes in the directory: a lie.
    ({"assignments.npy": npy_header_only((FOUR_BILLION,))}, None, (3, 4, 3),
     ["assignments unzips to 128 bytes", "needs 4,000,000,128"]),
    # Unused means are allowed, but not more than 65536 or one per pixel.
    ({"means.npy": npy_bytes(np.zeros((100_000, 3)))}, None, (3, 4, 3),
     ["100,000 means for 12 pixels"]),
])
def test_oversized_members_are_refused_before_their_data_is_read(
        members, declared, img_shape, words, tmp_path, old_output, spy_array_reads, capsys):
    arrays = good_arrays()
    arrays["img_shape"] = np.array(img_shape)
    all_members = {f"{key}.npy": npy_bytes(value) for key, value in arrays.items()}
    all_members.update(members)
    book = zip_with_members(tmp_path / "big.npz", all_members)
    if declared is not None:
        declare_size(book, "assignments.npy", declared)
    assert book.stat().st_size < 100_000
    decompress_fails(capsys, book, old_output, *words)
    assert set(spy_array_reads) <= {"img_shape.npy"}


def test_member_shorter_than_its_header_says(tmp_path, old_output, capsys):
    arrays = good_arrays()
    book = zip_with_members(tmp_path / "short.npz", {
        "assignments.npy": npy_bytes(arrays["assignments"])[:-3],
        "means.npy": npy_bytes(arrays["means"]),
        "img_shape.npy": npy_bytes(arrays["img_shape"])})
    decompress_fails(capsys, book, old_output, "assignments unzips to", "needs")


def test_member_that_is_not_an_npy_array(tmp_path, old_output, capsys):
    arrays = good_arrays()
    book = zip_with_members(tmp_path / "text.npz", {
        "assignments.npy": b"0 1 2 3 4 0 1 2 3 4 0 1",
        "means.npy": npy_bytes(arrays["means"]),
        "img_shape.npy": npy_bytes(arrays["img_shape"])})
    decompress_fails(capsys, book, old_output, "assignments is not a NumPy array")


def test_corrupted_member_data_fails_its_checksum(tmp_path, old_output, capsys):
    # Stored, not deflated, so a flipped byte of the means still parses as floats.
    book = save_npz(tmp_path / "c.npz", compressed=False, **good_arrays())
    with zipfile.ZipFile(book) as archive:
        info = archive.getinfo("means.npy")
    local_header = 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(book.read_bytes())
    data[info.header_offset + local_header + 128 + 17] ^= 0x40  # in the third mean
    book.write_bytes(bytes(data))
    decompress_fails(capsys, book, old_output, "Bad CRC-32")


def test_unsupported_zip_compression(tmp_path, old_output, capsys):
    arrays = good_arrays()
    book = zip_with_members(tmp_path / "ppmd.npz",
                            {f"{key}.npy": npy_bytes(value) for key, value in arrays.items()},
                            compression=zipfile.ZIP_STORED)
    data = bytearray(book.read_bytes())  # declare method 98 (PPMd), which zipfile lacks
    at = data.index(b"PK\x01\x02")
    data[at + 10: at + 12] = (98).to_bytes(2, "little")
    book.write_bytes(bytes(data))
    decompress_fails(capsys, book, old_output, "compression method 98")


# --- nothing lost when the write itself fails ----------------------------------------

@pytest.mark.parametrize("failure, status, message", [
    (KeyboardInterrupt, 130, "hw2: interrupted; no output written"),
    (MemoryError, 1, "hw2: error: out of memory"),
    (OSError(28, "No space left on device"), 1, "hw2: error: "),
])
def test_failed_codebook_write_leaves_no_trace(failure, status, message, photo, old_output,
                                               monkeypatch, capsys):
    out = old_output("c.npz")

    def half_written(handle, **arrays):
        handle.write(b"PK\x03\x04 partial")
        raise failure
    monkeypatch.setattr(np, "savez_compressed", half_written)
    result_status, stdout, err = run(capsys, "--compress", photo, "--output", out)
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
    warm_up = tmp_path / "warm-up"
    warm_up.mkdir()
    codec.write_image(str(warm_up / f"image{ext}"), pixels)
    shutil.rmtree(warm_up)
    monkeypatch.setattr(Image.Image, "save", lambda image, fp, *args, **kwargs: fail(fp))


@pytest.mark.parametrize("failure, status", [(KeyboardInterrupt, 130), (MemoryError, 1)])
def test_failed_image_write_leaves_no_trace(failure, status, tmp_path, old_output,
                                            monkeypatch, capsys):
    book = save_npz(tmp_path / "c.npz", **good_arrays())
    out = old_output("back.png")

    def half_saved(handle):
        handle.write(b"\x89PNG partial")
        raise failure
    fail_saving(monkeypatch, half_saved, tmp_path, np.zeros((3, 4, 3), np.uint8), ".png")
    result_status, stdout, err = run(capsys, "--decompress", book, "--output", out)
    assert result_status == status and stdout == "" and len(err.splitlines()) == 1
    assert out.read_bytes() == OLD_BYTES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.png", "c.npz"]


def test_image_too_large_for_its_format(tmp_path, old_output, capsys):
    # GIF stores sizes in 16 bits: a 70000x1 image cannot be written as GIF.
    book = save_npz(tmp_path / "wide.npz", assignments=np.zeros(70_000, dtype=np.uint8),
                    means=np.array([[1.0, 2.0, 3.0]]), img_shape=np.array([1, 70_000, 3]))
    out = old_output("back.gif")
    assert_failed(*run(capsys, "--decompress", book, "--output", out),
                  out, "cannot write this 70000x1 RGB image as GIF", output=out)


@pytest.mark.parametrize("mode, source, out_name", [
    ("--compress", "notes.png", "c.npz"),
    ("--decompress", "notes.npz", "back.png"),
])
def test_failed_run_creates_no_file(mode, source, out_name, tmp_path, capsys):
    (tmp_path / source).write_text("not what it claims\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_failed(*run(capsys, mode, tmp_path / source, "--output", tmp_path / out_name),
                  source)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_stdout_closed_early_exits_1_without_traceback(tmp_path):
    """``python3 hw2.py ... | head -c0``: the reader is gone before the result line."""
    import subprocess
    import sys
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(tmp_path / "p.png")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, os.path.join(os.path.dirname(__file__), "..", "hw2.py"),
             "--compress", str(tmp_path / "p.png"), "--clusters", "3",
             "--output", str(tmp_path / "c.npz")],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
            # Buffered stdout, as in a user's shell: the lost line shows only when hw2
            # flushes it (PYTHONUNBUFFERED=1 in the environment would hide that).
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr
    with np.load(tmp_path / "c.npz") as archive:
        assert sorted(archive.files) == ["assignments", "img_shape", "means"]


def test_a_full_disk_is_reported_as_such_not_as_a_format_problem(tmp_path, monkeypatch):
    import errno

    def full_disk(handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    pixels = np.zeros((4, 4), dtype=np.uint8)
    fail_saving(monkeypatch, full_disk, tmp_path, pixels, ".png")
    with pytest.raises(codec.CodecError, match="No space left on device") as caught:
        codec.write_image(str(tmp_path / "out.png"), pixels)
    assert "Pillow cannot write" not in str(caught.value)
    assert os.listdir(tmp_path) == []
