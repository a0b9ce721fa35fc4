"""Tests of kmeans.py: hand-worked cases, the properties Lloyd's algorithm must hold, and
its speed-ups giving the plain results (fitting distinct colours weighted by their counts is
fitting every pixel; Hamerly's bounded assign step gives the every-distance labels, ties
included; the coarse histogram keeps the weight and the mean, and coarse-to-fine ends at a
fixed point of Lloyd on the exact data)."""
import numpy as np
import pytest
from PIL import Image

import kmeans
from conftest import ROCKET

# The two assign steps, each made for X: every distance, and Hamerly's bounds.
ASSIGN_STEPS = {"every distance": kmeans._EveryDistance, "bounds": kmeans._BoundedDistance}


def column(values):
    """1-D values as a (n_samples, 1) float array."""
    return np.asarray(values, dtype=np.float64).reshape(-1, 1)


def blobs(rng, n_per_blob=200, centres=((0, 0, 0), (40, 10, 0), (10, 50, 30), (60, 60, 60)),
          spread=6.0):
    """Gaussian blobs around ``centres`` (or that many uniform on 0..255 in RGB).

    Shape (n_blobs * n_per_blob, n_features).
    """
    if isinstance(centres, int):
        centres = rng.uniform(0, 255, size=(centres, 3))
    centres = np.asarray(centres, dtype=np.float64)
    return np.concatenate([c + spread * rng.standard_normal((n_per_blob, centres.shape[1]))
                           for c in centres])


