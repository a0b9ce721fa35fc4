"""--dither: each pixel's mean chosen by Floyd-Steinberg error diffusion (codec.dithered_assignments).

The fit is the same as without the flag; only the assignments change, so every
reader's ``means[assignments]`` shows the dithered image.
"""
import numpy as np
import pytest
from PIL import Image, ImageFilter

import codec
from conftest import OLD_BYTES, assert_failed, run_hw2

# A blur of this radius on both images stands in for an eye at viewing distance.
BLUR_RADIUS = 1.5


def save_ramp(path, mode):
    """A smooth 48x192 left-to-right gradient (RGB, or its red channel as grey), as PNG."""
    x = np.linspace(0, 1, 192)[None, :].repeat(48, axis=0)
    rgb = np.dstack([40 + 180 * x, 90 + 60 * x, 200 - 150 * x]).round().astype(np.uint8)
    Image.fromarray(rgb if mode == "RGB" else rgb[..., 0]).save(path)
    return np.asarray(Image.open(path))


def compress(image, book, *flags):
    """Compress with hw2: (printed error, codebook arrays, stderr)."""
    status, out, err = run_hw2("--compress", image, "--output", book, *flags)
    assert status == 0, err
    with np.load(book, allow_pickle=False) as arrays:
        return float(out.split()[-1]), {key: arrays[key] for key in arrays.files}, err


def decoded(book):
    """A grader's decoding, rounded to 8 bits as --decompress writes it."""
    image = book["means"][book["assignments"]].reshape(book["img_shape"])
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def mean_distance(a, b):
    """Mean Euclidean distance between the pixels of two images of the same shape."""
    diff = a.reshape(a.shape[0] * a.shape[1], -1).astype(np.float64) - b.reshape(
        b.shape[0] * b.shape[1], -1)
    return float(np.sqrt((diff ** 2).sum(axis=1)).mean())


def blurred_error(original, decoded_pixels):
    def blur(pixels):
        return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(BLUR_RADIUS)))
    return mean_distance(blur(original), blur(decoded_pixels))


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_dithering_lowers_the_blurred_error_on_a_ramp(tmp_path, mode):
    # At k=4 each band is 48 pixels wide, far wider than the blur: banding keeps about a
    # quarter of a band's colour step as error; diffusion's dots average back to the ramp.
    pixels = save_ramp(tmp_path / "ramp.png", mode)
    error, plain, _ = compress(tmp_path / "ramp.png", tmp_path / "plain.npz", "--clusters", 4)
    dithered_error, dithered, err = compress(tmp_path / "ramp.png", tmp_path / "d.npz",
                                             "--clusters", 4, "--dither")
    assert np.array_equal(plain["means"], dithered["means"])  # the fit is unchanged
    assert tuple(dithered["img_shape"]) == pixels.shape
    assert blurred_error(pixels, decoded(dithered)) < 0.5 * blurred_error(pixels, decoded(plain))
    assert dithered_error > error  # each pixel is no longer at its nearest mean
    assert ", dithered;" in err.splitlines()[-1]


@pytest.mark.parametrize("model", ["kmeans", "mixture"])
def test_printed_error_is_the_mean_distance_to_the_assigned_means(tmp_path, model):
    pixels = save_ramp(tmp_path / "ramp.png", "RGB")
    error, book, _ = compress(tmp_path / "ramp.png", tmp_path / "d.npz", "--clusters", 5,
                              "--model", model, "--dither")
    rebuilt = book["means"][book["assignments"]].reshape(pixels.shape)
    assert error == pytest.approx(mean_distance(pixels, rebuilt), rel=1e-12)


@pytest.mark.parametrize("ext, flags", [("png", []), ("png", ["--indexed"]), ("gif", [])])
def test_dithered_codebook_decompresses_to_its_means(tmp_path, ext, flags):
    save_ramp(tmp_path / "ramp.png", "RGB")
    _, book, _ = compress(tmp_path / "ramp.png", tmp_path / "d.npz", "--clusters", 6, "--dither")
    assert book["assignments"].dtype == np.uint8 and book["assignments"].shape == (48 * 192,)
    out = tmp_path / f"back.{ext}"
    status, _, err = run_hw2("--decompress", tmp_path / "d.npz", "--output", out, *flags)
    assert status == 0, err
    with Image.open(out) as image:
        assert image.mode == ("RGB" if ext == "png" and not flags else "P")
        assert np.array_equal(np.asarray(image.convert("RGB")), decoded(book))


