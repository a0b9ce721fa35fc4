"""Colour profiles through hw2 (issue 16), end to end through the CLI.

The codebook carries an image's ICC profile beside its three arrays; on
--decompress the profile is embedded where the format holds one, and the
values are converted to sRGB where it does not.  Expected pixels come from
ImageCms (littleCMS) directly; the profiles are the sample photo's own Adobe
RGB (1998) one, sRGB from ImageCms, and a grey one built here byte by byte.
"""
import base64
import io
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

import codec
from conftest import run_hw2

ROOT = Path(os.path.dirname(os.path.abspath(__file__))).parent
with Image.open(ROOT / "samples" / "rocket.jpg") as _sample:
    ADOBE_RGB = _sample.info["icc_profile"]
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
KEYS = ["assignments", "img_shape", "means"]


def grey_profile(gamma):
    """A minimal ICC v2 grey display profile: a D50 white point and one gamma curve."""
    d50 = struct.pack(">3i", 63190, 65536, 54061)  # s15Fixed16 X, Y, Z
    tags = [(b"desc", b"desc" + bytes(4) + struct.pack(">I", 5) + b"grey\0" + bytes(79)),
            (b"wtpt", b"XYZ " + bytes(4) + d50),
            (b"kTRC", b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)))]
    table, data = b"", b""
    for signature, body in tags:
        table += signature + struct.pack(">II", 128 + 4 + 12 * len(tags) + len(data), len(body))
        data += body + bytes(-len(body) % 4)
    body = struct.pack(">I", len(tags)) + table + data
    header = (struct.pack(">I4sI4s4s4s", 128 + len(body), b"lcms", 0x02100000, b"mntr",
                          b"GRAY", b"XYZ ") + bytes(12) + b"acsp" + bytes(28) + d50 + bytes(48))
    return header + body


def with_junk(profile, junk):
    """``profile`` with ``junk`` after its tags, its header's size counting it."""
    longer = profile + junk
    return struct.pack(">I", len(longer)) + longer[4:]


def compress(image, book, clusters=6):
    status, stdout, stderr = run_hw2("--compress", image, "--clusters", clusters,
                                      "--output", book)
    assert status == 0, stderr
    return stdout, stderr


def decompress(book, out):
    status, _, stderr = run_hw2("--decompress", book, "--output", out)
    assert status == 0, stderr
    return stderr


def grader_decode(book):
    """What a grader rebuilds from the codebook, rounded to 8 bits."""
    with np.load(book, allow_pickle=False) as archive:
        rebuilt = archive["means"][archive["assignments"]].reshape(archive["img_shape"])
    return np.clip(np.round(rebuilt), 0, 255).astype(np.uint8)


def colour_pixels(shape=(18, 24)):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    return np.dstack([x * 10, y * 13, 255 - x * 7]).astype(np.uint8)


@pytest.fixture
def tagged(tmp_path):
    """An RGB PNG tagged Adobe RGB, and the same pixels untagged."""
    pixels = colour_pixels()
    Image.fromarray(pixels).save(tmp_path / "adobe.png", icc_profile=ADOBE_RGB)
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    return tmp_path


def test_profile_round_trip_embeds_the_bytes_unchanged(tagged):
    book = tagged / "book.npz"
    compress(tagged / "adobe.png", book)
    with np.load(book, allow_pickle=False) as archive:
        assert sorted(archive.files) == KEYS
    for ext in ("png", "jpg", "tif", "webp"):
        out = tagged / f"back.{ext}"
        stderr = decompress(book, out)
        assert "note" not in stderr
        with Image.open(out) as image:
            assert image.info.get("icc_profile") == ADOBE_RGB, ext
            if ext != "jpg":  # the values themselves are unchanged
                np.testing.assert_array_equal(np.asarray(image.convert("RGB")),
                                              grader_decode(book))


def test_the_profile_changes_neither_the_error_nor_the_arrays(tagged):
    tagged_out, _ = compress(tagged / "adobe.png", tagged / "a.npz")
    plain_out, _ = compress(tagged / "plain.png", tagged / "p.npz")
    assert re.fullmatch(r"Reconstruction error is \S+\n", tagged_out)
    assert tagged_out == plain_out
    with np.load(tagged / "a.npz") as a, np.load(tagged / "p.npz") as p:
        for key in KEYS:
            np.testing.assert_array_equal(a[key], p[key])
    with zipfile.ZipFile(tagged / "p.npz") as archive:
        assert archive.comment == b""


