"""Image reading and writing, through codec and the command line: every mode, EXIF
orientation, the raster variants hw2 reads, 16-bit samples, alpha, colour profiles and
indexed (palette) output.

The expected pixels of each test image are derived from the arrays it is built from, by
the rules of docs/images.md ("How images are read") and the published conversion formulas
(CMYK with no black ink is 255 - CMY; YCbCr with neutral chroma is grey R = G = B = Y),
never from the program.  Colour conversions are checked against ImageCms (littleCMS)
directly; the profiles are the sample photo's own Adobe RGB (1998) one, sRGB from ImageCms,
and a grey one built here byte by byte.
"""
import base64
import io
import re
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

import codec
import kmeans
from conftest import (KEYS, MODELS, ROCKET, check_round_trip, codebook_of, grader_decode,
                      grader_pixels, noise, run_hw2)

H, W = 6, 8
Y, X = np.mgrid[0:H, 0:W]


def compress(image, book, *extra):
    """Compress ``image`` to ``book`` in-process; (stdout, stderr) of the successful run."""
    status, stdout, stderr = run_hw2("--compress", image, "--output", book, *extra)
    assert status == 0, stderr
    return stdout, stderr


def decompress(book, out, *extra):
    """Decompress ``book`` to ``out`` in-process; stderr of the successful run."""
    status, stdout, stderr = run_hw2("--decompress", book, "--output", out, *extra)
    assert (status, stdout) == (0, ""), stderr
    return stderr


# ---------------------------------------------------------------- modes

def palette_image(n_colours=5):
    """A P image: index (x + 2y) mod n into a palette of distinct colours."""
    index = ((X + 2 * Y) % n_colours).astype(np.uint8)
    palette = np.array([[40 * i + 5, 255 - 30 * i, (70 * i) % 256] for i in range(n_colours)],
                       dtype=np.uint8)
    image = Image.fromarray(index)
    image.putpalette(palette.ravel().tolist())
    return image, index, palette


def mode_1():
    bits = (X + Y) % 3 == 0
    return Image.fromarray(bits), ".png", {}, bits.astype(np.uint8) * 255


def mode_L():
    grey = ((X * 30 + Y * 7) % 256).astype(np.uint8)
    return Image.fromarray(grey), ".png", {}, grey


def mode_LA():
    pixels = np.dstack([X * 30, Y * 40 + 3]).astype(np.uint8)
    return Image.fromarray(pixels), ".png", {}, pixels


def mode_P():
    image, index, palette = palette_image()
    return image, ".png", {}, palette[index]


def mode_P_transparency():
    image, index, palette = palette_image()
    alpha = np.where(index == 2, 0, 255).astype(np.uint8)
    return image, ".png", {"transparency": 2}, np.dstack([palette[index], alpha])


def mode_PA():
    _, index, palette = palette_image()
    alpha = (index * 50).astype(np.uint8)
    image = Image.frombytes("PA", (W, H), np.dstack([index, alpha]).tobytes())
    image.putpalette(palette.ravel().tolist())
    return image, ".tif", {}, np.dstack([palette[index], alpha])


def mode_RGB():
    pixels = np.dstack([X * 30, Y * 40, (X * Y * 5) % 256]).astype(np.uint8)
    return Image.fromarray(pixels), ".png", {}, pixels


def mode_RGBA():
    pixels = np.dstack([X * 30, Y * 40, (X * Y * 5) % 256, 255 - X * 20]).astype(np.uint8)
    return Image.fromarray(pixels), ".png", {}, pixels


def mode_CMYK():
    # With K = 0 a pixel is (255 - C, 255 - M, 255 - Y); with K = 255 it is black.
    cmy = np.dstack([X * 30, Y * 40, (X + Y) * 9]).astype(np.uint8)
    black = np.where(X == 3, 255, 0).astype(np.uint8)
    image = Image.frombytes("CMYK", (W, H), np.dstack([cmy, black]).tobytes())
    expected = np.where(black[..., None] == 255, 0, 255 - cmy).astype(np.uint8)
    return image, ".tif", {}, expected


def ycbcr_image():
    """A YCbCr image of neutral chroma (Cb = Cr = 128), which makes R = G = B = Y."""
    luma = (X * 30 + Y * 5).astype(np.uint8)
    ycbcr = np.dstack([luma, np.full_like(luma, 128), np.full_like(luma, 128)])
    image = Image.frombytes("YCbCr", (W, H), ycbcr.tobytes())
    return image, np.dstack([luma] * 3)