def test_same_seed_gives_the_same_dithered_codebook(tmp_path):
    save_ramp(tmp_path / "ramp.png", "RGB")
    books = [compress(tmp_path / "ramp.png", tmp_path / f"{run}.npz", "--clusters", 5,
                      "--seed", 3, "--dither")[1] for run in range(2)]
    for key in codec.CODEBOOK_KEYS:  # the files differ only in the zip's timestamps
        assert books[0][key].dtype == books[1][key].dtype
        assert books[0][key].tobytes() == books[1][key].tobytes()


def test_without_the_flag_each_pixel_keeps_its_nearest_mean(tmp_path, monkeypatch):
    def refuse(*args):
        raise AssertionError("dithered without --dither")
    monkeypatch.setattr(codec, "dither", refuse)
    pixels = save_ramp(tmp_path / "ramp.png", "RGB").reshape(-1, 3).astype(np.float64)
    error, book, err = compress(tmp_path / "ramp.png", tmp_path / "c.npz", "--clusters", 5)
    distances = np.linalg.norm(pixels[:, None] - book["means"][None], axis=2)
    assert np.array_equal(book["assignments"], distances.argmin(axis=1))
    assert error == pytest.approx(distances.min(axis=1).mean(), rel=1e-12)
    assert "dithered" not in err


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_refused_in_one_line_before_any_work(tmp_path, mode, spy_work):
    Image.new(mode, (8, 6)).save(tmp_path / "alpha.png")
    out = tmp_path / "c.npz"
    out.write_bytes(OLD_BYTES)
    status, stdout, stderr = run_hw2("--compress", tmp_path / "alpha.png", "--output", out,
                                     "--dither")
    assert_failed(status, stdout, stderr, "alpha.png", "--dither", "alpha", output=out)
    assert "kmeans" not in spy_work  # refused before the fit


def test_more_than_256_clusters_are_refused_in_one_line(tmp_path, photo):
    out = tmp_path / "c.npz"
    status, stdout, stderr = run_hw2("--compress", photo, "--output", out, "--clusters", 257,
                                     "--dither")
    assert_failed(status, stdout, stderr, "--dither", "256 clusters", output=out)
    assert not out.exists()


def dithered(image, means, tmp_path):
    """codec.dither's assignments for ``image``, read back from a PNG file."""
    image.save(tmp_path / "image.png")
    return codec.dither(codec.ImageReader(str(tmp_path / "image.png")), means)[0]


def test_a_padding_entry_is_never_chosen(tmp_path):
    # Pillow holds 256 palette entries; black ones would be the nearest to a black image.
    # The nearest of these three means to black is the grey; its error (black minus grey)
    # only pushes the next pixels further below 0, so every pixel takes the grey.
    means = np.array([[250.0, 250.0, 250.0], [90.0, 90.0, 90.0], [250.0, 40.0, 40.0]])
    black = Image.new("RGB", (16, 8))
    assert np.array_equal(dithered(black, means, tmp_path), np.ones(16 * 8))


@pytest.mark.parametrize("mode, n_means", [("RGB", 256), ("RGB", 5), ("L", 6)])
def test_pixels_equal_to_a_mean_keep_it(mode, n_means, tmp_path):
    # No pixel differs from its mean, so there is no error to diffuse.  The means lie
    # at least 40 levels apart, far beyond the 4 levels of Pillow's lookup table.
    levels = np.arange(0, 256, 42, dtype=np.float64)  # 7 levels, 343 colours
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    means = grid[:n_means] if mode == "RGB" else levels[:n_means, None]
    labels = np.random.default_rng(0).integers(0, n_means, size=(24, 40))
    image = Image.fromarray(means[labels].astype(np.uint8).squeeze(axis=-1 if mode == "L" else ()))
    assert image.mode == mode
    assert np.array_equal(dithered(image, means, tmp_path), labels.reshape(-1))
