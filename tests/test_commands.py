"""The commands end to end: compress and decompress, the result line, the summaries and
notes, the flags, and the usage errors that suggest the fix.

Every expected value is computed here from the input image and the codebook with nothing
but NumPy and Pillow, the way a grader's script would.
"""
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import gmm
import hw2
import kmeans
from conftest import (KEYS, MODELS, ROCKET, ROOT, assert_failed, check_round_trip,
                      grader_decode, grader_pixels, load_codebook, printed_error, run_hw2)


def smooth_noisy(shape, seed):
    """A gradient plus noise: many distinct values, a few broad groups."""
    height, width = shape[:2]
    ramp = np.linspace(0, 200, width)[None, :] + np.linspace(0, 50, height)[:, None]
    if len(shape) == 3:
        ramp = ramp[..., None] * np.linspace(0.4, 1.0, shape[2])
    noise = np.random.default_rng(seed).normal(0, 8, size=shape)
    return np.clip(ramp + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def noise_png(tmp_path):
    """A 40x30 RGB photo of random colours: ~1200 distinct colours, so every fit iterates."""
    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(1234).integers(0, 256, (30, 40, 3), np.uint8)).save(path)
    return path


def compress(image, out, *extra):
    """``--compress image --output out`` in-process: (status, stdout, stderr)."""
    return run_hw2("--compress", image, "--output", out, *extra)


def summary_of(err):
    """The one summary line of stderr (notes aside)."""
    lines = [line for line in err.splitlines() if not line.startswith("hw2: note: ")]
    assert len(lines) == 1 and lines[0].startswith("hw2: wrote "), err
    return lines[0]


# ---------------------------------------------------------------- the sample photo

@pytest.fixture(scope="module")
def rocket_run(tmp_path_factory):
    """Compress the sample photo once at k = 4: (folder, stdout, codebook)."""
    folder = tmp_path_factory.mktemp("rocket")
    status, stdout, _ = compress(ROCKET, folder / "rocket.book", "--clusters", 4)
    assert status == 0
    return folder, stdout, load_codebook(folder / "rocket.book")


def test_photo_gives_one_line_with_the_true_error_and_the_three_arrays(rocket_run):
    folder, stdout, book = rocket_run
    pixels = grader_pixels(ROCKET)
    height, width = pixels.shape[:2]
    diff = pixels.reshape(-1, 3).astype(np.float64) - book["means"][book["assignments"]]
    error = printed_error(stdout)
    assert error == pytest.approx(np.sqrt((diff ** 2).sum(axis=1)).mean(), rel=1e-9)
    assert error > 0  # the photo has far more than 4 colours
    assert os.listdir(folder) == ["rocket.book"]
    assert sorted(book) == KEYS and book["img_shape"].tolist() == [height, width, 3]
    assert book["means"].dtype == np.float64 and book["means"].shape == (4, 3)
    assert book["assignments"].dtype == np.uint8
    assert book["assignments"].shape == (height * width,)
    assert len(np.unique(book["means"], axis=0)) == 4


def test_photo_pixels_go_to_their_nearest_mean(rocket_run):
    # k-means ends with an assignment step: no pixel has a nearer mean than its own.
    _, _, book = rocket_run
    pixels = grader_pixels(ROCKET).reshape(-1, 3).astype(np.float64)
    d2 = ((pixels[:, None, :] - book["means"][None, :, :]) ** 2).sum(axis=2)
    own = d2[np.arange(len(pixels)), book["assignments"]]
    assert (own <= d2.min(axis=1) + 1e-6).all()


def test_photo_decompresses_exactly_to_png_and_closely_to_jpeg(rocket_run, tmp_path):
    folder, _, book = rocket_run
    for name in ("back.png", "back.jpg"):
        assert run_hw2("--decompress", folder / "rocket.book", "--output", tmp_path / name)[0] == 0
    expected = grader_decode(folder / "rocket.book")
    with Image.open(tmp_path / "back.png") as image:
        assert image.format == "PNG"
        np.testing.assert_array_equal(np.asarray(image), expected)
    with Image.open(tmp_path / "back.jpg") as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.size == tuple(book["img_shape"][1::-1])
        assert np.abs(np.asarray(image).astype(int) - expected).mean() < 4  # lossy, but close
    assert sorted(os.listdir(tmp_path)) == ["back.jpg", "back.png"]


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape", [(18, 24), (15, 21, 3), (16, 20, 2), (16, 20, 4)],
                         ids=["grey", "RGB", "grey+alpha", "RGBA"])
