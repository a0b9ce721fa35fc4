"""Every image mode, every EXIF orientation, degenerate images, and foreign codebooks.

The expected pixels of each test image are derived from the arrays it is
built from, by the rules of docs/images.md ("How images are read") and the
published conversion formulas (CMYK with no black ink is 255 - CMY; YCbCr
with neutral chroma is grey R = G = B = Y), never from the program or from
Pillow's conversions.
"""
import io
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

import codec
import hw2
import kmeans
from conftest import check_round_trip

MODELS = ["kmeans", "mixture"]
H, W = 6, 8
Y, X = np.mgrid[0:H, 0:W]
LINE = re.compile(r"^Reconstruction error is (\S+)\n$")


# --- test images: (Pillow image, extension, expected pixels) ------------------------

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


# --- running the CLI ------------------------------------------------------------------

def compress(capsys, image, out, *extra):
    status = hw2.main(["--compress", str(image), "--output", str(out), "-q", *extra])
    captured = capsys.readouterr()
    assert status == 0 and captured.err == "", captured.err
    match = LINE.match(captured.out)
    assert match, captured.out
    return float(match.group(1))


def load(book):
    with np.load(book, allow_pickle=False) as data:
        assert sorted(data.files) == ["assignments", "img_shape", "means"]
        return data["assignments"], data["means"], tuple(data["img_shape"])


def rebuilt(book):
    """The grader's decode: ``means[assignments].reshape(img_shape)``."""
    assignments, means, img_shape = load(book)
    return means[assignments].reshape(img_shape)


def decompress_png(capsys, book, out):
    status = hw2.main(["--decompress", str(book), "--output", str(out), "-q"])
    captured = capsys.readouterr()
    assert status == 0 and captured.out == "" and captured.err == "", captured.err
    with Image.open(out) as image:
        return np.asarray(image)


# --- modes --------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MODES))
def test_mode_is_read_as_the_contract_defines(name, tmp_path, capsys):
    path, expected = make_image(tmp_path, name)
    np.testing.assert_array_equal(codec.read_image(str(path)), expected)
    # With a cluster per colour the codebook is the image itself.
    error = compress(capsys, path, tmp_path / "c.npz", "--clusters", str(kmeans.MAX_CLUSTERS))
    assert error == 0.0
    np.testing.assert_array_equal(rebuilt(tmp_path / "c.npz"), expected)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("name", sorted(MODES))
def test_mode_through_each_model_and_back(name, model, tmp_path, capsys):
    path, expected = make_image(tmp_path, name)
    n_colours = len(np.unique(expected.reshape(H * W, -1), axis=0))
    clusters = max(1, min(3, n_colours - 1))  # fewer than the colours: the model runs
    _, error = check_round_trip(path, tmp_path, clusters, model, expected)
    assert error > 0


def test_uncompressed_ycbcr_tiff_is_read_right_or_refused_cleanly(tmp_path, capsys):
    # Pillow 13 opens an uncompressed YCbCr TIFF as mode YCbCr, which hw2 turns to RGB;
    # older Pillow cannot decode one, and hw2 must then say so in one line.
    image, expected = ycbcr_image()
    path = tmp_path / "raw.tif"
    image.save(path, compression="raw")
    status = hw2.main(["--compress", str(path), "--output", str(tmp_path / "c.npz"), "-q",
                       "--clusters", str(kmeans.MAX_CLUSTERS)])
    captured = capsys.readouterr()
    if status == 0:
        assert captured.out == "Reconstruction error is 0.0\n"
        np.testing.assert_array_equal(rebuilt(tmp_path / "c.npz"), expected)
    else:
        assert status == 1 and captured.out == ""
        assert captured.err.startswith(f"hw2: error: {path}: cannot decode the image")
        assert len(captured.err.splitlines()) == 1
        assert not (tmp_path / "c.npz").exists()


