"""The Gaussian mixture: its log density, EM's guarantees, recovery, weights, seeds,
and degenerate images through the command line.

Expected values are computed here from textbook formulas (``np.linalg.inv`` and
``slogdet`` are fine in a test), from the data's own construction, or from the
input image and the written codebook.
"""
import contextlib
import io
import os
import re

import numpy as np
import pytest
from PIL import Image

import codec
import gmm
import hw2
import kmeans

ROCKET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "samples", "rocket.jpg")
RESULT_LINE = re.compile(r"Reconstruction error is (\S+)\n")


def random_covariance(rng, n_features, scale=1.0):
    """A random symmetric positive definite matrix, condition number at most ~50."""
    A = rng.normal(size=(n_features, n_features))
    return scale * (A @ A.T / n_features + 0.1 * np.eye(n_features))


def direct_log_density(X, mean, covariance):
    """log N(x | mean, covariance) straight from the textbook formula."""
    d = len(mean)
    diff = X - mean
    maha = np.einsum("ij,jk,ik->i", diff, np.linalg.inv(covariance), diff)
    _, log_det = np.linalg.slogdet(covariance)
    return -0.5 * (d * np.log(2 * np.pi) + log_det + maha)


def precision_cholesky_of(covariances):
    """Upper-triangular P with P P^T = inv(S), from the inverse of S's Cholesky factor."""
    return np.stack([np.linalg.inv(np.linalg.cholesky(S)).T for S in covariances])


def log_sum_exp(a, axis):
    peak = a.max(axis=axis, keepdims=True)
    return (peak + np.log(np.exp(a - peak).sum(axis=axis, keepdims=True))).squeeze(axis)


def separated_mixture(rng, n_samples=3000):
    """Three well separated 3-D Gaussians with known weights, means and covariances."""
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[0.0, 0.0, 0.0], [30.0, 0.0, 10.0], [0.0, 40.0, -20.0]])
    covariances = np.stack([random_covariance(rng, 3, scale) for scale in (4.0, 2.0, 9.0)])
    counts = (weights * n_samples).astype(int)
    X = np.concatenate([rng.multivariate_normal(m, S, size=c)
                        for m, S, c in zip(means, covariances, counts)])
    return X, weights, means, covariances


@pytest.fixture(scope="module")
def photo():
    """The distinct colours of the sample photo (float64) and their pixel counts."""
    pixels = codec.read_image(ROCKET)
    colours, counts, _ = codec.distinct_colours(pixels.reshape(-1, pixels.shape[-1]))
    return colours.astype(np.float64), counts


@pytest.fixture(scope="module")
def photo_fit(photo):
    X, counts = photo
    return gmm.fit_gmm(X, 32, sample_weight=counts, rng=np.random.default_rng(0))


# ---------------------------------------------------------------- the density

@pytest.mark.parametrize("n_features", [1, 2, 3, 4])
def test_log_density_matches_the_direct_formula(n_features):
    rng = np.random.default_rng(n_features)
    means = rng.normal(scale=5.0, size=(4, n_features))
    covariances = np.stack([random_covariance(rng, n_features) for _ in range(4)])
    X = rng.normal(scale=6.0, size=(300, n_features))
    got = gmm.log_density(X, means, precision_cholesky_of(covariances))
    expected = np.column_stack([direct_log_density(X, m, S)
                                for m, S in zip(means, covariances)])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("n_features", [1, 2, 3, 4])
def test_precision_cholesky_is_upper_triangular_and_inverts_the_covariance(n_features):
    rng = np.random.default_rng(20 + n_features)
    covariances = np.stack([random_covariance(rng, n_features) for _ in range(5)])
    P = gmm._precision_cholesky(covariances)
    assert np.all(np.tril(P, -1) == 0) and np.all(np.diagonal(P, axis1=1, axis2=2) > 0)
    np.testing.assert_allclose(P @ np.swapaxes(P, 1, 2), np.linalg.inv(covariances),
                               rtol=1e-10, atol=1e-10)