def test_round_trip(shape, model, tmp_path):
    pixels = smooth_noisy(shape, seed=sum(shape))
    if len(shape) == 3 and shape[2] in (2, 4):
        pixels[:4, :, -1] = 0  # a transparent band
    Image.fromarray(pixels).save(tmp_path / "in.png")
    book, _ = check_round_trip(tmp_path / "in.png", tmp_path, 6, model)
    assert book["img_shape"].tolist() == list(shape)  # grey stays 2-D, alpha the last channel


def few_colours(colours, shape=(12, 10), seed=5):
    """An image of ``colours`` (rows of a palette), each of them present."""
    pick = np.random.default_rng(seed).integers(0, len(colours), size=shape)
    pick.flat[:len(colours)] = np.arange(len(colours))
    return np.asarray(colours, dtype=np.uint8)[pick]


FIVE = [[0, 0, 0], [255, 255, 255], [200, 30, 40], [10, 220, 90], [7, 8, 9]]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("pixels, clusters", [
    (np.full((5, 4, 3), (10, 20, 30)), 20),
    (np.full((5, 4, 3), (10, 20, 30)), 1),
    (few_colours([[0, 0, 0], [255, 128, 1]]), 20),
    (np.array([[[7, 8, 9]]]), 20),
    (np.array([[[7, 8, 9]]]), 1),
    (np.arange(18).reshape(2, 3, 3) * 14, 50),
    (few_colours([[5, 6, 7], [5, 6, 8], [200, 1, 1]]), 3),
    (few_colours(FIVE), 5),
    (few_colours(FIVE), 9),
    (few_colours([0, 255, 200, 10, 7]), 5),
    (few_colours([0, 255, 200, 10, 7]), 9),
], ids=["one-colour", "one-colour-k1", "two-colours", "one-pixel", "one-pixel-k1",
        "more-clusters-than-pixels", "k-equals-colours-two-near", "five-k5", "five-k9",
        "five-greys-k5", "five-greys-k9"])
def test_few_colours_are_kept_exactly(pixels, clusters, model, tmp_path):
    pixels = np.asarray(pixels, dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "few.png")
    book, error = check_round_trip(tmp_path / "few.png", tmp_path, clusters, model, pixels)
    assert error == 0.0
    n_pixels = pixels.shape[0] * pixels.shape[1]
    np.testing.assert_array_equal(np.unique(book["means"], axis=0),  # the colours themselves
                                  np.unique(pixels.reshape(n_pixels, -1), axis=0))


@pytest.mark.parametrize("model", MODELS)
def test_two_colours_with_one_cluster_give_their_weighted_mean(model, tmp_path):
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[:1] = 200  # 4 pixels of 200, 12 of 0: the mean is 50
    Image.fromarray(pixels).save(tmp_path / "two.png")
    book, error = check_round_trip(tmp_path / "two.png", tmp_path, 1, model, pixels)
    np.testing.assert_allclose(book["means"], 50.0)
    assert error == pytest.approx((4 * 150 + 12 * 50) * np.sqrt(3) / 16)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("n_colours, clusters", [(400, 300), (300, 300)])