@pytest.mark.parametrize("ext", ["gif", "bmp", "ppm"])
def test_a_format_without_profiles_gets_the_values_in_srgb(tagged, ext):
    book, out = tagged / "book.npz", tagged / f"back.{ext}"
    compress(tagged / "adobe.png", book)
    stderr = decompress(book, out)
    assert "converted" in stderr and "sRGB" in stderr
    expected = ImageCms.profileToProfile(Image.fromarray(grader_decode(book)),
                                         ImageCms.ImageCmsProfile(io.BytesIO(ADOBE_RGB)), SRGB)
    with Image.open(out) as image:
        assert "icc_profile" not in image.info
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), np.asarray(expected))
    assert not np.array_equal(np.asarray(expected), grader_decode(book))  # it did convert


def test_alpha_is_kept_through_the_conversion(tmp_path):
    pixels = np.dstack([colour_pixels(), np.tile(np.array([0, 255], np.uint8), (18, 12))])
    Image.fromarray(pixels).save(tmp_path / "in.png", icc_profile=ADOBE_RGB)
    compress(tmp_path / "in.png", tmp_path / "book.npz")
    decompress(tmp_path / "book.npz", tmp_path / "back.gif")
    decoded = grader_decode(tmp_path / "book.npz")
    with Image.open(tmp_path / "back.gif") as image:
        back = np.asarray(image.convert("RGBA"))
    np.testing.assert_array_equal(back[..., 3], decoded[..., 3])
    expected = ImageCms.profileToProfile(Image.fromarray(decoded[..., :3]),
                                         ImageCms.ImageCmsProfile(io.BytesIO(ADOBE_RGB)), SRGB)
    visible = decoded[..., 3] == 255
    np.testing.assert_array_equal(back[..., :3][visible], np.asarray(expected)[visible])


def test_an_srgb_profile_changes_nothing(tagged):
    Image.fromarray(colour_pixels()).save(tagged / "srgb.png", icc_profile=SRGB.tobytes())
    _, stderr = compress(tagged / "srgb.png", tagged / "book.npz")
    assert "colour profile" not in stderr
    with zipfile.ZipFile(tagged / "book.npz") as archive:
        assert archive.comment == b""
    for ext in ("png", "gif"):
        assert "colour profile" not in decompress(tagged / "book.npz", tagged / f"back.{ext}")
        with Image.open(tagged / f"back.{ext}") as image:
            assert "icc_profile" not in image.info
            np.testing.assert_array_equal(np.asarray(image.convert("RGB")),
                                          grader_decode(tagged / "book.npz"))


def test_a_grey_profile_stays_with_grey_and_converts_as_grey(tmp_path):
    profile = grey_profile(1.0)
    pixels = (np.arange(18 * 24).reshape(18, 24) % 200).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "grey.png", icc_profile=profile)
    compress(tmp_path / "grey.png", tmp_path / "book.npz")
    decompress(tmp_path / "book.npz", tmp_path / "back.png")
    decoded = grader_decode(tmp_path / "book.npz")
    with Image.open(tmp_path / "back.png") as image:
        assert image.mode == "L" and image.info.get("icc_profile") == profile
        np.testing.assert_array_equal(np.asarray(image), decoded)
    decompress(tmp_path / "book.npz", tmp_path / "back.bmp")
    expected = ImageCms.profileToProfile(Image.fromarray(decoded),
                                         ImageCms.ImageCmsProfile(io.BytesIO(profile)), SRGB,
                                         outputMode="RGB")
    with Image.open(tmp_path / "back.bmp") as image:
        assert image.mode == "L"
        back = np.asarray(image).astype(int)
    # A neutral grey in sRGB, stored as one level: each channel within one level of it.
    assert np.abs(np.asarray(expected).astype(int) - back[..., None]).max() <= 1
    assert (back > decoded).any()  # gamma 1.0 to sRGB brightens: it did convert