def test_log_density_is_accurate_for_tight_components_on_pixel_values():
    # Components at the floor reg_covar, far from the data's centre, on 0..255 values:
    # the worst case for the expanded quadratic form.
    rng = np.random.default_rng(11)
    X = rng.integers(0, 256, size=(500, 3)).astype(np.float64)
    means = np.array([[0.0, 0.0, 0.0], [255.0, 255.0, 255.0], X[0]])
    covariances = np.stack([gmm.REG_COVAR * np.eye(3)] * 2 + [random_covariance(rng, 3, 50.0)])
    got = gmm.log_density(X, means, precision_cholesky_of(covariances))
    expected = np.column_stack([direct_log_density(X, m, S)
                                for m, S in zip(means, covariances)])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-8)


def test_responsibilities_are_the_normalised_weighted_densities():
    rng = np.random.default_rng(2)
    X, *_ = separated_mixture(rng, 600)
    fit = gmm.fit_gmm(X, 3, reg_covar=1e-6, rng=np.random.default_rng(0))
    # A sample far from everything, whose densities all underflow in exp().
    X = np.vstack([X, [[1e4, -1e4, 1e4]]])
    resp, sample_ll = gmm.responsibilities(X, fit)
    log_prob = np.log(fit.weights) + np.column_stack(
        [direct_log_density(X, m, S) for m, S in zip(fit.means, fit.covariances)])
    assert np.all(np.isfinite(resp)) and np.all(resp >= 0)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(sample_ll, log_sum_exp(log_prob, axis=1), rtol=1e-9)
    np.testing.assert_allclose(resp, np.exp(log_prob - sample_ll[:, None]), atol=1e-9)
    # The label is the most responsible component.
    np.testing.assert_array_equal(gmm.predict(X, fit), resp.argmax(axis=1))


# ---------------------------------------------------------------- EM

def test_log_likelihood_never_decreases():
    # Overlapping clusters keep EM busy for every one of the 60 iterations.
    rng = np.random.default_rng(3)
    X = rng.gamma(2.0, 20.0, size=(2000, 3))
    weights = rng.integers(1, 6, size=len(X))
    fit = gmm.fit_gmm(X, 6, sample_weight=weights, tol=0.0, max_iter=60,
                      rng=np.random.default_rng(0))
    history = fit.log_likelihood
    assert len(history) == fit.n_iter + 1 == 61 and not fit.converged
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[:-1]))
    assert history[-1] > history[0] + 0.01
    # The last entry is the likelihood of the returned parameters.
    assert gmm.score(X, fit, weights) == pytest.approx(history[-1], rel=1e-12)


def test_callback_sees_every_entry_of_the_history():
    rng = np.random.default_rng(4)
    X, *_ = separated_mixture(rng, 300)
    seen = []
    fit = gmm.fit_gmm(X, 3, reg_covar=1e-6, callback=seen.append)
    assert all(isinstance(step, kmeans.Progress) for step in seen)
    # Each EM run on the samples counts from 0; the history is exactly one of them.
    runs = {}
    for step in seen:
        if step.stage == "EM":
            assert step.iteration == len(runs.setdefault(step.run, []))
            runs[step.run].append(step.value)
    assert sorted(runs) == list(range(1, fit.n_runs + 1))
    assert list(fit.log_likelihood) in runs.values()


def test_progress_comes_from_every_stage_on_a_photo(photo):
    X, counts = photo
    seen = []
    gmm.fit_gmm(X, 8, sample_weight=counts, callback=seen.append)
    stages = [step.stage for step in seen]
    # The coarse EM comes before the EM on the colours, each from iteration 0.
    assert "coarse EM" in stages and "EM" in stages
    assert stages.index("coarse EM") < stages.index("EM")
    assert [s.iteration for s in seen if s.stage == "coarse EM"][0] == 0
    assert all(np.isfinite(s.value) for s in seen if s.stage.endswith("EM"))