def test_more_than_256_clusters_use_uint16_labels(n_colours, clusters, model, tmp_path):
    codes = np.arange(400) % n_colours  # a 20x20 image, each colour a few times
    pixels = np.stack([codes % 20 * 12, codes // 20 * 12, (codes * 37) % 256], axis=1)
    pixels = pixels.reshape(20, 20, 3).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "many.png")
    book, _ = check_round_trip(tmp_path / "many.png", tmp_path, clusters, model, pixels)
    assert len(book["means"]) > 256
    assert book["assignments"].dtype == np.uint16 and book["assignments"].max() > 255


def test_largest_clusters_value_is_accepted(photo, tmp_path):
    status, out, _ = compress(photo, tmp_path / "c.npz", "--clusters", kmeans.MAX_CLUSTERS)
    assert status == 0 and out.startswith("Reconstruction error is ")


def test_input_moved_while_fitting_is_no_error(tmp_path, monkeypatch):
    image = tmp_path / "in.png"
    Image.fromarray(smooth_noisy((20, 30, 3), 6)).save(image)
    fit_colours = hw2.fit_colours

    def moving(*args):
        os.rename(image, tmp_path / "moved.png")
        return fit_colours(*args)
    monkeypatch.setattr(hw2, "fit_colours", moving)
    status, stdout, stderr = compress(image, tmp_path / "c.npz", "--clusters", 3)
    assert status == 0
    printed_error(stdout)
    assert "Traceback" not in stderr and stderr.startswith(f"hw2: wrote {tmp_path / 'c.npz'}")
    assert sorted(load_codebook(tmp_path / "c.npz")) == KEYS


CHILD = textwrap.dedent("""
    import sys
    import hw2
    image, book, png = sys.argv[1:]
    for model in ("kmeans", "mixture"):
        compressed = hw2.main(["--compress", image, "--model", model, "--clusters", "3",
                               "--output", book])
        decompressed = hw2.main(["--decompress", book, "--output", png])
        print("STATUS", compressed, decompressed)
    leaked = sorted(name for name in sys.modules if name.split(".")[0] in ("sklearn", "scipy"))
    print("LEAKED", " ".join(leaked))
""")


def test_cli_never_imports_sklearn_or_scipy(tmp_path):
    Image.fromarray(smooth_noisy((10, 12, 3), 4)).save(tmp_path / "small.png")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "small.png"), str(tmp_path / "book"),
         str(tmp_path / "back.png")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines.count("STATUS 0 0") == 2, child.stdout + child.stderr
    assert "LEAKED " in lines, f"imported: {lines[-1]}"


# ---------------------------------------------------------------- --seed

def test_seed_makes_runs_repeatable_defaults_to_0_and_reaches_the_fit(noise_png, tmp_path):
    books = {}
    for name, extra in [("none-a", []), ("none-b", [])] + [
            (f"seed-{seed}", ["--seed", str(seed)]) for seed in range(4)]:
        status, _, _ = compress(noise_png, tmp_path / name, "--clusters", 6, "-q", *extra)
        assert status == 0
        books[name] = load_codebook(tmp_path / name)
    for key in KEYS:
        np.testing.assert_array_equal(books["none-a"][key], books["none-b"][key])
        np.testing.assert_array_equal(books["none-a"][key], books["seed-0"][key])
    # Random noise has many near-equal local optima: were --seed ignored, every seed
    # would give the same codebook.
    assert any(not np.array_equal(books["seed-0"]["means"], books[f"seed-{seed}"]["means"])
               for seed in (1, 2, 3))


# ---------------------------------------------------------------- pasted dashes

@pytest.mark.parametrize("pasted, expected", [
    (["\u2013compress", "a.jpg"], ["--compress", "a.jpg"]),          # en dash
    (["\u2014output", "c.npz"], ["--output", "c.npz"]),              # em dash
    (["\u2014output=c.npz"], ["--output=c.npz"]),
    (["\u2013-clusters", "5"], ["--clusters", "5"]),                 # en dash then hyphen
    (["\u2013v"], ["--v"]),                                          # argparse expands --v
    # Left alone:
    (["--seed", "-1"], None),                  # a negative number
    (["--seed", "\u22121"], None),             # a negative number with a minus sign
    (["--compress", "-photo.jpg"], None),      # a file name starting with a hyphen
    (["--compress", "\u2013photo.jpg"], None), # ... or with an en dash: not a flag name
    (["--compress", "\u2013 draft"], None),
    (["--", "\u2013compress"], None),          # after "--" nothing is an option
    (["-q", "--output", "c.npz"], None),       # ASCII options are already fine
])
def test_pasted_dashes_become_double_hyphens(pasted, expected):
    assert hw2.normalize_dashes(pasted) == (pasted if expected is None else expected)


def test_pasted_command_line_compresses(noise_png, tmp_path):
    out = tmp_path / "pasted.npz"
    status, stdout, _ = run_hw2("\u2013compress", noise_png, "\u2014output", out,
                                "\u2013clusters", "3", "\u2013quiet")
    assert status == 0
    printed_error(stdout)
    assert len(load_codebook(out)["means"]) == 3


