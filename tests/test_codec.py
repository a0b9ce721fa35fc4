"""Tests of codec.py: colours counted and assigned (strip by strip, held to np.unique), the
error, codebooks written and read (those of other programs too), and decoding (by strips,
held to ``decode``).  Image reading and writing: test_images.py."""
import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageOps

import codec
from conftest import run_hw2


# ---------------------------------------------------------------- distinct colours

def random_pixels(rng, n_pixels, n_channels, n_levels):
    """Pixels whose channels each use ``n_levels`` values spread over 0..255."""
    levels = np.stack([rng.permutation(256)[:n_levels] for _ in range(n_channels)])
    picks = rng.integers(0, n_levels, size=(n_pixels, n_channels))
    return levels[np.arange(n_channels), picks].astype(np.uint8)


def all_levels_pixels(rng, n_channels, repeats):
    """Pixels in which every channel uses all 256 levels (a 256**C key space)."""
    columns = [rng.permutation(np.tile(np.arange(256), repeats)) for _ in range(n_channels)]
    pixels = np.stack(columns, axis=1).astype(np.uint8)
    return np.concatenate([pixels, pixels[:500]])  # some colours occur twice


@pytest.mark.parametrize("table", [True, False], ids=["table", "sorting"])
@pytest.mark.parametrize("n_channels", [1, 2, 3, 4])
@pytest.mark.parametrize("n_levels", [1, 5, 200])
def test_counted_colours_are_numpy_uniques(n_channels, n_levels, table, tmp_path):
    rng = np.random.default_rng(n_channels * 1000 + n_levels)
    pixels = random_pixels(rng, 3000, n_channels, n_levels)
    check_counted_colours(pixels, table, tmp_path)


@pytest.mark.parametrize("n_channels", [2, 4])
def test_counted_colours_with_every_level_used(n_channels, tmp_path):
    # 4 channels with all 256 levels: a 2**32 key space, too big for a table.
    pixels = all_levels_pixels(np.random.default_rng(n_channels), n_channels, repeats=8)
    check_counted_colours(pixels, n_channels < 4, tmp_path)


def check_counted_colours(pixels, table, tmp_path):
    """count_colours and assign_labels on ``pixels`` as a one-row PNG, against np.unique."""
    path = tmp_path / "row.png"
    Image.fromarray(pixels[None, :, 0] if pixels.shape[1] == 1 else pixels[None]).save(path)
    reader = codec.ImageReader(str(path))
    reader.key_space = 256 ** pixels.shape[1] if table and pixels.shape[1] < 4 else 0
    colours, counts = codec.count_colours(reader)
    expected, inverse, expected_counts = np.unique(pixels, axis=0, return_inverse=True,
                                                   return_counts=True)
    assert colours.dtype == np.uint8 and colours.shape[1] == pixels.shape[1]
    np.testing.assert_array_equal(colours, expected)  # increasing key order
    np.testing.assert_array_equal(counts, expected_counts)
    labels = np.arange(len(colours), dtype=np.uint32)
    np.testing.assert_array_equal(codec.assign_labels(reader, colours, labels),
                                  inverse.reshape(-1))


def test_tables_are_used_from_65536_pixels_of_up_to_three_channels(tmp_path):
    for size, mode, expected in [((256, 256), "RGB", 1 << 24), ((255, 256), "RGB", 0),
                                 ((2, 2), "L", 256), ((256, 256), "RGBA", 0)]:
        Image.new(mode, size).save(tmp_path / "flat.png")
        assert codec.ImageReader(str(tmp_path / "flat.png")).key_space == expected


# ---------------------------------------------------------------- strips: the plain results

@pytest.fixture
def small_strips(monkeypatch):
    """Strips of 1,000 pixels, so that a small image is read in many strips."""
    monkeypatch.setattr(codec, "STRIP_PIXELS", 1000)


def noise_image(mode, shape, levels, seed=0):
    """A Pillow image of ``mode`` from random values below ``levels`` (few colours repeat)."""
    values = np.random.default_rng(seed).integers(0, levels, shape).astype(np.uint8)
    return Image.fromarray(values, mode)


IMAGES = {  # mode: (image, channels read)
    "L": (lambda: noise_image("L", (37, 53), 256), 1),
    "LA": (lambda: noise_image("LA", (37, 53, 2), 9), 2),
    "RGB": (lambda: noise_image("RGB", (37, 53, 3), 7), 3),
    "RGBA": (lambda: noise_image("RGBA", (37, 53, 4), 4), 4),
    "P": (lambda: noise_image("L", (37, 53), 256).convert("P"), 3),
}


