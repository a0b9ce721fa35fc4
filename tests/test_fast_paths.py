"""The fast paths give the same answers as the plain computations they replace.

* fitting the distinct colours weighted by their counts is fitting every pixel;
* distances computed block by block agree with distances computed at once;
* the bounded assign step gives the labels of the every-distance one, ties
  included, and Lloyd with either takes exactly the steps of plain Lloyd;
* both ways of finding the distinct colours (a table over the key space, or
  sorting the keys) agree with ``np.unique``;
* the coarse histogram the starts run on keeps the total weight and the mean,
  and the coarse-to-fine result is a fixed point of Lloyd on the exact data.
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


def blobs(rng, n_per_blob=400, n_features=3, n_blobs=6, spread=12.0):
    """Gaussian blobs whose centres are uniform on 0..255, shape (n_samples, n_features)."""
    centres = rng.uniform(0, 255, size=(n_blobs, n_features))
    return np.concatenate([c + spread * rng.standard_normal((n_per_blob, n_features))
                           for c in centres])


def plain_lloyd(X, weights, centers, max_iter=300):
    """Textbook weighted Lloyd: every distance every iteration, stop when no label changes.

    Returns the centres, the labels and, for each iteration, the objective of the
    labels with their means (after the update step).
    """
    history = []
    sq_dist = ((X[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
    labels = sq_dist.argmin(axis=1)
    for _ in range(max_iter):
        mass = np.array([weights[labels == c].sum() for c in range(len(centers))])
        assert (mass > 0).all(), "the test data should not empty a cluster"
        centers = np.array([weights[labels == c] @ X[labels == c] / mass[c]
                            for c in range(len(centers))])
        history.append(float(weights @ ((X - centers[labels]) ** 2).sum(axis=1)))
        sq_dist = ((X[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
        new_labels = sq_dist.argmin(axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
    return centers, labels, history


# ---------------------------------------------------------------- distinct colours

def test_fitting_distinct_colours_with_counts_is_fitting_every_pixel():
    pixels = sample_pixels()
    colours, counts, inverse = codec.distinct_colours(pixels)
    assert len(colours) < len(pixels)  # the photo does repeat colours
    start = pixels[[0, 1000, 2000, 3000, 4000, 5000]].astype(np.float64)
    if len(np.unique(start, axis=0)) < len(start):
        pytest.fail("the test needs distinct starting colours")
    on_colours = kmeans.kmeans(colours, 6, sample_weight=counts, init=start, tol=0.0)
    on_pixels = kmeans.kmeans(pixels, 6, init=start, tol=0.0)
    np.testing.assert_allclose(on_colours.centers, on_pixels.centers, rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(on_colours.labels[inverse], on_pixels.labels)
    assert on_colours.inertia == pytest.approx(on_pixels.inertia, rel=1e-10)
    assert on_colours.n_iter == on_pixels.n_iter


def test_default_seeding_on_distinct_colours_matches_every_pixel(monkeypatch):
    # The starts run on the coarse histogram, which is the same for the pixels and for
    # their distinct colours with counts; the finish is the same Lloyd on either.
    sizes = []  # (samples, points the starts ran on)
    real = kmeans._coarse_data
    monkeypatch.setattr(kmeans, "_coarse_data", lambda X, *args: sizes.append(
        (len(X), len(real(X, *args)[0]))) or real(X, *args))
    pixels = sample_pixels(size=(640, 427))
    colours, counts, inverse = codec.distinct_colours(pixels)
    on_colours = kmeans.kmeans(colours, 8, sample_weight=counts, n_init=3,
                               rng=np.random.default_rng(1))
    on_pixels = kmeans.kmeans(pixels, 8, n_init=3, rng=np.random.default_rng(1))
    # Both started on the same histogram, smaller than either.
    assert sizes[0][1] == sizes[1][1] < len(colours) < len(pixels)
    assert on_colours.converged and on_pixels.converged
    np.testing.assert_allclose(on_colours.centers, on_pixels.centers, rtol=1e-9, atol=1e-8)
    np.testing.assert_array_equal(on_colours.labels[inverse], on_pixels.labels)
    assert on_colours.inertia == pytest.approx(on_pixels.inertia, rel=1e-9)


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


# ---------------------------------------------------------------- blocks of rows

@pytest.mark.parametrize("n_clusters", [3, 40])
def test_distances_in_small_blocks_agree_with_one_block(monkeypatch, n_clusters):
    rng = np.random.default_rng(n_clusters)
    X = rng.uniform(0, 255, size=(3001, 3))
    centers = rng.uniform(0, 255, size=(n_clusters, 3))
    whole = kmeans.assign(X, centers)
    monkeypatch.setattr(kmeans, "_CHUNK_ELEMENTS", 7)  # 2 rows a block at k = 3, 1 at k = 40
    blocked = kmeans.assign(X, centers)
    np.testing.assert_array_equal(blocked[0], whole[0])
    np.testing.assert_allclose(blocked[1], whole[1], rtol=1e-12, atol=1e-9)
    direct = ((X[:, None, :] - centers[None]) ** 2).sum(axis=2).min(axis=1)
    np.testing.assert_allclose(blocked[1], direct, rtol=1e-9, atol=1e-7)


def test_a_fit_in_small_blocks_is_the_fit_in_one_block(monkeypatch):
    rng = np.random.default_rng(5)
    X = blobs(rng)
    weights = rng.integers(1, 9, size=len(X))
    start = X[rng.choice(len(X), 6, replace=False)]
    whole = kmeans.kmeans(X, 6, sample_weight=weights, init=start, tol=0.0)
    monkeypatch.setattr(kmeans, "_CHUNK_ELEMENTS", 50)
    blocked = kmeans.kmeans(X, 6, sample_weight=weights, init=start, tol=0.0)
    np.testing.assert_allclose(blocked.centers, whole.centers, rtol=1e-12, atol=1e-10)
    np.testing.assert_array_equal(blocked.labels, whole.labels)
    assert blocked.inertia == pytest.approx(whole.inertia, rel=1e-12)


# ---------------------------------------------------------------- the assign step

# The ways of computing the assign step: every distance, or Hamerly's bounds.
ASSIGN_STEPS = {
    "every distance": dict(_BOUNDS_MIN_CLUSTERS=1 << 62),
    "bounds": dict(_BOUNDS_MIN_CLUSTERS=0),
}


@pytest.fixture(params=sorted(ASSIGN_STEPS))
def assign_way(request, monkeypatch):
    """Makes :func:`kmeans._assign_step` pick one way; returns its name."""
    for name, value in ASSIGN_STEPS[request.param].items():
        monkeypatch.setattr(kmeans, name, value)
    return request.param


def brute_force_labels(X, centers):
    """Nearest centre of each row, the lowest index on ties, from direct distances."""
    return ((X[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)


@pytest.mark.parametrize("seed", range(4))
def test_assign_step_follows_moving_centres_exactly_ties_included(assign_way, seed):
    # Small integers: every distance is exact, so ties are exact ties and the label
    # must be the lowest index among them.  The centres wander by whole steps (some
    # still, some jumping far, some landing on each other) over many calls.
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 12, size=(3000, 3)).astype(np.float64)
    centers = rng.integers(0, 12, size=(9, 3)).astype(np.float64)
    centers[8] = centers[7]  # two centres at the same place
    step = kmeans._assign_step(X, len(centers))
    n_ties = 0
    for _ in range(25):
        sq_dist = ((X[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
        n_ties += int(((sq_dist == sq_dist.min(axis=1, keepdims=True)).sum(axis=1) > 1).sum())
        np.testing.assert_array_equal(step.labels(centers.copy()), sq_dist.argmin(axis=1))
        centers = centers + rng.integers(-1, 2, size=centers.shape) * (rng.random((9, 1)) < 0.5)
        if rng.random() < 0.2:
            centers[rng.integers(9)] = rng.integers(0, 12, size=3)
    assert n_ties > 1000  # the case this test is about did occur


def test_assign_step_follows_moving_centres_on_real_valued_data(assign_way):
    rng = np.random.default_rng(7)
    X = blobs(rng, n_per_blob=500, n_blobs=6)
    centers = X[rng.choice(len(X), 12, replace=False)]
    step = kmeans._assign_step(X, len(centers))
    for scale in (5.0, 1.0, 0.1, 0.0, 2.0, 0.01):
        np.testing.assert_array_equal(step.labels(centers), brute_force_labels(X, centers))
        centers = centers + scale * rng.standard_normal(centers.shape)


@pytest.mark.parametrize("seed", range(3))
def test_lloyd_takes_the_steps_of_plain_lloyd(assign_way, seed):
    rng = np.random.default_rng(seed)
    X = blobs(rng, n_per_blob=300, n_blobs=8, spread=20.0)
    weights = rng.integers(1, 20, size=len(X)).astype(np.float64)
    start = X[rng.choice(len(X), 8, replace=False)]
    expected_centers, expected_labels, expected_history = plain_lloyd(X, weights, start)
    seen = []
    result = kmeans.kmeans(X, 8, sample_weight=weights, init=start, callback=seen.append)
    np.testing.assert_array_equal(result.labels, expected_labels)
    np.testing.assert_allclose(result.centers, expected_centers, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose([p.value * weights.sum() for p in seen], expected_history,
                               rtol=1e-10)
    assert result.n_iter == len(expected_history)


def test_a_fit_in_small_blocks_is_the_fit_in_one_block_with_bounds(monkeypatch):
    monkeypatch.setattr(kmeans, "_BOUNDS_MIN_CLUSTERS", 0)
    rng = np.random.default_rng(6)
    X = blobs(rng)
    start = X[rng.choice(len(X), 7, replace=False)]
    whole = kmeans.kmeans(X, 7, init=start)
    monkeypatch.setattr(kmeans, "_CHUNK_ELEMENTS", 50)
    blocked = kmeans.kmeans(X, 7, init=start)
    np.testing.assert_array_equal(blocked.labels, whole.labels)
    np.testing.assert_allclose(blocked.centers, whole.centers, rtol=1e-12, atol=1e-10)


def test_emptied_cluster_in_the_finish_is_relocated_and_the_end_is_consistent(assign_way):
    # One start centre far from everything: it is emptied at once, moved to a sample,
    # and the run ends where plain Lloyd stops, every cluster holding samples.
    rng = np.random.default_rng(9)
    X = blobs(rng, n_per_blob=200, n_blobs=4, spread=10.0)
    start = np.vstack([X[[0, 200, 400]], [[5000.0, 5000.0, 5000.0]]])
    result = kmeans.kmeans(X, 4, init=start)
    assert result.converged
    assert (np.bincount(result.labels, minlength=4) > 0).all()
    assert np.abs(result.centers).max() < 1000.0
    centers, labels, history = plain_lloyd(X, np.ones(len(X)), result.centers)
    np.testing.assert_array_equal(labels, result.labels)
    np.testing.assert_allclose(centers, result.centers, rtol=1e-10, atol=1e-9)
    assert len(history) == 1


# ---------------------------------------------------------------- coarse to fine

def test_coarse_histogram_keeps_the_weight_and_the_mean():
    rng = np.random.default_rng(2)
    X = blobs(rng, n_per_blob=2000)
    weights = rng.integers(0, 5, size=len(X)).astype(np.float64)
    means, cell_weights, cell_of_sample = kmeans.coarse_histogram(X, weights, 16.0)
    assert len(means) < len(X)
    assert cell_weights.sum() == pytest.approx(weights.sum(), rel=1e-12)
    np.testing.assert_allclose(cell_weights @ means, weights @ X, rtol=1e-10)
    np.testing.assert_allclose(np.bincount(cell_of_sample, weights=weights), cell_weights)
    # Each sample's cell mean lies within the cell's side of it.
    assert (np.abs(means[cell_of_sample] - X) <= 16.0).all()


def test_coarse_to_fine_ends_at_a_fixed_point_of_lloyd_on_the_exact_data(monkeypatch):
    sizes = []  # (samples, points the starts ran on)
    real = kmeans._coarse_data
    monkeypatch.setattr(kmeans, "_coarse_data", lambda X, *args: sizes.append(
        (len(X), len(real(X, *args)[0]))) or real(X, *args))
    pixels = sample_pixels(size=(640, 427))
    colours, counts, _ = codec.distinct_colours(pixels)
    X = colours.astype(np.float64)
    result = kmeans.kmeans(X, 6, sample_weight=counts, n_init=3, rng=np.random.default_rng(4))
    assert sizes[0][1] < sizes[0][0], "the starts should have run on a coarse histogram"
    assert result.converged
    centers, labels, history = plain_lloyd(X, counts.astype(np.float64), result.centers)
    np.testing.assert_array_equal(labels, result.labels)
    np.testing.assert_allclose(centers, result.centers, rtol=1e-10, atol=1e-9)
    assert len(history) == 1