def spiked_cloud(seed, extra):
    """A broad cloud of integer colours, and (100, 140, 120) repeated ``extra`` more times.

    Returns the distinct colours, their counts, and the index of the repeated one.
    """
    rng = np.random.default_rng(seed)
    colour = np.array([100.0, 140.0, 120.0])
    cloud = np.round(rng.normal(128.0, 30.0, size=(3000, 3)))
    X, counts = np.unique(np.vstack([cloud, colour]), axis=0, return_counts=True)
    index = int(np.flatnonzero((X == colour).all(axis=1))[0])
    counts[index] += extra
    return X, counts, index


def test_a_heavily_repeated_colour_gets_its_own_component(monkeypatch):
    X, counts, index = spiked_cloud(0, 150)
    share = counts[index] / counts.sum()
    fit = gmm.fit_gmm(X, 3, sample_weight=counts, rng=np.random.default_rng(0))
    nearest = int(np.argmin(np.linalg.norm(fit.means - X[index], axis=1)))
    # A component collapsed onto one colour: that colour as mean, the floor as
    # covariance, the colour's share of the pixels as weight.
    np.testing.assert_allclose(fit.means[nearest], X[index], atol=0.05)
    np.testing.assert_allclose(fit.covariances[nearest], gmm.REG_COVAR * np.eye(3), atol=0.01)
    assert fit.weights[nearest] == pytest.approx(share, abs=0.002)
    assert np.all(np.diff(fit.log_likelihood) >= 0)
    assert gmm.score(X, fit, counts) == pytest.approx(fit.log_likelihood[-1], rel=1e-12)
    # Plain EM from the same start stops on the plateau, far lower.
    monkeypatch.setattr(gmm, "_MAX_SPIKES", 0)
    plain = gmm.fit_gmm(X, 3, sample_weight=counts, rng=np.random.default_rng(0))
    assert plain.converged
    assert fit.log_likelihood[-1] > plain.log_likelihood[-1] + 0.1


def test_the_spike_proposal_moves_the_lightest_component_and_pools_copies():
    X, counts, index = spiked_cloud(1, 150)
    share = counts[index] / counts.sum()
    # Two broad components over the cloud, none near the repeated colour.
    covariance = np.cov(X.T, fweights=counts) + gmm.REG_COVAR * np.eye(3)
    covariances = np.stack([covariance, 2.0 * covariance])
    mixture = gmm._Mixture(np.array([0.7, 0.3]),
                           np.array([[128.0, 128.0, 128.0], [120.0, 130.0, 125.0]]),
                           covariances, precision_cholesky_of(covariances))
    repeated = np.repeat(X, counts, axis=0)
    proposals = []
    for data, weights in ((X, counts.astype(float)), (repeated, np.ones(len(repeated)))):
        rows = gmm._sample_rows(data, weights, 2)  # copies are merged here
        _, _, row_ll = gmm._e_step(rows, mixture)
        proposals.append(gmm._spiked(rows, gmm._Run(mixture, [], True, row_ll), gmm.REG_COVAR))
    for weighted, copies in zip(*proposals):
        np.testing.assert_allclose(weighted, copies, rtol=1e-12, atol=1e-12)
    mix_weights, means, spiked_covariances, _ = proposals[0]
    # The lighter component moves onto the colour with the colour's share.
    np.testing.assert_allclose(means, [[128.0, 128.0, 128.0], X[index]])
    np.testing.assert_allclose(spiked_covariances[1], gmm.REG_COVAR * np.eye(3))
    np.testing.assert_allclose(mix_weights, np.array([0.7, share]) / (0.7 + share))
    # Repeated only once more, the colour holds too little weight to be worth it.
    X, counts, _ = spiked_cloud(1, 1)
    rows = gmm._sample_rows(X, counts.astype(float), 2)
    _, _, row_ll = gmm._e_step(rows, mixture)
    assert gmm._spiked(rows, gmm._Run(mixture, [], True, row_ll), gmm.REG_COVAR) is None