# --- EXIF orientation -------------------------------------------------------------------

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
def test_exif_orientation_is_applied(orientation, tmp_path, capsys):
    path, upright = oriented_png(tmp_path, orientation)
    assert upright.shape == ((H, W, 3) if orientation < 5 else (W, H, 3))
    error = compress(capsys, path, tmp_path / "c.npz", "--clusters", "256")
    assert error == 0.0
    np.testing.assert_array_equal(rebuilt(tmp_path / "c.npz"), upright)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("orientation", [1, 3, 6, 7])
def test_exif_orientation_through_each_model(orientation, model, tmp_path, capsys):
    path, upright = oriented_png(tmp_path, orientation)
    check_round_trip(path, tmp_path, 4, model, upright)


# --- degenerate images ---------------------------------------------------------------------

def save_rgb(tmp_path, pixels):
    path = tmp_path / "degenerate.png"
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("pixels, clusters", [
    (np.full((5, 4, 3), (10, 20, 30)), 20),          # one colour
    (np.full((5, 4, 3), (10, 20, 30)), 1),
    (np.where(X[..., None] < 3, (0, 0, 0), (255, 128, 1)), 20),   # two colours
    (np.array([[[7, 8, 9]]]), 20),                   # one pixel
    (np.array([[[7, 8, 9]]]), 1),
    (np.arange(18).reshape(2, 3, 3) * 14, 50),       # more clusters than pixels
])
def test_few_colours_are_stored_exactly(pixels, clusters, model, tmp_path, capsys):
    path = save_rgb(tmp_path, pixels)
    expected = np.asarray(pixels, dtype=np.uint8)
    book, error = check_round_trip(path, tmp_path, clusters, model, expected)
    assert error == 0.0
    np.testing.assert_array_equal(book["means"][book["assignments"]].reshape(expected.shape),
                                  expected)
    assert len(book["means"]) == len(np.unique(expected.reshape(-1, 3), axis=0))


@pytest.mark.parametrize("model", MODELS)
def test_two_colours_with_one_cluster_give_their_weighted_mean(model, tmp_path, capsys):
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[:1] = 200  # 4 pixels of 200, 12 of 0: the mean is 50
    path = save_rgb(tmp_path, pixels)
    book, error = check_round_trip(path, tmp_path, 1, model, pixels)
    np.testing.assert_allclose(book["means"], 50.0)
    assert error == pytest.approx((4 * 150 + 12 * 50) * np.sqrt(3) / 16)