def mode_YCbCr():
    # LZW-compressed: every Pillow from 9.4 on decodes it (an uncompressed one, only 13+).
    image, expected = ycbcr_image()
    return image, ".tif", {"compression": "tiff_lzw"}, expected


def mode_I16():
    wide = ((X * 8191 + Y * 1129) % 65536).astype(np.uint16)
    wide[0, :4] = (0, 128, 129, 65535)  # 128 / 257 rounds down, 129 / 257 up
    return Image.fromarray(wide), ".png", {}, np.rint(wide / 257).astype(np.uint8)


def mode_I():
    values = (X * 90 - Y * 40 - 100).astype(np.int32)  # -300 .. 530: clipped to 0..255
    return Image.fromarray(values), ".tif", {}, np.clip(values, 0, 255).astype(np.uint8)


def mode_F():
    values = (X * 70.0 - Y * 20.0 - 50.0).astype(np.float32)
    return Image.fromarray(values), ".tif", {}, np.clip(values, 0, 255).astype(np.uint8)


MODES = {"1": mode_1, "L": mode_L, "LA": mode_LA, "P": mode_P,
         "P+transparency": mode_P_transparency, "PA": mode_PA, "RGB": mode_RGB,
         "RGBA": mode_RGBA, "CMYK": mode_CMYK, "YCbCr": mode_YCbCr, "I;16": mode_I16,
         "I;16+tiff": lambda: (*mode_I16()[:1], ".tif", {}, mode_I16()[3]),
         "I": mode_I, "F": mode_F}


def make_image(tmp_path, name):
    image, ext, options, expected = MODES[name]()
    path = tmp_path / f"mode{ext}"
    image.save(path, **options)
    with Image.open(path) as reread:  # the file really holds the mode under test
        if name == "YCbCr":
            # Pillow hands a compressed YCbCr TIFF over already turned to RGB; the file's
            # PhotometricInterpretation tag (262) says what it holds, and 6 is YCbCr.
            assert reread.tag_v2[262] == 6
        elif name == "I;16":
            # Pillow before 10.3 opens a 16-bit grey PNG as 32-bit "I"; the PNG header
            # says what the file holds: bit depth 16 (byte 24), colour type 0, grey (byte 25).
            header = path.read_bytes()[:26]
            assert header[12:16] == b"IHDR" and header[24] == 16 and header[25] == 0
        else:
            assert reread.mode == name.split("+")[0]
        assert ("transparency" in reread.info) == name.endswith("+transparency")
    return path, expected


@pytest.mark.parametrize("name", sorted(MODES))
def test_mode_is_read_as_the_contract_defines(name, tmp_path):
    path, expected = make_image(tmp_path, name)
    np.testing.assert_array_equal(codec.read_image(str(path)), expected)
    # With a cluster per colour the codebook is the image itself.
    stdout, _ = compress(path, tmp_path / "c.npz", "-q", "--clusters", kmeans.MAX_CLUSTERS)
    assert stdout == "Reconstruction error is 0.0\n"
    np.testing.assert_array_equal(grader_decode(tmp_path / "c.npz"), expected)

@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", sorted(MODES))
def test_mode_through_each_model_and_back(name, model, tmp_path):
    path, expected = make_image(tmp_path, name)
    n_colours = len(np.unique(expected.reshape(H * W, -1), axis=0))
    clusters = max(1, min(3, n_colours - 1))  # fewer than the colours: the model runs
    _, error = check_round_trip(path, tmp_path, clusters, model, expected)
    assert error > 0


# ---------------------------------------------------------------- EXIF orientation

# How the stored pixels turn upright, per the EXIF specification's Orientation tag.
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],                        # mirrored left-right
    3: lambda a: a[::-1, ::-1],                     # rotated 180
    4: lambda a: a[::-1],                           # mirrored top-bottom
    5: lambda a: a.swapaxes(0, 1),                  # transposed
    6: lambda a: np.rot90(a, -1),                   # rotate 90 clockwise to view
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),      # transversed
    8: lambda a: np.rot90(a, 1),                    # rotate 90 anticlockwise to view
}


