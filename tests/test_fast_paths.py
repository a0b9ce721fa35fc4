"""The fast paths give the same answers as the plain computations they replace.

* fitting the distinct colours weighted by their counts is fitting every pixel;
* distances computed block by block agree with distances computed at once;
* Lloyd pruned by distance bounds takes exactly the steps of plain Lloyd;
* both ways of finding the distinct colours (a table over the key space, or
  sorting the keys) agree with ``np.unique``;
* the grid summary the seedings run on keeps the total weight and the mean.
"""
import numpy as np
import pytest
from PIL import Image

import codec
import kmeans


def sample_pixels(size=(96, 64)):
    """The committed sample photo, shrunk: (n_pixels, 3) uint8 with many repeats."""
    with Image.open("samples/rocket.jpg") as image:
        small = image.convert("RGB").resize(size, Image.BILINEAR)
    return np.asarray(small).reshape(-1, 3)


def blobs(rng, n_per_blob=400, n_features=3, n_blobs=6, spread=12.0):
    """Gaussian blobs whose centres are uniform on 0..255, shape (n_samples, n_features)."""
    centres = rng.uniform(0, 255, size=(n_blobs, n_features))
    return np.concatenate([c + spread * rng.standard_normal((n_per_blob, n_features))
                           for c in centres])