# ---------------------------------------------------------------- the summaries

def test_compress_summary_names_output_sizes_clusters_and_convergence(noise_png, tmp_path):
    out = tmp_path / "codebook.npz"
    status, _, err = compress(noise_png, out, "--clusters", 5)
    assert status == 0
    summary = summary_of(err)
    out_size, in_size = os.path.getsize(out), os.path.getsize(noise_png)
    assert f"wrote {out}, {out_size:,} bytes ({round(100 * out_size / in_size)}% of the " \
           "input)" in summary
    assert "kmeans, 5 clusters used, " in summary
    assert re.search(r"\b\d+ iterations?(, converged)?; \d+\.\d\d s$", summary)


def test_summary_says_when_every_colour_is_kept(tmp_path):
    Image.fromarray(few_colours(FIVE[:3], (4, 6))).save(tmp_path / "three.png")
    status, stdout, err = compress(tmp_path / "three.png", tmp_path / "few.npz", "--clusters", 20)
    assert (status, stdout) == (0, "Reconstruction error is 0.0\n")
    assert "kmeans, 3 clusters used, lossless; " in summary_of(err)


def test_summary_speaks_in_the_singular_for_one(tmp_path):
    Image.fromarray(np.full((5, 7, 3), 90, dtype=np.uint8)).save(tmp_path / "flat.png")
    status, _, err = compress(tmp_path / "flat.png", tmp_path / "c.npz", "--clusters", 1)
    assert status == 0 and "1 cluster used," in summary_of(err)
    status, _, err = run_hw2("--decompress", tmp_path / "c.npz", "--output", tmp_path / "b.png")
    assert status == 0 and "from 1 colour," in err


def test_summary_says_a_codebook_is_larger_than_its_image(tmp_path):
    # Random black and white pixels: PNG stores 1 bit each, the codebook a byte each
    # that deflate cannot pack below a bit.
    path = tmp_path / "bits.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 2, (300, 300)).astype(bool)).save(path)
    status, _, err = compress(path, tmp_path / "c.npz", "--clusters", 2)
    ratio = os.path.getsize(tmp_path / "c.npz") / os.path.getsize(path)
    assert status == 0 and ratio > 1
    assert f"({round(100 * ratio)}% of the input)" in summary_of(err)


def test_decompress_summary_names_output_size_and_format(noise_png, tmp_path):
    assert compress(noise_png, tmp_path / "c.npz", "--clusters", 4, "-q")[0] == 0
    out = tmp_path / "back.jpg"
    assert run_hw2("--decompress", tmp_path / "c.npz", "--output", out) == (
        0, "", f"hw2: wrote {out}: 40x30 JPEG image from 4 colours, {os.path.getsize(out):,} "
               "bytes\n")


def test_summary_lines_stay_single_lines_whatever_the_file_names(noise_png, tmp_path):
    image = tmp_path / "a\nb.png"
    os.rename(noise_png, image)
    status, _, err = compress(image, tmp_path / "c\nd.npz", "--clusters", 3)
    lines = err.splitlines()
    assert status == 0 and lines and all(line.startswith("hw2: ") for line in lines)
    assert any("c\\nd.npz" in line for line in lines)


# ---------------------------------------------------------------- notes

def test_note_when_the_image_was_turned_upright(tmp_path):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side: turn 90 degrees to view
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (8, 12, 3), dtype=np.uint8)) \
        .save(path, exif=exif)
    status, _, err = compress(path, tmp_path / "c.npz", "--clusters", 3)
    notes = [line for line in err.splitlines() if "note:" in line]
    assert status == 0 and len(notes) == 1
    assert str(path) in notes[0] and "EXIF orientation" in notes[0]
    assert compress(path, tmp_path / "c.npz", "--clusters", 3, "-q")[2] == ""


@pytest.mark.parametrize("alpha, noted", [(255, False), (128, True)])
def test_composited_note_only_when_something_was_transparent(alpha, noted, tmp_path):
    book = tmp_path / "c.npz"
    np.savez_compressed(book, assignments=np.repeat([1, 0], 24).astype(np.uint8),
                        means=np.array([[30, 60, 90, 255], [30, 60, 90, alpha]], dtype=float),
                        img_shape=np.array([6, 8, 4]))
    status, _, err = run_hw2("--decompress", book, "--output", tmp_path / "flat.jpg")
    assert status == 0 and " JPEG image" in err
    assert ("composited on white" in err) == noted