def brute_force_sq_dist(X, centers):
    """The full (n_samples, n_clusters) matrix of squared distances, computed directly."""
    return ((X[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)


# ---------------------------------------------------------------- hand-worked cases

@pytest.mark.parametrize("init", ["k-means++", "random"])
@pytest.mark.parametrize("seed", range(5))
def test_two_obvious_groups_in_1d(init, seed):
    # X = 0 1 2 | 10 11 12, k = 2.  Whatever two distinct points the seeding picks, Lloyd
    # ends at the split between 2 and 10:
    #   * one seed in each group: the first assignment is already the split;
    #   * both seeds in the left group, e.g. (0, 1): 0 -> c0 and 1, 2, 10, 11, 12 -> c1,
    #     so c1 = 36/5 = 7.2, then 1 and 2 are nearer 0 than 7.2 and the split follows;
    #     (0, 2) and (1, 2) give c1 = 35/4 = 8.75 and the same split (mirror for the right).
    # Centres 1 and 11; objective = (1 + 0 + 1) * 2 = 4.
    X = column([0, 1, 2, 10, 11, 12])
    result = kmeans.kmeans(X, 2, init=init, rng=np.random.default_rng(seed))
    order = np.argsort(result.centers[:, 0])
    np.testing.assert_allclose(result.centers[order, 0], [1.0, 11.0], rtol=0, atol=1e-12)
    relabelled = np.argsort(order)[result.labels]  # label 0 = the left group
    np.testing.assert_array_equal(relabelled, [0, 0, 0, 1, 1, 1])
    assert result.inertia == pytest.approx(4.0, rel=1e-12)
    assert result.converged


def test_hand_traced_iterations_from_explicit_start():
    # X = 0, 2, 4, 11 from centres (0, 2), traced by hand (objective per sample, / 4):
    # assign: labels 0 1 1 1.
    # it 1: update c = (0, 17/3); objective (11/3)^2 + (5/3)^2 + (16/3)^2 = 402/9;
    #       assign: 2 is nearer 0 (2 < 11/3), 4 nearer 17/3: labels 0 0 1 1.
    # it 2: update c = (1, 7.5); objective 1 + 1 + 3.5^2 + 3.5^2 = 26.5;
    #       assign: 4 is nearer 1 (3 < 3.5): labels 0 0 0 1.
    # it 3: update c = (2, 11); objective 4 + 0 + 4 + 0 = 8; assign: no label changes, stop.
    X = column([0, 2, 4, 11])
    start = column([0, 2])
    seen = []
    result = kmeans.kmeans(X, 2, init=start, callback=seen.append)
    np.testing.assert_array_equal(start, column([0, 2]))  # the caller's array is left alone
    np.testing.assert_allclose(result.centers[:, 0], [2.0, 11.0], rtol=1e-12)
    np.testing.assert_array_equal(result.labels, [0, 0, 0, 1])
    assert result.inertia == pytest.approx(8.0, rel=1e-12)
    assert [p.value for p in seen] == pytest.approx([402 / 36, 26.5 / 4, 8 / 4], rel=1e-12)
    assert [(p.stage, p.iteration) for p in seen] == [("exact", 1), ("exact", 2), ("exact", 3)]
    assert result.converged and result.n_iter == 3 and result.n_init == 1


def test_explicit_start_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"\(3, 1\)"):
        kmeans.kmeans(column([0, 2, 4, 11]), 2, init=column([0, 2, 4]))


def test_one_cluster_is_the_weighted_mean():
    # k = 1: the centre is the weighted mean (1*0 + 3*4) / 4 = 3 and the objective is
    # 1 * 3^2 + 3 * 1^2 = 12.
    result = kmeans.kmeans(column([0, 4]), 1, sample_weight=[1, 3])
    np.testing.assert_allclose(result.centers, [[3.0]], rtol=1e-12)
    assert result.inertia == pytest.approx(12.0, rel=1e-12)


# ---------------------------------------------------------------- properties

def finishes(seen):
    """The objective per unit of weight each finished start (stage "exact") ended at."""
    return {p.run: p.value for p in seen if p.stage == "exact"}


@pytest.mark.parametrize("init", ["k-means++", "random"])
@pytest.mark.parametrize("seed", range(3))
def test_objective_never_rises(init, seed):
    rng = np.random.default_rng(seed)
    X = blobs(rng)
    weights = rng.integers(1, 6, size=len(X))
    seen = []
    result = kmeans.kmeans(X, 8, sample_weight=weights, init=init, tol=0.0, n_init=3,
                           rng=np.random.default_rng(seed), callback=seen.append)
    runs = {(p.stage, p.run) for p in seen if p.stage != "seeding"}
    assert {run for stage, run in runs if stage == "coarse"} == {1, 2, 3}
    assert {stage for stage, _ in runs} == {"coarse", "exact"}
    for stage, run in runs:
        values = [p.value for p in seen if (p.stage, p.run) == (stage, run)]
        assert np.diff(values).max(initial=0.0) <= 1e-12 * values[0], f"the objective rose: {values}"
    # The finished start (the lowest on the grid) is the one returned.
    assert result.inertia / weights.sum() == pytest.approx(min(finishes(seen).values()), rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_kmeans_plusplus_returns_distinct_data_points(seed):
    rng = np.random.default_rng(seed)
    # Many duplicates: 4 x 4 = 16 distinct points repeated over 300 rows.
    X = rng.integers(0, 4, size=(300, 2)).astype(np.float64)
    n_distinct = len(np.unique(X, axis=0))
    for k in (3, n_distinct):
        centers, indices = kmeans.kmeans_plusplus(X, k, rng=np.random.default_rng(seed))
        assert centers.shape == (k, 2)
        np.testing.assert_array_equal(centers, X[indices])
        # every centre is a row of X, and no two are the same point
        assert all((X == c).all(axis=1).any() for c in centers)
        assert len(np.unique(centers, axis=0)) == k


@pytest.mark.parametrize("seed", range(8))
def test_kmeans_plusplus_keeps_the_candidate_that_lowers_the_potential_most(seed):
    # The first centre is 0 (it carries almost all the weight).  The second is
    # drawn among 10, 11, 12 in proportion to 100 : 121 : 144; the potentials they
    # leave are 0+1+4 = 5, 1+0+1 = 2 and 4+1+0 = 5, so greedy k-means++ must keep
    # 11.  With 50 candidates, 11 is missed with probability 0.67**50 < 1e-8;
    # a seeding that kept the first candidate would pick 10 or 12 two times in three.
    X = np.array([[0.0], [10.0], [11.0], [12.0]])
    weights = np.array([1e9, 1.0, 1.0, 1.0])
    centers, indices = kmeans.kmeans_plusplus(X, 2, sample_weight=weights, n_local_trials=50,
                                              rng=np.random.default_rng(seed))
    assert indices.tolist() == [0, 2]
    assert centers.ravel().tolist() == [0.0, 11.0]


def test_kmeans_plusplus_never_picks_a_point_of_zero_weight():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(100, 2))
    weights = np.zeros(100)
    weights[::10] = 1.0  # only 10 points carry weight
    for seed in range(5):
        _, indices = kmeans.kmeans_plusplus(X, 10, sample_weight=weights,
                                            rng=np.random.default_rng(seed))
        assert (weights[indices] > 0).all()
        assert len(set(indices.tolist())) == 10


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_fitted_centres_are_a_fixed_point(init):
    rng = np.random.default_rng(11)
    X = blobs(rng, n_per_blob=150)
    weights = rng.integers(1, 9, size=len(X)).astype(np.float64)
    k = 6
    # tol=0: the run may stop only when the labels stop changing
    result = kmeans.kmeans(X, k, sample_weight=weights, init=init, tol=0.0, max_iter=500,
                           rng=np.random.default_rng(5))
    assert result.converged
    # One more Lloyd update, done by hand: the weighted mean of each cluster's points.
    for c in range(k):
        members = result.labels == c
        assert members.any(), f"cluster {c} is empty"
        mean = weights[members] @ X[members] / weights[members].sum()
        np.testing.assert_allclose(result.centers[c], mean, rtol=1e-10, atol=1e-10)
    # ... and one more assignment gives the same labels.
    np.testing.assert_array_equal(brute_force_sq_dist(X, result.centers).argmin(axis=1),
                                  result.labels)
    d2 = brute_force_sq_dist(X, result.centers).min(axis=1)
    assert result.inertia == pytest.approx(weights @ d2, rel=1e-10)


def test_empty_cluster_is_relocated_to_the_farthest_point():
    # X = 0 1 | 10 11 | 20 21 from centres (0, 1, 1000): the centre at 1000 gets no point.
    # it 1: 0 -> c0; 1, 10, 11, 20, 21 -> c1 (all nearer 1 than 1000); c2 is empty and
    #       moves to the point farthest from its centre: 21 (20^2 from c1 = 1, the largest).
    #       c0 = 0, c1 = (1 + 10 + 11 + 20 + 21) / 5 = 12.6, c2 = 21.
    # it 2: 1 -> c0 (1 < 11.6); 10, 11 -> c1; 20 -> c2 (1 < 7.4): labels 0 0 1 1 2 2,
    #       centres 0.5, 10.5, 20.5, which keep those labels.  Objective 6 * 0.5^2 = 1.5.
    # Without the relocation the centre at 1000 stays empty and the objective ends far
    # above 1.5.
    X = column([0, 1, 10, 11, 20, 21])
    result = kmeans.kmeans(X, 3, init=column([0, 1, 1000]))
    np.testing.assert_allclose(result.centers[:, 0], [0.5, 10.5, 20.5], rtol=1e-12)
    np.testing.assert_array_equal(result.labels, [0, 0, 1, 1, 2, 2])
    assert result.inertia == pytest.approx(1.5, rel=1e-12)


def test_no_cluster_is_left_empty_or_non_finite():
    # Three far groups and k = 5 from a start where four centres sit far away from every
    # point: each relocation must land on a point, so every cluster ends with members.
    rng = np.random.default_rng(2)
    X = blobs(rng, n_per_blob=40, centres=((0, 0), (100, 0), (0, 100)))
    start = np.array([[0.0, 0.0], [1e4, 1e4], [1e4, 1.1e4], [1.2e4, 1e4], [1.3e4, 1.3e4]])
    result = kmeans.kmeans(X, 5, init=start)
    assert np.isfinite(result.centers).all()
    assert (np.bincount(result.labels, minlength=5) > 0).all()


def test_integer_weights_act_like_duplicated_points():
    rng = np.random.default_rng(4)
    X = blobs(rng, n_per_blob=30)
    weights = rng.integers(0, 5, size=len(X))  # zero weight = the point is absent
    expanded = np.repeat(X, weights, axis=0)
    start = X[np.flatnonzero(weights)[:5]]
    weighted = kmeans.kmeans(X, 5, sample_weight=weights, init=start, tol=0.0)
    copied = kmeans.kmeans(expanded, 5, init=start, tol=0.0)
    np.testing.assert_allclose(weighted.centers, copied.centers, rtol=1e-10, atol=1e-10)
    assert weighted.inertia == pytest.approx(copied.inertia, rel=1e-10)
    np.testing.assert_array_equal(np.repeat(weighted.labels, weights), copied.labels)


def test_integer_weights_act_like_duplicated_points_with_default_seeding():
    # Three tight groups 100 apart: the optimum for k = 3 is the three groups, with
    # centres at the (weighted) group means, and both runs reach it from any seeding.
    rng = np.random.default_rng(8)
    X = blobs(rng, n_per_blob=20, centres=((0, 0), (100, 0), (0, 100)), spread=1.0)
    weights = rng.integers(1, 5, size=len(X))
    expanded = np.repeat(X, weights, axis=0)
    weighted = kmeans.kmeans(X, 3, sample_weight=weights, rng=np.random.default_rng(0))
    copied = kmeans.kmeans(expanded, 3, rng=np.random.default_rng(0))
    expected = np.array([weights[i:i + 20] @ X[i:i + 20] / weights[i:i + 20].sum()
                         for i in (0, 20, 40)])
    for result in (weighted, copied):
        order = np.lexsort(result.centers.T[::-1])
        np.testing.assert_allclose(result.centers[order], expected[np.lexsort(expected.T[::-1])],
                                   rtol=1e-10, atol=1e-10)
    assert weighted.inertia == pytest.approx(copied.inertia, rel=1e-10)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_same_seed_same_result(init):
    X = blobs(np.random.default_rng(6))
    weights = np.random.default_rng(7).integers(1, 4, size=len(X))
    runs = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)  # the global state must play no part
        runs.append(kmeans.kmeans(X, 7, sample_weight=weights, init=init, n_init=3,
                                  rng=np.random.default_rng(42)))
    first, second = runs
    np.testing.assert_array_equal(first.centers, second.centers)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.inertia == second.inertia
    np.random.seed(3)
    again = kmeans.kmeans_plusplus(X, 7, rng=np.random.default_rng(42))[1]
    np.random.seed(4)
    np.testing.assert_array_equal(again, kmeans.kmeans_plusplus(X, 7, rng=np.random.default_rng(42))[1])


