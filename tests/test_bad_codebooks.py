"""Bad and hostile codebooks given to --decompress: one clear line, nothing unpickled,
nothing unzipped beyond what the image needs, the existing output untouched.

Failing runs are checked as in test_bad_files.py (see ``assert_failed``).
"""
import io
import struct
import warnings
import zipfile
import zlib

import numpy as np
import pytest

import codec
from conftest import assert_failed, good_arrays, rlimit, run_child, run_hw2, save_npz


def decompress_fails(book, old_output, *words):
    out = old_output("back.png")
    assert_failed(*run_hw2("--decompress", book, "--output", out), book, *words, output=out)


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


# ---------------------------------------------------------------- not a codebook at all

def test_codebook_that_is_a_single_npy_array(tmp_path, old_output):
    book = tmp_path / "c.npz"
    book.write_bytes(npy_bytes(np.arange(5)))
    decompress_fails(book, old_output, "a single .npy array, not an .npz codebook")


def test_codebook_that_is_not_a_zip(photo, old_output):
    decompress_fails(photo, old_output, "not an .npz codebook (not a zip archive)")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_codebook(keep, tmp_path, old_output):
    whole = save_npz(tmp_path / "whole.npz", **good_arrays()).read_bytes()
    book = tmp_path / "cut.npz"
    book.write_bytes(whole[: int(len(whole) * keep)])
    decompress_fails(book, old_output, "zip archive is damaged or truncated")


@pytest.mark.parametrize("key", ["assignments", "means", "img_shape"])
def test_codebook_missing_a_key(key, tmp_path, old_output):
    arrays = good_arrays()
    del arrays[key]
    book = save_npz(tmp_path / "c.npz", extra=np.zeros(2), **arrays)
    decompress_fails(book, old_output, f"no {key}", "found: ")


def test_object_array_is_refused_without_unpickling(tmp_path, old_output, monkeypatch):
    arrays = good_arrays()
    arrays["means"] = np.array([[0, 0, 0]] * 5, dtype=object)
    book = save_npz(tmp_path / "c.npz", compression=zipfile.ZIP_STORED, **arrays)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the codebook was unpickled")
    monkeypatch.setattr("pickle.load", no_unpickling)
    monkeypatch.setattr("pickle.loads", no_unpickling)
    decompress_fails(book, old_output, "means", "object array", "unpickle")


# ---------------------------------------------------------------- arrays that do not fit

@pytest.mark.parametrize("key, value, words", [
    ("assignments", np.array([0, 1, -1, 2] * 3), ["assignments range over -1..2"]),
    ("assignments", np.arange(12) % 5 + 0.0, ["assignments have type float64, not integers"]),
    ("assignments", np.arange(12) % 6, ["assignments range over 0..5", "5 means"]),
    ("assignments", np.full(12, 255, dtype=np.uint8), ["range over 255..255", "5 means"]),
    ("assignments", (np.arange(12) % 2).astype(bool), ["type bool"]),
    ("img_shape", [4, 4, 3], ["img_shape (4, 4, 3) is 16 pixels but there are 12 assignments"]),
    ("img_shape", [3, 4], ["does not match means of shape (5, 3)"]),
    ("img_shape", [3, 4, 1], ["does not match means of shape (5, 3)"]),
    ("img_shape", [-3, -4, 3], ["has a size below 1"]),
    ("img_shape", [0, 4, 3], ["has a size below 1"]),
    ("img_shape", [3, 4, 0], ["has a size below 1"]),
    ("img_shape", [2 ** 20, 2 ** 20, 3], ["1,099,511,627,776 pixels but there are 12"]),
    ("img_shape", [46_341, 46_341, 3], ["2,147,488,281 pixels but"]),  # just over 2**31 pixels
    ("img_shape", [12], ["img_shape should be 2 or 3 integers"]),
    ("img_shape", [1, 3, 4, 3], ["img_shape should be 2 or 3 integers"]),
    ("img_shape", [[3, 4, 3]], ["img_shape should be 2 or 3 integers"]),
    ("img_shape", [3.0, 4.0, 3.0], ["img_shape should be 2 or 3 integers", "float64"]),
    ("img_shape", [3, 4, 6], ["6 channels; an image has 1 to 4"]),
    ("means", np.zeros((0, 3)), ["non-empty numeric"]),
    ("means", np.zeros((5, 3), dtype=complex), ["complex128"]),
    ("means", np.array(["red"] * 5), ["<U3"]),
    ("means", np.zeros((5, 3, 1)), ["shape (5, 3, 1)"]),
] + [
    ("means", np.where(np.arange(15).reshape(5, 3) == 7, bad, 1.0),
     ["means contain NaN or infinity"]) for bad in (np.nan, np.inf, -np.inf)
])
def test_an_array_that_does_not_fit_is_named(key, value, words, tmp_path, old_output):
    book = save_npz(tmp_path / "c.npz", **{**good_arrays(), key: np.array(value)})
    decompress_fails(book, old_output, *words)