def test_stops_when_the_change_falls_below_tol():
    rng = np.random.default_rng(5)
    X = rng.gamma(2.0, 20.0, size=(1000, 3))
    fit = gmm.fit_gmm(X, 4, tol=1e-3, max_iter=500)
    steps = np.diff(fit.log_likelihood)
    assert fit.converged and fit.n_iter < 500
    assert abs(steps[-1]) < 1e-3 and np.all(np.abs(steps[:-1]) >= 1e-3)


def test_recovers_a_well_separated_mixture():
    rng = np.random.default_rng(6)
    X, weights, means, covariances = separated_mixture(rng, 3000)
    fit = gmm.fit_gmm(X, 3, reg_covar=1e-6, tol=1e-6, rng=np.random.default_rng(1))
    assert fit.converged
    order = [int(np.argmin(np.linalg.norm(fit.means - m, axis=1))) for m in means]
    assert sorted(order) == [0, 1, 2]
    # Tolerances from the sampling error of 600..1500 points per component: a mean
    # is off by about sigma / sqrt(n) (< 0.13 here), a weight by sqrt(p (1 - p) / N)
    # (< 0.01), a covariance by about sqrt(2 / n) of its size (< 6%); the bounds
    # below are three or more of those.
    np.testing.assert_allclose(fit.means[order], means, atol=0.4)
    np.testing.assert_allclose(fit.weights[order], weights, atol=0.03)
    for j, S in zip(order, covariances):
        assert np.linalg.norm(fit.covariances[j] - S) < 0.2 * np.linalg.norm(S)


def test_weights_act_like_repeated_points():
    rng = np.random.default_rng(7)
    X = rng.integers(0, 256, size=(400, 3)).astype(np.float64)
    weights = rng.integers(0, 5, size=len(X))  # weight 0: the point is absent
    repeated = np.repeat(X, weights, axis=0)
    a = gmm.fit_gmm(X, 5, sample_weight=weights, tol=0.0, max_iter=25,
                    rng=np.random.default_rng(0))
    b = gmm.fit_gmm(repeated, 5, tol=0.0, max_iter=25, rng=np.random.default_rng(0))
    for name in ("weights", "means", "covariances", "precisions_cholesky", "log_likelihood"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-9,
                                   err_msg=name)
    np.testing.assert_array_equal(np.repeat(gmm.predict(X, a), weights),
                                  gmm.predict(repeated, b))


def test_same_seed_gives_identical_arrays():
    rng = np.random.default_rng(8)
    X = rng.gamma(2.0, 20.0, size=(800, 3))
    weights = rng.integers(1, 4, size=len(X))
    runs = [gmm.fit_gmm(X, 5, sample_weight=weights, rng=np.random.default_rng(seed))
            for seed in (3, 3, 4)]
    for name in ("weights", "means", "covariances", "precisions_cholesky", "log_likelihood"):
        np.testing.assert_array_equal(getattr(runs[0], name), getattr(runs[1], name))
    assert not np.array_equal(runs[0].means, runs[2].means)


# ---------------------------------------------------------------- the truncated E-step

def dense_e_step(rows, mixture, log_prob_of):
    """Responsibilities of every row for every component (zero where left out), row_ll, kept."""
    resp = np.zeros((len(rows.weights), len(mixture.weights)))
    row_ll = np.empty(len(rows.weights))
    kept = np.zeros(resp.shape, dtype=bool)
    for block, components, block_resp, block_ll in gmm._blockwise(rows, mixture, log_prob_of):
        resp[block][:, components] = block_resp.T
        kept[block][:, components] = True
        row_ll[block] = block_ll
    return resp, row_ll, kept


def random_mixture(rng, n_components, spread):
    """Components spread over 0..255 colours, from tight (the floor) to broad."""
    means = rng.uniform(0.0, 255.0, size=(n_components, 3))
    scales = np.exp(rng.uniform(np.log(gmm.REG_COVAR), np.log(spread), size=n_components))
    covariances = np.stack([random_covariance(rng, 3, s) for s in scales])
    weights = rng.dirichlet(np.ones(n_components))
    return gmm._Mixture(weights, means, covariances, precision_cholesky_of(covariances))