def test_default_rng_is_deterministic():
    X = blobs(np.random.default_rng(9))
    np.random.seed(1)
    first = kmeans.kmeans(X, 5)
    np.random.seed(2)
    second = kmeans.kmeans(X, 5)
    np.testing.assert_array_equal(first.centers, second.centers)
    np.testing.assert_array_equal(first.labels, second.labels)


def test_different_seeds_give_different_seedings():
    # Seeding that ignored the generator would give the same centres every time.
    X = np.random.default_rng(10).normal(size=(500, 3))
    seedings = {tuple(kmeans.kmeans_plusplus(X, 4, rng=np.random.default_rng(s))[1])
                for s in range(6)}
    assert len(seedings) > 1


# ---------------------------------------------------------------- assign

@pytest.mark.parametrize("n_samples, n_clusters", [
    (2 * ((1 << 18) // 7) + 123, 7),   # three blocks of rows, the last one partial
    (1000, 700),                        # many small blocks
    (5, 1),
])
def test_assign_agrees_with_brute_force(n_samples, n_clusters):
    rng = np.random.default_rng(n_clusters)
    X = rng.uniform(0, 255, size=(n_samples, 3))
    centers = rng.uniform(0, 255, size=(n_clusters, 3))
    labels, min_sq_dist = kmeans.assign(X, centers)
    full = brute_force_sq_dist(X, centers)
    best = full.min(axis=1)
    scale = (X ** 2).sum(axis=1).max() + (centers ** 2).sum(axis=1).max()
    np.testing.assert_allclose(min_sq_dist, best, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(full[np.arange(n_samples), labels], best, rtol=0, atol=1e-9 * scale)
    # Where the nearest centre is clearly nearest, the label is exactly it.
    second = np.partition(full, 1, axis=1)[:, 1] if n_clusters > 1 else np.inf
    clear = second - best > 1e-6 * scale
    np.testing.assert_array_equal(labels[clear], full.argmin(axis=1)[clear])
    assert labels.shape == (n_samples,) and min_sq_dist.shape == (n_samples,)


def test_assign_breaks_ties_towards_the_lowest_index():
    # 1 is exactly halfway between centres 0 and 2 (and the arithmetic is exact here).
    labels, d2 = kmeans.assign(column([1, 3]), column([0, 2, 4]))
    np.testing.assert_array_equal(labels, [0, 1])
    np.testing.assert_array_equal(d2, [1.0, 1.0])


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, match", [
    (dict(n_clusters=0), r"n_clusters=0 "),
    (dict(n_clusters=7), r"n_clusters=7 .*\(6\)"),
    (dict(n_clusters=2.5), r"n_clusters=2\.5 "),
    (dict(init="kmeans++"), r"init='kmeans\+\+' is not one of \['k-means\+\+', 'random'\]"),
    (dict(init=column([0, 1, 2])), r"init has shape \(3, 1\), expected \(2, 1\)"),
    (dict(init=column([0, np.nan])), r"init contains NaN"),
    (dict(sample_weight=[1, 1, -2, 1, 1, 1]), r"-2\.0 at row 2"),
    (dict(sample_weight=[1, 1, 1, np.inf, 1, 1]), r"inf at row 3"),
    (dict(sample_weight=[1, 1]), r"sample_weight has shape \(2,\), expected \(6,\)"),
    (dict(n_init=0), r"n_init=0 "),
    (dict(n_init="many"), r"n_init='many' "),
    (dict(max_iter=0), r"max_iter=0 "),
    (dict(tol=-1.0), r"tol=-1\.0 "),
])
def test_bad_arguments_are_refused_with_the_bad_value(kwargs, match):
    args = dict(n_clusters=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        kmeans.kmeans(column([0, 1, 2, 10, 11, 12]), args.pop("n_clusters"), **args)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_data_is_refused(bad):
    X = column([0, 1, 2, 10, 11, 12])
    X[4, 0] = bad
    with pytest.raises(ValueError, match=rf"X contains {bad} .* at row 4"):
        kmeans.kmeans(X, 2)


def test_all_weights_zero_is_refused():
    with pytest.raises(ValueError, match=r"positive weight \(0\)"):
        kmeans.kmeans(column([0, 1]), 1, sample_weight=[0, 0])


# ---------------------------------------------------------------- progress and starts

def test_progress_goes_seeding_coarse_exact_with_runs_counted_as_n_init():
    rng = np.random.default_rng(1)
    X = blobs(rng, n_per_blob=300)
    seen = []
    result = kmeans.kmeans(X, 5, n_init=4, rng=np.random.default_rng(0), callback=seen.append)
    assert all(isinstance(p, kmeans.Progress) for p in seen)
    # One seeding then one coarse run per start, in order; then the few best starts are
    # finished exactly, each once, and the lowest kept.  A stage starts where the stage
    # or run changes or the iterations count again from 1.
    starts = [(p.stage, p.run) for i, p in enumerate(seen)
              if i == 0 or (seen[i - 1].stage, seen[i - 1].run) != (p.stage, p.run)
              or p.iteration <= seen[i - 1].iteration]
    assert starts[:8] == [(stage, run) for run in range(1, 5) for stage in ("seeding", "coarse")]
    finished = starts[8:]
    assert 1 <= len(finished) < 4 and {stage for stage, _ in finished} == {"exact"}
    assert len({run for _, run in finished}) == len(finished)
    assert result.n_init == 4 and {p.n_runs for p in seen} == {4}
    for p in seen:
        if p.stage == "seeding":
            assert 1 <= p.iteration < 5 and p.max_iter == 5 and np.isnan(p.value)
        else:
            assert 1 <= p.iteration <= p.max_iter and p.value > 0
    best_run = min(finishes(seen), key=finishes(seen).get)
    assert [p.iteration for p in seen if p.stage == "exact" and p.run == best_run][-1] \
        == result.n_iter


def test_auto_n_init_tries_several_starts_when_cheap():
    X = blobs(np.random.default_rng(3))
    assert kmeans.kmeans(X, 4).n_init > 1
    assert kmeans.kmeans(X, 4, init=X[:4]).n_init == 1


def sample_pixels(size=(96, 64)):
    """The committed sample photo, shrunk: (n_pixels, 3) uint8 with many repeats."""
    with Image.open(ROCKET) as image:
        small = image.convert("RGB").resize(size, Image.BILINEAR)
    return np.asarray(small).reshape(-1, 3)


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


# ---------------------------------------------------------------- speed-ups: colour counts

def test_fitting_distinct_colours_with_counts_is_fitting_every_pixel():
    pixels = sample_pixels()
    colours, inverse, counts = np.unique(pixels, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
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
    colours, inverse, counts = np.unique(pixels, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    on_colours = kmeans.kmeans(colours, 8, sample_weight=counts, n_init=1,
                               rng=np.random.default_rng(1))
    on_pixels = kmeans.kmeans(pixels, 8, n_init=1, rng=np.random.default_rng(1))
    assert on_colours.converged and on_pixels.converged
    np.testing.assert_allclose(on_colours.centers, on_pixels.centers, rtol=1e-9, atol=1e-8)
    np.testing.assert_array_equal(on_colours.labels[inverse], on_pixels.labels)
    assert on_colours.inertia == pytest.approx(on_pixels.inertia, rel=1e-9)


# ---------------------------------------------------------------- speed-ups: bounded assign

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
    X = blobs(rng, 500, 6, 12.0)
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
    X = blobs(rng, n_per_blob, 8, 20.0)
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
    X = blobs(rng, 200, 4, 10.0)
    start = np.vstack([X[[0, 200, 400]], [[5000.0, 5000.0, 5000.0]]])
    result = kmeans.kmeans(X, 4, init=start)
    assert result.converged
    assert (np.bincount(result.labels, minlength=4) > 0).all()
    assert np.abs(result.centers).max() < 1000.0
    centers, labels, history = plain_lloyd(X, np.ones(len(X)), result.centers)
    np.testing.assert_array_equal(labels, result.labels)
    np.testing.assert_allclose(centers, result.centers, rtol=1e-10, atol=1e-9)
    assert len(history) == 1


# ---------------------------------------------------------------- speed-ups: coarse to fine

def test_coarse_histogram_keeps_the_weight_and_the_mean():
    rng = np.random.default_rng(2)
    X = blobs(rng, 2000, 6, 12.0)
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
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    X = colours.astype(np.float64)
    result = kmeans.kmeans(X, 6, sample_weight=counts, n_init=3, rng=np.random.default_rng(4))
    assert result.converged
    centers, labels, history = plain_lloyd(X, counts.astype(np.float64), result.centers)
    np.testing.assert_array_equal(labels, result.labels)
    np.testing.assert_allclose(centers, result.centers, rtol=1e-10, atol=1e-9)
    assert len(history) == 1