@pytest.mark.parametrize("name, fmt", [("photo.png", "PNG"), ("c.JPG", "JPEG"), ("c.npz", None)])
def test_an_image_extension_on_a_codebook_gets_a_note(name, fmt, noise_png, tmp_path):
    out = tmp_path / name
    status, stdout, err = compress(noise_png, out, "--clusters", 3)
    assert status == 0
    printed_error(stdout)
    note = (f"hw2: note: {out} holds an npz codebook, not a {fmt} image, whatever its "
            "extension; --decompress it to see the image")
    assert (note in err.splitlines()) == (fmt is not None), err
    assert sorted(load_codebook(out)) == KEYS  # the codebook, written all the same


def test_help_names_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        hw2.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--compress", "--decompress", "--clusters", "--model", "--output",
                 "--seed", "--verbose", "--quiet", "--indexed", "{kmeans,mixture}"):
        assert flag in text


# ---------------------------------------------------------------- usage errors: exit 2

P, O = "{photo}", "{out}"
USAGE_ERRORS = [
    ([], ["--compress IMAGE", "--decompress CODEBOOK", "--output"]),
    (["--compress", P, "--decompress", P, "--output", O], ["give --compress IMAGE or"]),
    (["--compress", P], ["--output PATH"]),
    (["--compress", P, "--output", ""], ["--output", "'' is not a file name"]),
    (["--compress", P, "--output", O, "--output", O], ["--output: given more than once"]),
    # Given twice: argparse would keep the last one silently.
    (["--compress", P, "--compress", P, "--output", O], ["--compress: given more than once"]),
    (["--compress", "", "--output", O], ["--compress", "'' is not a file name"]),
    # A pipe cannot be checked or read with bounded memory before the work: files only.
    (["--compress", "-", "--output", O], ["--compress: '-' is not a file name", "standard input"]),
    (["--decompress", "-", "--output", O], ["--decompress: '-' is not a file name"]),
    (["--compress", P, "--output", O, "--seed", "-1"], ["--seed", "-1 is negative"]),
    (["-compress", P, "-output", O], ["(did you mean --compress and --output?)"]),
    (["--compress", P, "--ouput", O], ["(did you mean --output?)"]),
    (["--compress", P, "-output=" + O], ["(did you mean --output?)"]),
    (["--compress", P, "--output", O, "--clustres", "4"], ["(did you mean --clusters?)"]),
    (["--compress", P, "--output", O, "--colours", "4"], ["(did you mean --clusters?)"]),
    (["--compress", P, "--output", O, "--colors", "5"], ["unrecognized arguments: --colors 5",
                                                         "(did you mean --clusters?)"]),
    # Far from every real flag: no guess (the hint would stand before the ';').
    (["--compress", P, "--output", O, "--zzzz"], ["unrecognized arguments: --zzzz;"]),
] + [
    (["--compress", P, "--output", O, "--model", typed],
     ["argument --model: invalid choice: ", typed, "kmeans", "mixture"])
    for typed in ("k-means", "KMeans", "gmm", "kmedoids")
] + [
    (["--compress", P, "--output", O, "--clusters", clusters], ["--clusters"])
    for clusters in ("0", "-3", "abc", "2.5", "", str(10 ** 30))
] + [
    (["--compress", P, "--output", O, "--model", model, "--clusters", str(limit + 1)],
     [f"--clusters: {limit + 1} is not between 1 and {limit}"])
    for model, limit in (("kmeans", kmeans.MAX_CLUSTERS), ("mixture", gmm.MAX_COMPONENTS))
]


@pytest.mark.parametrize("argv, words", USAGE_ERRORS)
def test_bad_command_line_is_one_usage_line_before_any_work(argv, words, photo, old_output,
                                                             spy_work):
    out = old_output("c.npz")
    argv = [arg.format(photo=photo, out=out) for arg in argv]
    line = assert_failed(*run_hw2(*argv), *words, expected=2, output=out)
    assert line.endswith("; try 'python3 hw2.py --help'")
    assert spy_work == []  # refused before any file is read
    assert sorted(os.listdir(out.parent)) == ["c.npz", "photo.png"]