def oriented_png(tmp_path, orientation):
    stored = np.dstack([X * 30, Y * 40, (X * 7 + Y) % 256]).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"oriented{orientation}.png"
    Image.fromarray(stored).save(path, exif=exif)
    return path, UPRIGHT[orientation](stored)


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_is_applied(orientation, tmp_path):
    path, upright = oriented_png(tmp_path, orientation)
    assert upright.shape == ((H, W, 3) if orientation < 5 else (W, H, 3))
    stdout, _ = compress(path, tmp_path / "c.npz", "-q", "--clusters", 256)
    assert stdout == "Reconstruction error is 0.0\n"
    np.testing.assert_array_equal(grader_decode(tmp_path / "c.npz"), upright)


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_of_a_jpeg_is_applied(tmp_path, orientation):
    # Big flat blocks survive JPEG almost unchanged; the two rotations differ a lot.
    blocks = np.array([[0, 60, 120, 180, 240], [250, 30, 200, 90, 10]], dtype=np.uint8)
    stored = np.kron(blocks, np.ones((16, 16), dtype=np.uint8))  # 32 x 80 grey
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "o.jpg", exif=exif, quality=95)
    got = codec.read_image(str(tmp_path / "o.jpg")).astype(int)
    assert got.shape == (80, 32)
    turn = UPRIGHT[orientation]
    right = np.abs(got - turn(stored)).mean()
    wrong = np.abs(got - turn(turn(turn(stored)))).mean()  # turned the other way
    assert right < 3 < wrong


# ---------------------------------------------------------------- raster variants hw2 reads

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
    "apng": lambda: save_bytes(rocket(), "PNG", save_all=True,
                               append_images=[rocket().rotate(90)]),
    "gif frames": lambda: save_bytes(rocket(), "GIF", save_all=True,
                                     append_images=[rocket().rotate(90)]),
    "tiff pages": lambda: save_bytes(rocket(), "TIFF", save_all=True,
                                     append_images=[rocket().rotate(90)]),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_raster_variants_are_read_as_the_grader_reads_them(name, tmp_path):
    path = tmp_path / "valid.img"
    path.write_bytes(VALID[name]())
    np.testing.assert_array_equal(codec.read_image(str(path)), grader_pixels(path))


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
def test_png_with_big_metadata_is_read(name, options, tmp_path):
    path, pixels = png_with(tmp_path, name, **options())
    np.testing.assert_array_equal(codec.read_image(str(path)), pixels)
    assert compress(path, tmp_path / "c.npz")[0].startswith("Reconstruction error is ")


# ---------------------------------------------------------------- 16-bit samples

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


# 16-bit colour is read as Pillow reads it, not scaled like 16-bit grey: the grader's
# reading (shared/contract_check.py) keeps the high byte, and the printed error must be
# the error over the pixels the grader sees.
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



# ---------------------------------------------------------------- writing images

def test_write_image_composites_alpha_on_white_for_jpeg(tmp_path):
    pixels = np.zeros((16, 16, 4), dtype=np.uint8)
    pixels[..., :3] = (10, 200, 30)
    pixels[:, 8:, 3] = 255  # left half fully transparent, right half opaque
    path = str(tmp_path / "out.jpg")
    assert codec.write_image(path, Image.fromarray(pixels))
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        got = np.asarray(image).astype(int)
    assert np.abs(got[:, :4] - 255).max() <= 8                 # transparent -> white
    assert np.abs(got[:, 12:] - (10, 200, 30)).max() <= 8       # opaque -> its colour


@pytest.mark.parametrize("ext", [".jp2", ".png", ".jpg", ".mpo", ".tif", ".webp", ".gif",
                                 ".bmp"])
def test_encoders_write_to_memory_never_to_the_disk(ext, tmp_path, monkeypatch):
    """So no encoder meets a disk error (openjpeg loops forever on one, deaf to Ctrl-C)."""
    real_save = Image.Image.save
    targets = []

    def recording_save(self, fp, *args, **kwargs):
        targets.append(type(fp))
        return real_save(self, fp, *args, **kwargs)
    monkeypatch.setattr(Image.Image, "save", recording_save)
    codec.write_image(str(tmp_path / f"x{ext}"), Image.fromarray(noise((6, 7, 3))))
    assert targets and set(targets) == {io.BytesIO}