@pytest.mark.parametrize("value, refused", [("1e400", True), ("1e300", False), ("-1e4000", True)])
def test_long_double_means_beyond_float64_are_refused_without_a_warning(value, refused,
                                                                        tmp_path):
    if np.finfo(np.longdouble).max <= np.finfo(np.float64).max:
        pytest.skip("long double is float64 here (an 80-bit long double on x86-64)")
    means = np.full((5, 3), 100, dtype=np.longdouble)
    means[2, 1] = np.longdouble(value)
    book = save_npz(tmp_path / "c.npz", assignments=np.arange(12) % 5, means=means,
                    img_shape=np.array([3, 4, 3]))
    out = tmp_path / "back.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as under PYTHONWARNINGS=error
        result = run_hw2("--decompress", book, "--output", out, "-q")
    if refused:
        assert_failed(*result, book, "means contain NaN or infinity", output=out)
    else:
        assert result == (0, "", "")
        expected = np.where(np.arange(12)[:, None] % 5 == 2, [100, 255, 100], 100)
        np.testing.assert_array_equal(codec.read_image(str(out)).reshape(12, 3), expected)


# ---------------------------------------------------------------- hostile zip members

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
DEFLATED, BZIP2, LZMA = zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA


@pytest.mark.parametrize("members, declared, img_shape, compression, words", [
    # The header says 12 labels, but the member inflates to 20 MB of zeros (a zip bomb).
    ({"assignments.npy": npy_header_only((12,)) + bytes(20_000_000)}, None, (3, 4, 3), DEFLATED,
     ["assignments unzips to 20,000,128 bytes", "needs 140", "damaged"]),
    ({"assignments.npy": npy_header_only((12,)) + bytes(2_000_000)}, None, (3, 4, 3), BZIP2,
     ["assignments unzips to 2,000,128 bytes"]),
    ({"assignments.npy": npy_header_only((12,)) + bytes(2_000_000)}, None, (3, 4, 3), LZMA,
     ["assignments unzips to 2,000,128 bytes"]),
    # Four billion labels declared, consistently in the header and the zip directory.
    ({"assignments.npy": npy_header_only((FOUR_BILLION,))}, FOUR_BILLION + 128, (3, 4, 3),
     DEFLATED, ["img_shape (3, 4, 3) is 12 pixels but there are 4,000,000,000 assignments"]),
    # As many pixels, consistently: more than the memory there is (1 GiB here).
    ({"assignments.npy": npy_header_only((FOUR_BILLION,))}, FOUR_BILLION + 128,
     (40_000, 100_000, 3), DEFLATED,
     ["100000x40000 pixels need about 23,", "MB to decompress, and 1,024 MB is available"]),
    # Four billion labels in the header, 128 bytes in the directory: a lie.
    ({"assignments.npy": npy_header_only((FOUR_BILLION,))}, None, (3, 4, 3), DEFLATED,
     ["assignments unzips to 128 bytes", "needs 4,000,000,128"]),
    # Unused means are allowed, but not more than 65536 or one per pixel.
    ({"means.npy": npy_bytes(np.zeros((100_000, 3)))}, None, (3, 4, 3), DEFLATED,
     ["100,000 means for 12 pixels"]),
    ({"assignments.npy": npy_bytes((np.arange(12) % 5).astype(np.uint8))[:-3]}, None, (3, 4, 3),
     DEFLATED, ["assignments unzips to", "needs"]),
    ({"assignments.npy": b"0 1 2 3 4 0 1 2 3 4 0 1"}, None, (3, 4, 3), DEFLATED,
     ["assignments is not a NumPy array"]),
    # np.load(f)["means"] gives the member "means"; other readers take "means.npy".
    ({"means": npy_bytes(np.full((5, 3), 200.0))}, None, (3, 4, 3), DEFLATED,
     ["both means and means.npy"]),
], ids=["deflate-bomb", "bzip2-bomb", "lzma-bomb", "four-billion-labels",
        "more-pixels-than-memory", "header-lies", "too-many-means", "member-cut-short",
        "member-not-npy", "means-twice"])