def many_colours_png(tmp_path, n_colours):
    """A 20x20 image with ``n_colours`` distinct colours, each a few times."""
    codes = np.arange(400) % n_colours
    pixels = np.stack([codes % 20 * 12, codes // 20 * 12, (codes * 37) % 256], axis=1)
    path = tmp_path / "many.png"
    Image.fromarray(pixels.reshape(20, 20, 3).astype(np.uint8)).save(path)
    return path, pixels.reshape(20, 20, 3).astype(np.uint8)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("n_colours, clusters", [(400, 300), (300, 300)])
def test_more_than_256_clusters_use_uint16_labels(n_colours, clusters, model, tmp_path,
                                                  capsys):
    path, expected = many_colours_png(tmp_path, n_colours)
    book, _ = check_round_trip(path, tmp_path, clusters, model, expected)
    assert len(book["means"]) > 256
    assert book["assignments"].dtype == np.uint16 and book["assignments"].max() > 255


# --- codebooks written by other programs ----------------------------------------------------

def foreign_codebook(path, labels, means, img_shape, compressed=True, **extra):
    save = np.savez_compressed if compressed else np.savez
    with open(path, "wb") as handle:
        save(handle, assignments=labels, means=means, img_shape=np.asarray(img_shape),
             **extra)
    return path


def grader_decode(labels, means, img_shape):
    image = np.asarray(means)[labels].reshape(img_shape).astype(np.float64)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image


LABELS = (np.arange(12) * 7 % 5).reshape(3, 4)
RGB_MEANS = np.array([[0, 0, 0], [255, 0, 0], [10.4, 20.5, 30.6], [-20, 300, 128],
                      [1, 2, 3]])


@pytest.mark.parametrize("labels", [
    LABELS.ravel().astype(np.int64), LABELS.ravel().astype(np.int32),
    LABELS.ravel().astype(np.int8), LABELS.ravel().astype(np.uint16),
    LABELS.ravel().astype(np.uint32), LABELS.ravel().astype(np.uint64),
    LABELS.astype(np.int64),                      # (H, W)
    np.asfortranarray(LABELS.astype(np.uint8)),   # (H, W), stored column-major
    LABELS.ravel().astype(">i4"),                 # big-endian
], ids=lambda a: f"{a.dtype.str}{a.shape}{'F' if a.flags.f_contiguous and a.ndim > 1 else ''}")
@pytest.mark.parametrize("means", [
    RGB_MEANS, RGB_MEANS.astype(np.float32), np.clip(RGB_MEANS, 0, 255).astype(np.uint8),
    RGB_MEANS.astype(np.int16),
], ids=["float64", "float32", "uint8", "int16"])
def test_foreign_rgb_codebooks_decode(labels, means, tmp_path, capsys):
    book = foreign_codebook(tmp_path / "c.npz", labels, means, [3, 4, 3])
    back = decompress_png(capsys, book, tmp_path / "back.png")
    np.testing.assert_array_equal(back, grader_decode(labels, means, (3, 4, 3)))


GREY = np.array([0.0, 63.7, 128.2, 255.0, 300.0])


@pytest.mark.parametrize("means, img_shape", [
    (GREY, (3, 4)), (GREY[:, None], (3, 4)), (GREY[:, None], (3, 4, 1)), (GREY, (3, 4, 1)),
    (GREY.astype(np.float32), np.array([3, 4], dtype=np.int32)),
    (np.stack([GREY, 255 - GREY], axis=1), (3, 4, 2)),                    # grey + alpha
    (np.hstack([RGB_MEANS, np.full((5, 1), 128.0)]), (3, 4, 4)),          # RGBA
    (RGB_MEANS, np.array([3, 4, 3], dtype=np.uint16)),
], ids=["k", "k1-HW", "k1-HW1", "k-HW1", "float32-int32shape", "LA", "RGBA", "uint16shape"])
def test_foreign_codebook_shapes_decode(means, img_shape, tmp_path, capsys):
    labels = LABELS.ravel()
    book = foreign_codebook(tmp_path / "c.npz", labels, means, img_shape, compressed=False)
    back = decompress_png(capsys, book, tmp_path / "back.png")
    np.testing.assert_array_equal(back, grader_decode(labels, means, tuple(img_shape)))


def test_extra_keys_are_ignored_and_never_unpickled(tmp_path, capsys, monkeypatch):
    labels = LABELS.ravel().astype(np.uint8)
    book = foreign_codebook(tmp_path / "c.npz", labels, RGB_MEANS, [3, 4, 3],
                            model=np.array("kmeans"), seed=np.array(0),
                            history=np.array([{"iteration": 1}], dtype=object))

    def no_unpickling(*args, **kwargs):
        raise AssertionError("an extra key was unpickled")
    monkeypatch.setattr("pickle.load", no_unpickling)
    monkeypatch.setattr("pickle.loads", no_unpickling)
    back = decompress_png(capsys, book, tmp_path / "back.png")
    np.testing.assert_array_equal(back, grader_decode(labels, RGB_MEANS, (3, 4, 3)))


def test_members_without_npy_suffix_decode(tmp_path, capsys):
    # np.load reads members named "assignments" as well as "assignments.npy".
    labels = LABELS.ravel().astype(np.uint8)
    book = tmp_path / "bare.npz"
    with zipfile.ZipFile(book, "w") as archive:
        for key, array in (("assignments", labels), ("means", RGB_MEANS),
                           ("img_shape", np.array([3, 4, 3]))):
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(key, buffer.getvalue())
    back = decompress_png(capsys, book, tmp_path / "back.png")
    np.testing.assert_array_equal(back, grader_decode(labels, RGB_MEANS, (3, 4, 3)))