@pytest.mark.parametrize("table", [True, False], ids=["table", "sorting"])
@pytest.mark.parametrize("mode", sorted(IMAGES))
def test_counting_and_assigning_by_strips_equal_np_unique(mode, table, small_strips, tmp_path):
    make, n_channels = IMAGES[mode]
    path = tmp_path / "image.png"
    make().save(path)
    with Image.open(path) as image:  # what a grader reads, channels last
        pixels = np.asarray(image.convert({1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[n_channels]))
    expected, inverse, counts = np.unique(pixels.reshape(-1, n_channels), axis=0,
                                          return_inverse=True, return_counts=True)
    reader = codec.ImageReader(str(path))
    # Tables (up to three channels) or sorted keys and binary search.
    reader.key_space = 256 ** n_channels if table and n_channels <= 3 else 0
    colours, got_counts = codec.count_colours(reader)
    np.testing.assert_array_equal(colours, expected)
    np.testing.assert_array_equal(got_counts, counts)
    labels = (np.arange(len(colours)) * 7 % 5).astype(np.uint8)
    np.testing.assert_array_equal(codec.assign_labels(reader, colours, labels),
                                  labels[inverse.reshape(-1)])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_of_pixels_and_assignments_is_that_of_exif_transpose(orientation,
                                                                         small_strips, tmp_path):
    image = noise_image("RGB", (23, 41, 3), 256)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "turned.png"
    image.save(path, exif=exif.tobytes())
    with Image.open(path) as stored:
        expected = np.asarray(ImageOps.exif_transpose(stored))
    pixels = codec.read_image(str(path))
    np.testing.assert_array_equal(pixels, expected)
    reader = codec.ImageReader(str(path))
    colours, _ = codec.count_colours(reader)
    labels = np.arange(len(colours), dtype=np.uint16)
    assignments = codec.assign_labels(reader, colours, labels)
    np.testing.assert_array_equal(colours[assignments], expected.reshape(-1, 3))


@pytest.mark.parametrize("img_shape", [(31, 17), (31, 17, 2), (31, 17, 3), (31, 17, 4)])
def test_decoded_image_by_strips_equals_decode(img_shape, small_strips):
    rng = np.random.default_rng(1)
    n_channels = img_shape[2] if len(img_shape) == 3 else 1
    means = rng.uniform(-20, 280, (300, n_channels))  # rounded and clipped as decode does
    assignments = rng.integers(0, 300, 31 * 17).astype(np.uint16)
    image = codec.decoded_image(assignments, means, img_shape)
    np.testing.assert_array_equal(np.asarray(image), codec.decode(assignments, means, img_shape))


@pytest.mark.parametrize("n_clusters, dtype", [
    (1, np.uint8), (256, np.uint8), (257, np.uint16), (65536, np.uint16), (65537, np.uint32),
])
def test_label_dtype_boundaries(n_clusters, dtype):
    assert codec.label_dtype(n_clusters) == np.dtype(dtype)


# ---------------------------------------------------------------- codebooks

CHANNELS = {"grey": (), "grey+alpha": (2,), "RGB": (3,), "RGBA": (4,)}
# The fewest clusters that need each label type, and an image with at least that many
# pixels (a codebook never has more means than pixels).
CLUSTERS = {np.uint8: (7, (6, 5)), np.uint16: (257, (20, 15)), np.uint32: (65537, (257, 256))}


@pytest.mark.parametrize("dtype, shape_name", [
    (dtype, name) for dtype in (np.uint8, np.uint16) for name in sorted(CHANNELS)
] + [(np.uint32, "grey"), (np.uint32, "RGBA")])  # uint32 needs 65537 means: slower, so two
def test_codebook_round_trips(tmp_path, dtype, shape_name):
    k, size = CLUSTERS[dtype]
    img_shape = size + CHANNELS[shape_name]
    n_channels = img_shape[2] if len(img_shape) == 3 else 1
    rng = np.random.default_rng(k + n_channels)
    n_pixels = img_shape[0] * img_shape[1]
    assignments = rng.integers(0, k, size=n_pixels).astype(dtype)
    assignments[0] = k - 1  # the largest label the type must hold
    means = rng.uniform(0, 255, size=(k, n_channels))
    path = str(tmp_path / "book.npz")
    codec.write_codebook(path, assignments, means, img_shape)

    with np.load(path, allow_pickle=False) as archive:  # what any grader sees
        assert sorted(archive.files) == ["assignments", "img_shape", "means"]
        assert archive["assignments"].dtype == np.dtype(dtype)
        assert archive["means"].dtype == np.float64
        assert archive["img_shape"].dtype.kind in "ui"
        rebuilt = archive["means"][archive["assignments"]].reshape(archive["img_shape"])
    np.testing.assert_array_equal(rebuilt, means[assignments].reshape(img_shape))

    got_assignments, got_means, got_shape = codec.read_codebook(path)
    assert got_assignments.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got_assignments, assignments)
    np.testing.assert_array_equal(got_means, means)
    assert tuple(got_shape) == img_shape