def test_pgm_holds_grey(tmp_path):
    pixels = noise((4, 5))
    out = tmp_path / "back.pgm"
    codec.write_image(str(out), Image.fromarray(pixels))
    assert out.read_bytes()[:2] == b"P5"  # Netpbm's binary greymap
    np.testing.assert_array_equal(codec.read_image(str(out)), pixels)


# ---------------------------------------------------------------- alpha

def partial_alpha_pixels(channels=4):
    """Pixels whose alpha takes 0, 128 and 255: partial transparency."""
    pixels = noise((6, 8, channels), seed=6)
    pixels[..., -1] = np.array([0, 128, 255])[np.arange(48).reshape(6, 8) % 3]
    return pixels


def on_white(pixels):
    """Colour and alpha composited on white: c * a + 255 * (1 - a), a in 0..1."""
    alpha = pixels[..., -1:].astype(np.float64) / 255
    return pixels[..., :-1] * alpha + 255 * (1 - alpha)


@pytest.mark.parametrize("ext, kept", [(ext, True) for ext in (".png", ".tif", ".webp", ".tga",
                                                               ".jp2")]
                         + [(ext, False) for ext in (".gif", ".bmp", ".ppm", ".pcx")])
@pytest.mark.parametrize("channels", [2, 4])
def test_alpha_is_kept_exactly_where_the_format_can_else_composited_and_said(ext, kept,
                                                                             channels, tmp_path):
    pixels = partial_alpha_pixels(channels)
    out = tmp_path / f"back{ext}"
    status, stdout, err = run_hw2("--decompress", codebook_of(tmp_path / "c.npz", pixels),
                                  "--output", out)
    assert status == 0 and stdout == ""
    assert ("composited on white" in err) != kept
    if kept:
        got = codec.read_image(str(out))
        if got.shape[-1] == 4 and channels == 2:  # grey and alpha stored as RGBA
            assert (got[..., 0] == got[..., 1]).all() and (got[..., 0] == got[..., 2]).all()
            got = got[..., [0, 3]]
        np.testing.assert_array_equal(got, pixels)
    else:
        with Image.open(out) as image:
            got = np.asarray(image.convert("RGB")).astype(np.float64)
        expected = on_white(pixels)
        expected = np.repeat(expected, 3, axis=2) if channels == 2 else expected
        assert np.abs(got - expected).max() <= 1  # rounding


@pytest.mark.parametrize("channels", [2, 4])
def test_gif_keeps_alpha_that_is_only_0_or_255(channels, tmp_path):
    pixels = partial_alpha_pixels(channels)
    pixels[..., -1] = np.where(pixels[..., -1] == 128, 255, pixels[..., -1])
    book = codebook_of(tmp_path / "c.npz", pixels)
    out = tmp_path / "back.gif"
    status, _, err = run_hw2("--decompress", book, "--output", out)
    assert status == 0 and "composited" not in err
    got = codec.read_image(str(out))
    assert got.shape == (6, 8, 4)
    np.testing.assert_array_equal(got[..., 3], pixels[..., -1])
    visible = pixels[..., -1] == 255
    colours = pixels[..., :-1] if channels == 4 else np.repeat(pixels[..., :1], 3, axis=2)
    np.testing.assert_array_equal(got[visible][:, :3], colours[visible])


# ---------------------------------------------------------------- colour profiles

with Image.open(ROCKET) as _sample:
    ADOBE_RGB = _sample.info["icc_profile"]
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


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


@pytest.mark.parametrize("why", ["it cannot be read", "too large", "a CMYK profile"])
def test_a_profile_left_out_gives_a_note_and_changes_nothing(why, tmp_path):
    profile = {"it cannot be read": b"not a profile" * 9,
               # Incompressible bytes after its tags: more than a zip comment holds.
               "too large": with_junk(ADOBE_RGB, noise(60_000).tobytes()),
               # The header's colour space: littleCMS reads it as CMYK.
               "a CMYK profile": ADOBE_RGB[:16] + b"CMYK" + ADOBE_RGB[20:]}[why]
    image, ext = Image.fromarray(colour_pixels()), "png"
    if why == "a CMYK profile":  # Pillow's convert("RGB") ignores it: the values are kept
        cmyk = np.dstack([colour_pixels(), np.full((18, 24), 40, np.uint8)])
        image, ext = Image.frombytes("CMYK", (24, 18), cmyk.tobytes()), "tif"
    image.save(tmp_path / f"tagged.{ext}", icc_profile=profile)
    image.save(tmp_path / f"plain.{ext}")
    stdout, stderr = compress(tmp_path / f"tagged.{ext}", tmp_path / "c.npz")
    assert f"colour profile is left out: {why}" in stderr
    assert stdout == compress(tmp_path / f"plain.{ext}", tmp_path / "p.npz")[0]
    with zipfile.ZipFile(tmp_path / "c.npz") as archive:
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


