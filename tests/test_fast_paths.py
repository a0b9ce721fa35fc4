"""The fast paths give the same answers as the plain computations they replace.

* both ways of finding the distinct colours (a table over the key space, or
  sorting the keys) agree with ``np.unique``;
* the reconstruction error computed from the distinct colours is the error over
  every pixel.

(kmeans.py's speed-ups are held to the plain algorithm in test_kmeans_fast.py.)
"""
import os

import numpy as np
import pytest
from PIL import Image

import codec
import kmeans

SAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "samples", "rocket.jpg")


def sample_pixels(size=(96, 64)):
    """The committed sample photo, shrunk: (n_pixels, 3) uint8 with many repeats."""
    with Image.open(SAMPLE) as image:
        small = image.convert("RGB").resize(size, Image.BILINEAR)
    return np.asarray(small).reshape(-1, 3)


# ---------------------------------------------------------------- distinct colours

@pytest.mark.parametrize("path", ["table", "sort"])
@pytest.mark.parametrize("n_channels", [1, 3, 4])
def test_both_ways_of_finding_distinct_colours_agree_with_unique(monkeypatch, path, n_channels):
    rng = np.random.default_rng(n_channels)
    pixels = rng.integers(0, 40, size=(5000, n_channels)).astype(np.uint8) * 6
    if path == "table":
        monkeypatch.setattr(codec, "_BINCOUNT_FLOOR", 1 << 30)
        monkeypatch.setattr(codec, "_BINCOUNT_LIMIT", 1 << 30)
    else:
        monkeypatch.setattr(codec, "_BINCOUNT_FLOOR", 0)
        monkeypatch.setattr(codec, "_BINCOUNT_LIMIT", 0)
    colours, counts, inverse = codec.distinct_colours(pixels)
    expected, expected_counts = np.unique(pixels, axis=0, return_counts=True)
    order = np.lexsort(colours.T[::-1])
    np.testing.assert_array_equal(colours[order], expected)
    np.testing.assert_array_equal(counts[order], expected_counts)
    np.testing.assert_array_equal(colours[inverse], pixels)


def test_error_from_distinct_colours_is_the_error_over_every_pixel():
    pixels = sample_pixels()
    colours, counts, inverse = codec.distinct_colours(pixels)
    fit = kmeans.kmeans(colours, 5, sample_weight=counts, rng=np.random.default_rng(0))
    direct = np.sqrt(((pixels - fit.centers[fit.labels[inverse]]) ** 2).sum(axis=1)).mean()
    error = codec.reconstruction_error(colours, counts, fit.centers, fit.labels)
    assert error == pytest.approx(direct, rel=1e-12)