def compare_e_steps(rows, mixture):
    """Assert the truncated E-step gives the plain one's numbers; the share it scored."""
    full_resp, full_ll, _ = dense_e_step(rows, mixture, gmm._full_log_prob)
    resp, row_ll, kept = dense_e_step(rows, mixture, gmm._truncated_log_prob)
    np.testing.assert_allclose(row_ll, full_ll, rtol=0, atol=1e-9)
    np.testing.assert_allclose(resp, full_resp, rtol=0, atol=1e-9)
    # The bound: what is left out of a row holds less than MAX_DROPPED of it.
    assert np.all(np.where(kept, 0.0, full_resp).sum(axis=1) < gmm.MAX_DROPPED)
    # So is the mean log-likelihood, and the M-step's statistics.
    full = gmm._e_step(rows, mixture, gmm._full_log_prob)
    fast = gmm._e_step(rows, mixture, gmm._truncated_log_prob)
    assert abs(fast[0] - full[0]) < 1e-9
    np.testing.assert_allclose(fast[1], full[1], rtol=1e-9, atol=1e-9 * np.abs(full[1]).max())
    return kept.mean()


@pytest.mark.parametrize("n_components, spread", [(3, 400.0), (40, 100.0), (300, 30.0)])
def test_the_truncated_e_step_matches_the_full_one_on_random_mixtures(n_components, spread):
    rng = np.random.default_rng(n_components)
    X = np.vstack([rng.uniform(0.0, 255.0, size=(3000, 3)),
                   np.round(rng.normal(128.0, 40.0, size=(3000, 3)))])
    weights = rng.integers(1, 50, size=len(X)).astype(float)
    mixture = random_mixture(rng, n_components, spread)
    centre = X.mean(axis=0)
    mixture = mixture._replace(means=mixture.means - centre)
    share = compare_e_steps(gmm._sample_rows(X - centre, weights, n_components), mixture)
    if n_components >= 40:  # the test must see components left out
        assert share < 0.9


def test_the_truncated_e_step_matches_the_full_one_on_a_photo(photo, photo_fit):
    X, counts = photo
    rows, mixture = gmm._rows_and_mixture(X, counts, photo_fit)
    assert compare_e_steps(rows, mixture) < 0.9  # some left out
    # Per pixel, through the public functions.
    assert abs(gmm.score(X, photo_fit, counts) - photo_fit.log_likelihood[-1]) < 1e-9
    _, sample_ll = gmm.responsibilities(X, photo_fit)
    assert abs(counts @ sample_ll / counts.sum() - gmm.score(X, photo_fit, counts)) < 1e-6


def test_predict_is_the_most_responsible_component_on_a_photo(photo, photo_fit):
    X, _ = photo
    resp, _ = gmm.responsibilities(X, photo_fit)
    np.testing.assert_array_equal(gmm.predict(X, photo_fit), resp.argmax(axis=1))


def test_the_coarse_em_brings_the_exact_em_most_of_the_way(photo):
    # EM on the histogram's cells hands its weights, means and covariances to
    # the EM on the colours: on the colours they already score far above the
    # k-means start they came from (rocket.jpg: by about 0.55 per pixel).
    X, counts = photo
    centre = np.average(X, axis=0, weights=counts)
    rows = gmm._sample_rows(X - centre, counts.astype(float), 16)
    settings = gmm._Settings(gmm.REG_COVAR, 1e-3, 100, None)
    start, cells = gmm._hard_start(rows, 16, "k-means++", 10, np.random.default_rng(2), settings)
    assert len(cells.weights) < len(rows.weights) / 2
    carried = gmm._em(cells, start, settings, "coarse EM", run=1).mixture
    ll_start, ll_carried = (gmm._e_step(rows, mixture)[0] for mixture in (start, carried))
    assert ll_carried > ll_start + 0.2