@pytest.mark.parametrize("name", ["book", "book.npz", "book.bin", "my book.NPZ"])
def test_codebook_lands_at_exactly_the_path_given(tmp_path, name):
    assignments = np.array([0, 1, 1, 0], dtype=np.uint8)
    means = np.array([[0.0, 0.0, 0.0], [255.0, 128.0, 1.5]])
    path = str(tmp_path / name)
    codec.write_codebook(path, assignments, means, (2, 2, 3))
    assert sorted(os.listdir(tmp_path)) == [name]  # no '.npz' appended, no temp file left
    # Writing again over the existing file leaves it alone in the folder too.
    codec.write_codebook(path, assignments[::-1].copy(), means, (2, 2, 3))
    assert sorted(os.listdir(tmp_path)) == [name]
    with np.load(path, allow_pickle=False) as archive:
        np.testing.assert_array_equal(archive["assignments"], [0, 1, 1, 0])


def test_reconstruction_error_equals_direct_computation():
    rng = np.random.default_rng(1)
    pixels = random_pixels(rng, 4000, 3, 6)
    colours, inverse, counts = np.unique(pixels, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    means = rng.uniform(0, 255, size=(5, 3))
    labels = rng.integers(0, 5, size=len(colours))
    error = codec.reconstruction_error(colours, counts, means, labels)
    # Per pixel: its colour against the mean its colour is assigned to.
    diff = pixels.astype(np.float64) - means[labels[inverse]]
    direct = np.mean(np.sqrt((diff ** 2).sum(axis=1)))
    assert isinstance(error, float)
    assert error == pytest.approx(direct, rel=1e-12)


def test_reconstruction_error_of_a_hand_example():
    # Two pixels of colour (0, 0) and one of (3, 4), all assigned to the mean (0, 0):
    # distances 0, 0, 5, mean 5/3.
    colours = np.array([[0, 0], [3, 4]], dtype=np.uint8)
    error = codec.reconstruction_error(colours, np.array([2, 1]), np.array([[0.0, 0.0]]),
                                       np.array([0, 0]))
    assert error == pytest.approx(5.0 / 3.0, rel=1e-15)


# A mean and the byte it must decode to, worked out by hand: below 0 and above 255 clip;
# halves round to the even neighbour (0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 254.5 -> 254).
MEAN_TO_BYTE = [(-40.0, 0), (-0.5, 0), (0.5, 0), (1.5, 2), (2.5, 2), (100.49, 100),
                (127.5, 128), (254.5, 254), (255.4, 255), (300.0, 255)]


@pytest.mark.parametrize("img_shape", [(4, 6), (4, 6, 2), (4, 6, 3), (4, 6, 4)])
def test_decode_rounds_and_clips_each_mean(img_shape):
    n_channels = img_shape[2] if len(img_shape) == 3 else 1
    values = np.array([mean for mean, _ in MEAN_TO_BYTE])
    bytes_ = np.array([byte for _, byte in MEAN_TO_BYTE], dtype=np.uint8)
    # Channel c of mean i is table entry (i + 3c) mod 10, so channels differ.
    rows = (np.arange(10)[:, None] + 3 * np.arange(n_channels)) % 10
    means, expected_colours = values[rows], bytes_[rows]
    assignments = (np.arange(24) * 7 % 10).astype(np.uint8)  # every mean is used
    pixels = codec.decode(assignments, means, img_shape)
    assert pixels.dtype == np.uint8 and pixels.shape == img_shape
    flat = pixels.reshape(24, n_channels)
    for pixel, label in zip(flat, assignments):
        np.testing.assert_array_equal(pixel, expected_colours[label])


def test_decode_hand_values():
    means = np.array([[-3.0], [0.5], [1.5], [100.49], [255.6]])
    pixels = codec.decode(np.arange(5, dtype=np.uint8), means, (1, 5))
    np.testing.assert_array_equal(pixels, [[0, 0, 2, 100, 255]])


# ---------------------------------------------------------------- codebooks of other programs

def foreign_codebook(path, labels, means, img_shape, compressed=True, **extra):
    save = np.savez_compressed if compressed else np.savez
    with open(path, "wb") as handle:
        save(handle, assignments=labels, means=means, img_shape=np.asarray(img_shape),
             **extra)
    return path


def decompress_png(book, out):
    assert run_hw2("--decompress", book, "--output", out, "-q") == (0, "", "")
    with Image.open(out) as image:
        return np.asarray(image)


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
def test_foreign_rgb_codebooks_decode(labels, means, tmp_path):
    book = foreign_codebook(tmp_path / "c.npz", labels, means, [3, 4, 3])
    back = decompress_png(book, tmp_path / "back.png")
    np.testing.assert_array_equal(back, grader_decode(labels, means, (3, 4, 3)))


GREY = np.array([0.0, 63.7, 128.2, 255.0, 300.0])


@pytest.mark.parametrize("means, img_shape", [
    (GREY, (3, 4)), (GREY[:, None], (3, 4)), (GREY[:, None], (3, 4, 1)), (GREY, (3, 4, 1)),
    (GREY.astype(np.float32), np.array([3, 4], dtype=np.int32)),
    (np.stack([GREY, 255 - GREY], axis=1), (3, 4, 2)),                    # grey + alpha
    (np.hstack([RGB_MEANS, np.full((5, 1), 128.0)]), (3, 4, 4)),          # RGBA
    (RGB_MEANS, np.array([3, 4, 3], dtype=np.uint16)),
], ids=["k", "k1-HW", "k1-HW1", "k-HW1", "float32-int32shape", "LA", "RGBA", "uint16shape"])
def test_foreign_codebook_shapes_decode(means, img_shape, tmp_path):
    labels = LABELS.ravel()
    book = foreign_codebook(tmp_path / "c.npz", labels, means, img_shape, compressed=False)
    back = decompress_png(book, tmp_path / "back.png")
    np.testing.assert_array_equal(back, grader_decode(labels, means, tuple(img_shape)))


def test_extra_keys_are_ignored_and_never_unpickled(tmp_path, monkeypatch):
    labels = LABELS.ravel().astype(np.uint8)
    book = foreign_codebook(tmp_path / "c.npz", labels, RGB_MEANS, [3, 4, 3],
                            model=np.array("kmeans"), seed=np.array(0),
                            history=np.array([{"iteration": 1}], dtype=object))

    def no_unpickling(*args, **kwargs):
        raise AssertionError("an extra key was unpickled")
    monkeypatch.setattr("pickle.load", no_unpickling)
    monkeypatch.setattr("pickle.loads", no_unpickling)
    back = decompress_png(book, tmp_path / "back.png")
    np.testing.assert_array_equal(back, grader_decode(labels, RGB_MEANS, (3, 4, 3)))


@pytest.mark.parametrize("names, compression", [
    (("assignments", "means", "img_shape"), zipfile.ZIP_DEFLATED),  # np.load reads these too
    (("assignments.npy", "means.npy", "img_shape.npy"), zipfile.ZIP_BZIP2),
    (("assignments.npy", "means.npy", "img_shape.npy"), zipfile.ZIP_LZMA),
], ids=["without-npy-suffix", "bzip2", "lzma"])
def test_members_named_or_compressed_otherwise_decode(names, compression, tmp_path):
    labels = LABELS.ravel().astype(np.uint8)
    book = tmp_path / "other.npz"
    with zipfile.ZipFile(book, "w", compression=compression) as archive:
        for name, array in zip(names, (labels, RGB_MEANS, np.array([3, 4, 3]))):
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(name, buffer.getvalue())
    back = decompress_png(book, tmp_path / "back.png")
    np.testing.assert_array_equal(back, grader_decode(labels, RGB_MEANS, (3, 4, 3)))