def test_a_cmyk_profile_is_not_applied(tmp_path):
    """Pillow's convert("RGB") ignores a CMYK profile, so the codebook holds its values."""
    cmyk_profile = bytearray(ADOBE_RGB)
    cmyk_profile[16:20] = b"CMYK"  # the header's colour space: littleCMS reads it as CMYK
    pixels = np.dstack([colour_pixels(), np.full((18, 24), 40, np.uint8)])
    Image.fromarray(pixels, mode="CMYK").save(tmp_path / "cmyk.tif",
                                              icc_profile=bytes(cmyk_profile))
    Image.fromarray(pixels, mode="CMYK").save(tmp_path / "plain.tif")
    with_profile, stderr = compress(tmp_path / "cmyk.tif", tmp_path / "c.npz")
    assert "colour profile is left out: a CMYK profile" in stderr
    assert with_profile == compress(tmp_path / "plain.tif", tmp_path / "p.npz")[0]
    with zipfile.ZipFile(tmp_path / "c.npz") as archive:
        assert archive.comment == b""


def test_an_unreadable_profile_in_an_image_is_dropped_with_a_note(tagged):
    Image.fromarray(colour_pixels()).save(tagged / "bad.png", icc_profile=b"not a profile" * 9)
    stdout, stderr = compress(tagged / "bad.png", tagged / "book.npz")
    assert "colour profile is left out: it cannot be read" in stderr
    assert stdout == compress(tagged / "plain.png", tagged / "p.npz")[0]
    with zipfile.ZipFile(tagged / "book.npz") as archive:
        assert archive.comment == b""


def comment_for(profile):
    """A codebook's zip comment carrying ``profile``, as docs/images.md describes it."""
    return codec.PROFILE_TAG + base64.b64encode(zlib.compress(profile))


def write_book_with_comment(path, comment):
    """A codebook of 12 colours whose zip comment is ``comment``."""
    labels = np.arange(12 * 16, dtype=np.uint8) % 12
    means = np.linspace([5, 10, 20], [250, 200, 90], 12)
    np.savez_compressed(path, assignments=labels, means=means, img_shape=np.array([12, 16, 3]))
    with zipfile.ZipFile(path, "a") as archive:
        archive.comment = comment


@pytest.mark.parametrize("damage", ["not a profile", "cut short"])
@pytest.mark.parametrize("ext", ["png", "gif"])
def test_a_bad_profile_in_a_codebook_gives_a_note_and_the_values(tmp_path, damage, ext):
    if damage == "not a profile":
        comment = comment_for(b"not an ICC profile" * 10)
    else:
        comment = comment_for(ADOBE_RGB)[:-12]
    book, out = tmp_path / "book.npz", tmp_path / f"back.{ext}"
    write_book_with_comment(book, comment)
    with np.load(book, allow_pickle=False) as archive:
        assert sorted(archive.files) == KEYS
    stderr = decompress(book, out)
    assert "colour profile is damaged" in stderr and "as they are" in stderr
    with Image.open(out) as image:
        assert "icc_profile" not in image.info
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), grader_decode(book))


def test_a_comment_of_another_program_is_ignored(tmp_path):
    book = tmp_path / "book.npz"
    write_book_with_comment(book, b"made by another program")
    assert "note" not in decompress(book, tmp_path / "back.png")
    with Image.open(tmp_path / "back.png") as image:
        assert "icc_profile" not in image.info


def test_a_profile_too_large_for_the_comment_is_left_out_with_a_note(tagged):
    incompressible = np.random.default_rng(0).integers(0, 256, 60_000, dtype=np.uint8)
    profile = with_junk(ADOBE_RGB, incompressible.tobytes())
    Image.fromarray(colour_pixels()).save(tagged / "big.png", icc_profile=profile)
    stdout, stderr = compress(tagged / "big.png", tagged / "book.npz")
    assert "colour profile is left out: too large" in stderr
    assert stdout == compress(tagged / "plain.png", tagged / "p.npz")[0]
    with zipfile.ZipFile(tagged / "book.npz") as archive:
        assert archive.comment == b""


def test_the_comment_hides_the_end_record_signature(tmp_path):
    """A profile holding zip's end-of-archive signature still gives a readable codebook."""
    profile = with_junk(ADOBE_RGB, b"PK\x05\x06" + bytes(18))
    Image.fromarray(colour_pixels()).save(tmp_path / "in.png", icc_profile=profile)
    compress(tmp_path / "in.png", tmp_path / "book.npz")
    with np.load(tmp_path / "book.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == KEYS
    decompress(tmp_path / "book.npz", tmp_path / "back.png")
    with Image.open(tmp_path / "back.png") as image:
        assert image.info["icc_profile"] == profile