# ---------------------------------------------------------------- indexed output

def write_book(path, assignments, means, img_shape):
    np.savez_compressed(path, assignments=assignments, means=means,
                        img_shape=np.array(img_shape))


def expected_pixels(assignments, means, img_shape):
    """``round(means)[assignments]``, clipped to 8 bits, in the image's shape."""
    rounded = np.clip(np.round(np.asarray(means, dtype=np.float64)), 0, 255).astype(np.uint8)
    return rounded[assignments].reshape(img_shape)


def read_back(path, mode):
    with Image.open(path) as image:
        return image.mode, np.asarray(image.convert(mode))


def means_for(n_channels, n_means=7):
    """Means off the integer grid, halves included, some outside 0..255."""
    rng = np.random.default_rng(n_channels)
    means = rng.uniform(-20, 275, size=(n_means, n_channels))
    means[0] = 10.5  # halves round to even: 10
    means[1] = 11.5  # ... and 12
    return means


# A codebook of at most 256 colours goes to BMP and TIFF (and GIF; PNG with --indexed) as
# a palette image (grey as grey) whose pixels, as a reader expands them, are exactly the
# grader's round(means)[assignments]; PNG without --indexed and WebP hold the colours.
@pytest.mark.parametrize("ext, mode, flags, written", [
    ("gif", "RGB", [], "P"), ("bmp", "RGB", [], "P"), ("tif", "RGB", [], "P"),
    ("gif", "L", [], "P"), ("bmp", "L", [], "L"), ("tif", "L", [], "L"),  # GIF: grey palette
    ("png", "RGB", ["--indexed"], "P"), ("png", "RGBA", ["--indexed"], "P"),
    ("png", "L", ["--indexed"], "L"),
    ("png", "RGB", [], "RGB"), ("png", "RGBA", [], "RGBA"), ("webp", "RGB", [], "RGB"),
])
def test_codebooks_go_out_indexed_where_they_can_and_exact(ext, mode, flags, written,
                                                          tmp_path):
    img_shape = (9, 13) if mode == "L" else (9, 13, len(mode))
    means = means_for(len(mode))
    if mode == "RGBA":
        means[:, 3] = [0, 40, 128, 255, 255, 200, 255]  # partial alpha per entry
    assignments = (np.arange(9 * 13) * 5 % 7).astype(np.uint8 if mode != "L" else np.uint16)
    write_book(tmp_path / "book.npz", assignments, means, img_shape)
    stderr = decompress(tmp_path / "book.npz", tmp_path / f"back.{ext}", *flags)
    written_mode, back = read_back(tmp_path / f"back.{ext}", mode)
    assert written_mode == written
    assert ("13x9 indexed" in stderr) == (written == "P" and ext != "gif"), stderr
    np.testing.assert_array_equal(back, expected_pixels(assignments, means, img_shape))


def spread_means(n_means):
    """``n_means`` distinct colours, all on the integer grid."""
    index = np.arange(n_means)
    return np.stack([index % 256, index // 256 * 40, 255 - index % 256], axis=1)


@pytest.mark.parametrize("means, n_used, indexed", [
    (spread_means(300), 256, True),   # 300 means, only n_used assigned
    (spread_means(300), 257, False),
    (np.concatenate([spread_means(150) - 0.3, spread_means(150) + 0.2]), 300, True),
], ids=["256-used", "257-used", "300-rounding-to-150"])
def test_the_palette_limit_counts_the_colours_in_use_after_rounding(means, n_used, indexed,
                                                                   tmp_path):
    assignments = (np.arange(20 * 30) % n_used).astype(np.uint16)
    write_book(tmp_path / "book.npz", assignments, means.astype(np.float64), (20, 30, 3))
    decompress(tmp_path / "book.npz", tmp_path / "back.bmp")
    written_mode, back = read_back(tmp_path / "back.bmp", "RGB")
    assert (written_mode == "P") == indexed
    np.testing.assert_array_equal(back, expected_pixels(assignments, means, (20, 30, 3)))