def test_hostile_members_are_refused_before_their_data_is_read(
        members, declared, img_shape, compression, words, tmp_path, old_output,
        spy_array_reads, monkeypatch):
    monkeypatch.setattr(codec, "memory_available", lambda: 1 << 30)
    arrays = {**good_arrays(), "img_shape": np.array(img_shape)}
    book = tmp_path / "hostile.npz"
    with zipfile.ZipFile(book, "w", compression=compression) as archive:
        for name, data in {**{f"{key}.npy": npy_bytes(value) for key, value in arrays.items()},
                           **members}.items():
            archive.writestr(name, data)
    if declared is not None:
        declare_size(book, "assignments.npy", declared)
    assert book.stat().st_size < 100_000
    decompress_fails(book, old_output, *words)
    assert set(spy_array_reads) <= {"img_shape.npy"}


def test_corrupted_member_data_fails_its_checksum(tmp_path, old_output):
    # Stored, not deflated, so a flipped byte of the means still parses as floats.
    book = save_npz(tmp_path / "c.npz", compression=zipfile.ZIP_STORED, **good_arrays())
    with zipfile.ZipFile(book) as archive:
        info = archive.getinfo("means.npy")
    data = bytearray(book.read_bytes())
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_length + extra_length + 128 + 17] ^= 0x40  # third mean
    book.write_bytes(bytes(data))
    decompress_fails(book, old_output, "Bad CRC-32")


def test_unsupported_zip_compression(tmp_path, old_output):
    book = save_npz(tmp_path / "ppmd.npz", compression=zipfile.ZIP_STORED, **good_arrays())
    data = bytearray(book.read_bytes())  # declare method 98 (PPMd), which zipfile lacks
    at = data.index(b"PK\x01\x02")
    data[at + 10: at + 12] = (98).to_bytes(2, "little")
    book.write_bytes(bytes(data))
    decompress_fails(book, old_output, "compression method 98")


def deflated_spaces(prefix, n_mib):
    """A raw deflate stream of ``prefix`` and ``n_mib`` MiB of spaces, built in a blink.

    After a full flush deflate starts afresh, so 1 MiB of spaces compresses to
    the same bytes every time: the stream repeats them.
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(b" " * (1 << 20)) + deflate.flush(zlib.Z_FULL_FLUSH)
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
    raw = npy_bytes(array)
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    return deflate.compress(raw) + deflate.flush(), len(raw), zlib.crc32(raw)


def test_npy_header_declaring_gigabytes_is_refused_before_inflating_it(tmp_path):
    # A 2 MB codebook whose assignments.npy (version 2.0) declares a 2 GiB header and holds
    # it: 2 GiB of spaces.  Read whole, it needs gigabytes; here memory is capped at 512 MB.
    prefix = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2 << 30)
    members = {"assignments.npy": (deflated_spaces(prefix, 2048), len(prefix) + (2 << 30), 0),
               "means.npy": deflated(np.zeros((5, 3))),
               "img_shape.npy": deflated(np.array([3, 4, 3]))}
    book = zip_of(tmp_path / "c.npz", members)
    assert book.stat().st_size < 3 << 20
    result = run_child("--decompress", book, "--output", tmp_path / "back.png",
                       before=rlimit("RLIMIT_AS", 512 << 20))
    assert_failed(*result, book, "assignments is not a NumPy array", "header")
    assert [path.name for path in tmp_path.iterdir()] == ["c.npz"]