def plain_lloyd(X, weights, centers, max_iter=300):
    """Textbook weighted Lloyd: every distance every iteration, stop when no label changes.

    Returns the centres, the labels and the objective seen at each assignment.
    """
    history = []
    sq_dist = ((X[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
    labels = sq_dist.argmin(axis=1)
    for _ in range(max_iter):
        history.append(float(weights @ sq_dist[np.arange(len(X)), labels]))
        mass = np.array([weights[labels == c].sum() for c in range(len(centers))])
        assert (mass > 0).all(), "the test data should not empty a cluster"
        centers = np.array([weights[labels == c] @ X[labels == c] / mass[c]
                            for c in range(len(centers))])
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


def test_default_seeding_on_distinct_colours_matches_every_pixel():
    # More than 20,000 samples: the seedings run on the grid summary, which is the same
    # for the pixels and for their distinct colours with counts.
    pixels = sample_pixels(size=(320, 213))
    colours, counts, inverse = codec.distinct_colours(pixels)
    assert len(colours) > kmeans._SUMMARY_MIN_SAMPLES
    on_colours = kmeans.kmeans(colours, 8, sample_weight=counts, n_init=3,
                               rng=np.random.default_rng(1))
    on_pixels = kmeans.kmeans(pixels, 8, n_init=3, rng=np.random.default_rng(1))
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


# ---------------------------------------------------------------- bounds

@pytest.mark.parametrize("seed", range(4))
def test_pruned_lloyd_takes_the_steps_of_plain_lloyd(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    X = blobs(rng, n_per_blob=300, n_blobs=8, spread=20.0)
    weights = rng.integers(1, 20, size=len(X)).astype(np.float64)
    start = X[rng.choice(len(X), 8, replace=False)]
    expected_centers, expected_labels, expected_history = plain_lloyd(X, weights, start)
    # Count the rows whose distances to every centre are computed.
    rows_seen = []
    full_kernel = kmeans._nearest_two

    def counting_kernel(rows, centers, x_sq, second=True):
        rows_seen.append(len(rows))
        return full_kernel(rows, centers, x_sq, second)

    monkeypatch.setattr(kmeans, "_nearest_two", counting_kernel)
    history = []
    result = kmeans.kmeans(X, 8, sample_weight=weights, init=start, tol=0.0,
                           callback=lambda i, objective: history.append(objective))
    np.testing.assert_array_equal(result.labels, expected_labels)
    np.testing.assert_allclose(result.centers, expected_centers, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(history, expected_history, rtol=1e-10)
    assert result.n_iter == len(expected_history)
    # The bounds did prune: far fewer rows than every sample at every iteration.
    sample_rows = sum(n for n in rows_seen if n != 8)  # 8 rows: centre-to-centre gaps
    assert sample_rows < 0.5 * len(X) * (result.n_iter + 1)


def test_pruned_lloyd_stays_exact_when_a_cluster_empties():
    # One start centre far from everything empties at once and is relocated; the
    # bounds are then rebuilt from scratch, and the run must match plain Lloyd after.
    rng = np.random.default_rng(9)
    X = blobs(rng, n_per_blob=200, n_blobs=4, spread=10.0)
    start = np.vstack([X[[0, 200, 400]], [[5000.0, 5000.0, 5000.0]]])
    result = kmeans.kmeans(X, 4, init=start, tol=0.0)
    assert (np.bincount(result.labels, minlength=4) > 0).all()
    # Its end is a fixed point of plain Lloyd.
    centers, labels, history = plain_lloyd(X, np.ones(len(X)), result.centers)
    np.testing.assert_array_equal(labels, result.labels)
    np.testing.assert_allclose(centers, result.centers, rtol=1e-10, atol=1e-9)
    assert len(history) == 1


def test_duplicated_centres_keep_the_bounds_safe():
    # Two identical start centres: the gap between them is zero, so no sample may
    # skip a check on the strength of it.
    rng = np.random.default_rng(3)
    X = blobs(rng, n_per_blob=100, n_blobs=3)
    start = np.vstack([X[[0, 0]], X[[100, 200]]])
    result = kmeans.kmeans(X, 4, init=start, tol=0.0)
    sq_dist = ((X[:, None, :] - result.centers[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(result.labels, sq_dist.argmin(axis=1))


# ---------------------------------------------------------------- summary

def test_grid_summary_keeps_the_weight_and_the_mean():
    rng = np.random.default_rng(2)
    X = np.repeat(blobs(rng, n_per_blob=5000), 2, axis=0)  # enough repeats to shrink
    weights = rng.integers(1, 5, size=len(X)).astype(np.float64)
    points, mass = kmeans._grid_summary(X, weights)
    assert len(points) * kmeans._SUMMARY_SHRINK <= len(X)
    assert mass.sum() == pytest.approx(weights.sum(), rel=1e-12)
    np.testing.assert_allclose(mass @ points, weights @ X, rtol=1e-10)
    # Each point is a mean of samples, so it lies within their range (up to rounding).
    assert (points.min(axis=0) >= X.min(axis=0) - 1e-9).all()
    assert (points.max(axis=0) <= X.max(axis=0) + 1e-9).all()


# ---------------------------------------------------------------- plain Lloyd, polish

@pytest.mark.parametrize("seed", range(3))
def test_lloyd_without_bounds_takes_the_steps_of_plain_lloyd(seed):
    # The summary's seedings run without bounds; the steps must be Lloyd's all the same.
    rng = np.random.default_rng(seed)
    X = blobs(rng, n_per_blob=150, n_blobs=6, spread=20.0)
    weights = rng.integers(1, 20, size=len(X)).astype(np.float64)
    start = X[rng.choice(len(X), 6, replace=False)]
    expected_centers, expected_labels, expected_history = plain_lloyd(X, weights, start)
    result = kmeans._lloyd_plain(X, weights, start, 300, 0.0, kmeans._row_norms(X))
    np.testing.assert_array_equal(result.labels, expected_labels)
    np.testing.assert_allclose(result.centers, expected_centers, rtol=1e-10, atol=1e-9)
    assert result.n_iter == len(expected_history)
    assert result.converged
    direct = float(weights @ ((X - result.centers[result.labels]) ** 2).sum(axis=1))
    assert result.inertia == pytest.approx(direct, rel=1e-9)


def test_objective_from_cluster_totals_is_the_sum_over_samples():
    # sum w ||x - c||^2 = sum w ||x||^2 - sum_j (2 c_j . s_j - m_j ||c_j||^2), for any centres.
    rng = np.random.default_rng(4)
    X = rng.uniform(0, 255, size=(500, 3))
    weights = rng.integers(0, 6, size=500).astype(np.float64)
    labels = rng.integers(0, 7, size=500)
    centers = rng.uniform(0, 255, size=(7, 3))
    totals = kmeans._ClusterTotals(X, weights, labels, 7)
    direct = float(weights @ ((X - centers[labels]) ** 2).sum(axis=1))
    assert totals.objective(centers, float(weights @ (X ** 2).sum(axis=1))) == \
        pytest.approx(direct, rel=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_extrapolated_lloyd_ends_at_a_fixed_point_of_plain_lloyd(seed):
    # Whatever steps it took, it may stop with tol = 0 only where plain Lloyd would:
    # every sample on its nearest centre and every centre the mean of its samples.
    rng = np.random.default_rng(seed)
    X = blobs(rng, n_per_blob=300, n_blobs=10, spread=25.0)
    weights = rng.integers(1, 20, size=len(X)).astype(np.float64)
    start = X[rng.choice(len(X), 8, replace=False)]
    result = kmeans._lloyd_extrapolated(X, weights, start, 1000, 0.0, kmeans._row_norms(X))
    assert result.converged
    centers, labels, history = plain_lloyd(X, weights, result.centers)
    np.testing.assert_array_equal(labels, result.labels)
    np.testing.assert_allclose(centers, result.centers, rtol=1e-10, atol=1e-9)
    assert len(history) == 1
    # ... and no higher than where it started.
    start_objective = float(weights @ ((X[:, None] - start[None]) ** 2).sum(axis=2).min(axis=1))
    assert result.inertia <= start_objective


def test_polish_runs_the_best_start_on_to_a_fixed_point():
    # Over 20,000 samples (the summary path); a loose tol stops the starts early, and
    # the polish must carry the best on to where no label changes, lowering the objective.
    rng = np.random.default_rng(12)
    X = blobs(rng, n_per_blob=3000, n_blobs=12, spread=30.0)
    assert len(X) > kmeans._SUMMARY_MIN_SAMPLES
    rough = kmeans.kmeans(X, 9, n_init=3, tol=1e-2, rng=np.random.default_rng(0))
    polished = kmeans.kmeans(X, 9, n_init=3, tol=1e-2, polish=True,
                             rng=np.random.default_rng(0))
    assert len(plain_lloyd(X, np.ones(len(X)), rough.centers)[2]) > 1  # not a fixed point
    assert polished.converged
    assert polished.inertia < rough.inertia
    centers, labels, history = plain_lloyd(X, np.ones(len(X)), polished.centers)
    np.testing.assert_array_equal(labels, polished.labels)
    np.testing.assert_allclose(centers, polished.centers, rtol=1e-10, atol=1e-9)
    assert len(history) == 1


@pytest.mark.parametrize("n_init", [1, 4])
def test_polish_without_the_summary_ends_at_a_fixed_point(n_init):
    # Up to 20,000 samples the starts run on the data itself, screened when there are
    # several; the polished result must still be where plain Lloyd stops.
    rng = np.random.default_rng(13)
    X = blobs(rng, n_per_blob=400, n_blobs=10, spread=30.0)
    weights = rng.integers(1, 9, size=len(X)).astype(np.float64)
    rough = kmeans.kmeans(X, 7, sample_weight=weights, n_init=n_init, tol=1e-2,
                          rng=np.random.default_rng(0))
    polished = kmeans.kmeans(X, 7, sample_weight=weights, n_init=n_init, tol=1e-2,
                             polish=True, rng=np.random.default_rng(0))
    assert len(plain_lloyd(X, weights, rough.centers)[2]) > 1  # not a fixed point
    assert polished.converged
    assert polished.inertia < rough.inertia
    centers, labels, history = plain_lloyd(X, weights, polished.centers)
    np.testing.assert_array_equal(labels, polished.labels)
    np.testing.assert_allclose(centers, polished.centers, rtol=1e-10, atol=1e-9)
    assert len(history) == 1


def test_polish_of_an_explicit_start_ends_at_a_fixed_point():
    rng = np.random.default_rng(14)
    X = blobs(rng, n_per_blob=300, n_blobs=8, spread=30.0)
    start = X[rng.choice(len(X), 6, replace=False)]
    rough = kmeans.kmeans(X, 6, init=start, tol=1e-2)
    assert len(plain_lloyd(X, np.ones(len(X)), rough.centers)[2]) > 1  # not a fixed point
    polished = kmeans.kmeans(X, 6, init=start, tol=1e-2, polish=True)
    assert polished.inertia < rough.inertia
    expected_centers, expected_labels, _ = plain_lloyd(X, np.ones(len(X)), polished.centers)
    np.testing.assert_array_equal(expected_labels, polished.labels)
    np.testing.assert_allclose(expected_centers, polished.centers, rtol=1e-10, atol=1e-9)