@pytest.mark.parametrize("n_components, n_cells", [(20, 64), (100, 512), (600, None)])
def test_the_hard_start_takes_the_coarsest_histogram_with_enough_cells(n_components, n_cells):
    # Every colour of a 16-level cube: 64 cells of side 4, 512 of side 2.  With
    # more components than either has (or than would halve the rows), the
    # colours themselves.
    X = np.stack(np.meshgrid(*[np.arange(16.0)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    rows = gmm._sample_rows(X - X.mean(axis=0), np.ones(len(X)), n_components)
    settings = gmm._Settings(gmm.REG_COVAR, 1e-3, 100, None)
    start, cells = gmm._hard_start(rows, n_components, "k-means++", 10,
                                   np.random.default_rng(0), settings)
    assert (cells is None) if n_cells is None else len(cells.weights) == n_cells
    assert len(start.weights) == n_components and np.all(np.isfinite(start.covariances))


def test_init_names_the_seeding_of_the_hard_start():
    rng = np.random.default_rng(13)
    X = rng.gamma(2.0, 20.0, size=(3000, 3))
    fits = [gmm.fit_gmm(X, 6, init=init, rng=np.random.default_rng(0))
            for init in ("random", "random", "k-means++")]
    np.testing.assert_array_equal(fits[0].means, fits[1].means)
    assert not np.allclose(fits[0].means, fits[2].means)


# ---------------------------------------------------------------- degenerate data

def test_as_many_components_as_points_gives_each_point_its_own():
    X = np.array([[0.0, 0.0, 0.0], [255.0, 0.0, 0.0], [10.0, 10.0, 10.0], [12.0, 10.0, 10.0]])
    counts = np.array([5, 1, 100, 3])
    fit = gmm.fit_gmm(X, 4, sample_weight=counts)
    assert np.all(np.isfinite(fit.log_likelihood))
    labels = gmm.predict(X, fit)
    assert sorted(labels) == [0, 1, 2, 3]
    # Each component collapses onto its point, with the floor as covariance.  The
    # closest points are 2 levels apart, 7 standard deviations of the floor: they
    # share a fraction ~exp(-24) of their weight, too little to see.
    np.testing.assert_allclose(fit.means[labels], X, atol=1e-6)
    np.testing.assert_allclose(fit.weights[labels], counts / counts.sum(), atol=1e-9)
    np.testing.assert_allclose(fit.covariances, np.broadcast_to(gmm.REG_COVAR * np.eye(3),
                                                                (4, 3, 3)), atol=1e-6)


def test_a_dead_component_is_reseeded_on_the_worst_explained_sample():
    rng = np.random.default_rng(9)
    X = np.vstack([rng.normal(0.0, 1.0, (50, 2)), rng.normal(20.0, 1.0, (50, 2)),
                   [[200.0, -50.0]]])
    rows = gmm._sample_rows(X, np.ones(len(X)), 3)
    points = gmm._points(rows)
    labels = (points[:, 0] > 10).astype(int)  # component 2 gets nothing
    stats = np.stack([np.bincount(labels, weights=phi, minlength=3) for phi in rows.phi], axis=1)
    # The outlier is the row the mixture explains worst.
    row_ll = -np.linalg.norm(points - [10.0, 10.0], axis=1)
    mix_weights, means, covariances, prec_chol = gmm._m_step(rows, stats, 0.5, row_ll)
    for array in (mix_weights, means, covariances, prec_chol):
        assert np.all(np.isfinite(array))
    np.testing.assert_allclose(means[2], [200.0, -50.0])
    np.testing.assert_allclose(covariances[2], 0.5 * np.eye(2))
    assert mix_weights[2] == pytest.approx(1 / 101 / (1 + 1 / 101))
    assert mix_weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_components": 0}, "n_components=0"),
    ({"n_components": 7}, "n_components=7"),
    ({"reg_covar": 0.0}, "reg_covar=0.0"),
    ({"tol": -1.0}, "tol=-1.0"),
    ({"max_iter": 0}, "max_iter=0"),
    ({"init": "kmeans"}, "init='kmeans'"),
])
def test_bad_arguments_are_refused_with_the_value(kwargs, match):
    X = np.arange(18.0).reshape(6, 3)
    kwargs = {"n_components": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        gmm.fit_gmm(X, **kwargs)


# ---------------------------------------------------------------- through the CLI

def compress(pixels, tmp_path, clusters=20):
    """Write ``pixels`` as a PNG, compress it with the mixture; (printed error, codebook)."""
    image_path, book_path = tmp_path / "in.png", tmp_path / "book.npz"
    Image.fromarray(pixels).save(image_path)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = hw2.main(["--compress", str(image_path), "--model", "mixture",
                           "--clusters", str(clusters), "--output", str(book_path)])
    assert status == 0, err.getvalue()
    match = RESULT_LINE.fullmatch(out.getvalue())
    assert match, out.getvalue()
    with np.load(book_path, allow_pickle=False) as archive:
        book = {key: archive[key] for key in archive.files}
    return float(match.group(1)), book


def check_codebook(pixels, printed, book, clusters):
    """Finite means, at most ``clusters`` of them, and the printed error recomputed."""
    means = book["means"]
    assert np.all(np.isfinite(means)) and len(means) <= clusters
    rebuilt = means[book["assignments"]].reshape(book["img_shape"])
    assert rebuilt.shape == pixels.shape
    diff = (pixels.astype(np.float64) - rebuilt).reshape(-1, means.shape[1])
    assert printed == pytest.approx(np.sqrt((diff ** 2).sum(axis=1)).mean(), rel=1e-9, abs=1e-12)
    return rebuilt


def few_colour_image(colours, shape=(12, 10)):
    rng = np.random.default_rng(10)
    pick = rng.integers(0, len(colours), size=shape)
    pick.flat[:len(colours)] = np.arange(len(colours))  # every colour present
    return np.asarray(colours, dtype=np.uint8)[pick]


@pytest.mark.parametrize("pixels, clusters", [
    (np.full((9, 7, 3), (10, 200, 30), dtype=np.uint8), 20),           # one colour
    (few_colour_image([(0, 0, 0), (255, 255, 255)]), 20),              # two colours, k = 20
    (few_colour_image([(5, 6, 7), (5, 6, 8), (200, 1, 1)]), 3),        # k = distinct colours
    (np.array([[[17, 34, 51]]], dtype=np.uint8), 20),                   # a single pixel
], ids=["one-colour", "two-colours", "k-equals-colours", "single-pixel"])
def test_few_colours_are_lossless(pixels, clusters, tmp_path):
    printed, book = compress(pixels, tmp_path, clusters)
    rebuilt = check_codebook(pixels, printed, book, clusters)
    assert printed == 0.0
    np.testing.assert_array_equal(rebuilt, pixels)


def test_a_constant_channel_stays_exact(tmp_path):
    rng = np.random.default_rng(12)
    pixels = rng.integers(0, 256, size=(40, 40, 3)).astype(np.uint8)
    pixels[:, :, 2] = 7
    printed, book = compress(pixels, tmp_path, 8)
    check_codebook(pixels, printed, book, 8)
    np.testing.assert_allclose(book["means"][:, 2], 7.0, atol=1e-9)


def test_a_large_flat_background_keeps_its_colour(tmp_path):
    with Image.open(ROCKET) as photo:
        patch = np.asarray(photo.convert("RGB"))[100:160, 200:260]
    background = np.array([250, 248, 240], dtype=np.uint8)
    pixels = np.empty((190, 190, 3), dtype=np.uint8)
    pixels[:] = background  # 90% of the pixels
    pixels[65:125, 65:125] = patch
    printed, book = compress(pixels, tmp_path, 20)
    rebuilt = check_codebook(pixels, printed, book, 20)
    flat = np.ones(pixels.shape[:2], dtype=bool)
    flat[65:125, 65:125] = False
    # The colour of 90% of the pixels has a component of its own, centred on it.
    assert np.abs(rebuilt[flat] - background).max() < 0.5
    assert printed > 0.0
