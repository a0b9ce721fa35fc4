"""kmeans.py's speed-ups give the plain results.

* fitting the distinct colours weighted by their counts is fitting every pixel;
* the bounded assign step (Hamerly) gives the labels of the every-distance one, ties
  included, and Lloyd with either, over one block of rows or several, takes exactly the
  steps of plain Lloyd;
* the coarse histogram the starts run on keeps the total weight and the mean, and the
  coarse-to-fine result is a fixed point of Lloyd on the exact data.
"""
import os

import numpy as np
import pytest
from PIL import Image

import codec
import kmeans

SAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "samples", "rocket.jpg")

# The two assign steps, each made for X: every distance, and Hamerly's bounds.
ASSIGN_STEPS = {"every distance": kmeans._EveryDistance, "bounds": kmeans._BoundedDistance}


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


def brute_force_sq_dist(X, centers):
    """The (n_samples, n_clusters) squared distances, computed directly."""
    return ((X[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)


def plain_lloyd(X, weights, centers, max_iter=300):
    """Textbook weighted Lloyd: every distance every iteration, stop when no label changes.

    Returns the centres, the labels and, for each iteration, the objective of the
    labels with their means (after the update step).
    """
    history = []
    labels = brute_force_sq_dist(X, centers).argmin(axis=1)
    for _ in range(max_iter):
        mass = np.bincount(labels, weights=weights, minlength=len(centers))
        assert (mass > 0).all(), "the test data should not empty a cluster"
        centers = np.stack([np.bincount(labels, weights=weights * x, minlength=len(centers))
                            for x in X.T], axis=1) / mass[:, None]
        history.append(float(weights @ ((X - centers[labels]) ** 2).sum(axis=1)))
        new_labels = brute_force_sq_dist(X, centers).argmin(axis=1)
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
    assert len(np.unique(start, axis=0)) == len(start), "the test needs distinct starts"
    on_colours = kmeans.kmeans(colours, 6, sample_weight=counts, init=start, tol=0.0)
    on_pixels = kmeans.kmeans(pixels, 6, init=start, tol=0.0)
    np.testing.assert_allclose(on_colours.centers, on_pixels.centers, rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(on_colours.labels[inverse], on_pixels.labels)
    assert on_colours.inertia == pytest.approx(on_pixels.inertia, rel=1e-10)
    assert on_colours.n_iter == on_pixels.n_iter


def test_default_seeding_on_distinct_colours_matches_every_pixel():
    # The start runs on the coarse histogram, which is the same for the pixels and for
    # their distinct colours with counts; the finish is the same Lloyd on either.
    pixels = sample_pixels(size=(640, 427))
    colours, counts, inverse = codec.distinct_colours(pixels)
    on_colours = kmeans.kmeans(colours, 8, sample_weight=counts, n_init=1,
                               rng=np.random.default_rng(1))
    on_pixels = kmeans.kmeans(pixels, 8, n_init=1, rng=np.random.default_rng(1))
    assert on_colours.converged and on_pixels.converged
    np.testing.assert_allclose(on_colours.centers, on_pixels.centers, rtol=1e-9, atol=1e-8)
    np.testing.assert_array_equal(on_colours.labels[inverse], on_pixels.labels)
    assert on_colours.inertia == pytest.approx(on_pixels.inertia, rel=1e-9)


# ---------------------------------------------------------------- the assign step

@pytest.mark.parametrize("way", sorted(ASSIGN_STEPS))
@pytest.mark.parametrize("seed", range(4))
def test_assign_step_follows_moving_centres_exactly_ties_included(way, seed):
    # Small integers: every distance is exact, so ties are exact ties and the label
    # must be the lowest index among them.  The centres wander by whole steps (some
    # still, some jumping far, some landing on each other) over many calls.
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 12, size=(3000, 3)).astype(np.float64)
    centers = rng.integers(0, 12, size=(9, 3)).astype(np.float64)
    centers[8] = centers[7]  # two centres at the same place
    step = ASSIGN_STEPS[way](X)
    n_ties = 0
    for _ in range(25):
        sq_dist = brute_force_sq_dist(X, centers)
        n_ties += int(((sq_dist == sq_dist.min(axis=1, keepdims=True)).sum(axis=1) > 1).sum())
        np.testing.assert_array_equal(step.labels(centers.copy()), sq_dist.argmin(axis=1))
        centers = centers + rng.integers(-1, 2, size=centers.shape) * (rng.random((9, 1)) < 0.5)
        if rng.random() < 0.2:
            centers[rng.integers(9)] = rng.integers(0, 12, size=3)
    assert n_ties > 1000  # the case this test is about did occur


@pytest.mark.parametrize("way", sorted(ASSIGN_STEPS))
def test_assign_step_follows_moving_centres_on_real_valued_data(way):
    rng = np.random.default_rng(7)
    X = blobs(rng, n_per_blob=500, n_blobs=6)
    centers = X[rng.choice(len(X), 12, replace=False)]
    step = ASSIGN_STEPS[way](X)
    for scale in (5.0, 1.0, 0.1, 0.0, 2.0, 0.01):
        np.testing.assert_array_equal(step.labels(centers),
                                      brute_force_sq_dist(X, centers).argmin(axis=1))
        centers = centers + scale * rng.standard_normal(centers.shape)


# Every distance at k=8; Hamerly's bounds from k=128 on; 40,000 rows at k=8 span three
# blocks of rows and 2,400 rows at k=130 forty.
@pytest.mark.parametrize("n_clusters, n_per_blob", [(8, 300), (8, 5000), (130, 300)])
def test_lloyd_takes_the_steps_of_plain_lloyd(n_clusters, n_per_blob):
    rng = np.random.default_rng(n_clusters + n_per_blob)
    X = blobs(rng, n_per_blob=n_per_blob, n_blobs=8, spread=20.0)
    weights = rng.integers(1, 20, size=len(X)).astype(np.float64)
    start = X[rng.choice(len(X), n_clusters, replace=False)]
    expected_centers, expected_labels, expected_history = plain_lloyd(X, weights, start)
    seen = []
    result = kmeans.kmeans(X, n_clusters, sample_weight=weights, init=start,
                           callback=seen.append)
    np.testing.assert_array_equal(result.labels, expected_labels)
    np.testing.assert_allclose(result.centers, expected_centers, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose([p.value * weights.sum() for p in seen], expected_history,
                               rtol=1e-10)
    assert result.n_iter == len(expected_history)


def test_emptied_cluster_in_the_finish_is_relocated_and_the_end_is_consistent():
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


def test_coarse_to_fine_ends_at_a_fixed_point_of_lloyd_on_the_exact_data():
    pixels = sample_pixels(size=(640, 427))
    colours, counts, _ = codec.distinct_colours(pixels)
    X = colours.astype(np.float64)
    result = kmeans.kmeans(X, 6, sample_weight=counts, n_init=3, rng=np.random.default_rng(4))
    assert result.converged
    centers, labels, history = plain_lloyd(X, counts.astype(np.float64), result.centers)
    np.testing.assert_array_equal(labels, result.labels)
    np.testing.assert_allclose(centers, result.centers, rtol=1e-10, atol=1e-9)
    assert len(history) == 1
