"""The Gaussian mixture: its E-step against the textbook (and the fast scoring against the
plain one), EM's guarantees, recovery, weights, seeds, and degenerate images through the
command line.

Expected values are computed here from textbook formulas (``np.linalg.inv`` and
``slogdet`` are fine in a test), from the data's own construction, or from the
input image and the written codebook.
"""
import numpy as np
import pytest
from PIL import Image

import codec
import gmm
import kmeans
from conftest import ROCKET, check_round_trip


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


def mixture_of(weights, means, covariances):
    """A gmm.GMMResult holding the given parameters (no history), for the public functions."""
    weights, means, covariances = (np.asarray(a, dtype=np.float64)
                                   for a in (weights, means, covariances))
    return gmm.GMMResult(weights, means, covariances, precision_cholesky_of(covariances),
                         np.zeros(1), 0, True, 1)


def direct_log_prob(X, fit):
    """log w_j + log N(x_i | mu_j, S_j), shape (n_samples, n_components), from the textbook."""
    return np.log(fit.weights) + np.column_stack(
        [direct_log_density(X, m, S) for m, S in zip(fit.means, fit.covariances)])


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
    pixels = codec.read_image(str(ROCKET))
    colours, counts = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0, return_counts=True)
    return colours.astype(np.float64), counts


@pytest.fixture(scope="module")
def photo_fit(photo):
    X, counts = photo
    return gmm.fit_gmm(X, 32, sample_weight=counts, rng=np.random.default_rng(0))


# ---------------------------------------------------------------- the E-step

def test_a_hand_worked_two_component_case():
    # 1-D: w = (1/4, 3/4), means 0 and 2, unit variances.  At x = 1 both densities are
    # exp(-1/2) / sqrt(2 pi), so r = w and p(1) = exp(-1/2) / sqrt(2 pi).  At x = 0 the
    # second density is exp(-2) times the first, at x = 2 the first is exp(-2) times the second.
    fit = mixture_of([0.25, 0.75], [[0.0], [2.0]], [[[1.0]], [[1.0]]])
    X = np.array([[1.0], [0.0], [2.0]])
    resp, sample_ll = gmm.responsibilities(X, fit)
    e = np.exp(-2.0)
    r0, r2 = 0.25 / (0.25 + 0.75 * e), 0.25 * e / (0.25 * e + 0.75)
    np.testing.assert_allclose(resp, [[0.25, 0.75], [r0, 1 - r0], [r2, 1 - r2]], rtol=1e-12)
    half_log_2pi = 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(sample_ll[0], -0.5 - half_log_2pi, rtol=1e-12)
    np.testing.assert_allclose(sample_ll[1], np.log(0.25 + 0.75 * np.exp(-2.0)) - half_log_2pi,
                               rtol=1e-12)
    np.testing.assert_array_equal(gmm.predict(X, fit), [1, 0, 1])
    # Weighted 2, 1, 1: the mean of the per-sample log-likelihoods with those weights.
    assert gmm.score(X, fit, [2, 1, 1]) == pytest.approx(
        (2 * sample_ll[0] + sample_ll[1] + sample_ll[2]) / 4, rel=1e-12)


@pytest.mark.parametrize("n_features", [1, 2, 3, 4])
def test_responsibilities_follow_the_textbook_formula(n_features):
    rng = np.random.default_rng(n_features)
    covariances = np.stack([random_covariance(rng, n_features) for _ in range(4)])
    fit = mixture_of(rng.dirichlet(np.ones(4)), rng.normal(scale=5.0, size=(4, n_features)),
                     covariances)
    X = rng.normal(scale=6.0, size=(300, n_features))
    resp, sample_ll = gmm.responsibilities(X, fit)
    log_prob = direct_log_prob(X, fit)
    np.testing.assert_allclose(sample_ll, log_sum_exp(log_prob, axis=1), rtol=1e-12)
    np.testing.assert_allclose(resp, np.exp(log_prob - sample_ll[:, None]), atol=1e-12)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)


def test_responsibilities_stay_finite_far_from_every_component():
    rng = np.random.default_rng(2)
    X, *_ = separated_mixture(rng, 600)
    fit = gmm.fit_gmm(X, 3, reg_covar=1e-6, rng=np.random.default_rng(0))
    # A sample far from everything, whose densities all underflow in exp().
    X = np.vstack([X, [[1e4, -1e4, 1e4]]])
    resp, sample_ll = gmm.responsibilities(X, fit)
    log_prob = direct_log_prob(X, fit)
    assert np.all(np.isfinite(resp)) and np.all(resp >= 0)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(sample_ll, log_sum_exp(log_prob, axis=1), rtol=1e-9)
    np.testing.assert_allclose(resp, np.exp(log_prob - sample_ll[:, None]), atol=1e-9)
    np.testing.assert_array_equal(gmm.predict(X, fit), resp.argmax(axis=1))


def random_mixture(rng, n_components, spread):
    """Components spread over 0..255 colours, from tight (the floor) to broad."""
    scales = np.exp(rng.uniform(np.log(gmm.REG_COVAR), np.log(spread), size=n_components))
    return mixture_of(rng.dirichlet(np.ones(n_components)),
                      rng.uniform(0.0, 255.0, size=(n_components, 3)),
                      np.stack([random_covariance(rng, 3, s) for s in scales]))


def dense(rows, mixture, log_prob_of):
    """Every row's responsibilities (zero where left out) and log-likelihood, and what was kept."""
    log_prob = np.full((len(rows.weights), len(mixture.weights)), -np.inf)
    for block, kept, block_log_prob in log_prob_of(rows, mixture):
        log_prob[block][:, kept] = block_log_prob.T
    row_ll = log_sum_exp(log_prob, axis=1)
    return np.exp(log_prob - row_ll[:, None]), row_ll, np.isfinite(log_prob)


def assert_fast_is_plain(X, weights, fit):
    """_log_prob_fast gives _log_prob's numbers; returns the share of components it scored."""
    rows, mixture = gmm._rows_and_mixture(X, weights, fit)
    plain_resp, plain_ll, _ = dense(rows, mixture, gmm._log_prob)
    resp, row_ll, kept = dense(rows, mixture, gmm._log_prob_fast)
    np.testing.assert_allclose(row_ll, plain_ll, rtol=0, atol=1e-9)
    np.testing.assert_allclose(resp, plain_resp, rtol=0, atol=1e-9)
    # The bound: what is left out of a row holds less than MAX_DROPPED of it.
    assert np.all(np.where(kept, 0.0, plain_resp).sum(axis=1) < gmm.MAX_DROPPED)
    # The E-step's mean log-likelihood and the M-step's sums, either way.
    plain, fast = gmm._e_step(rows, mixture, gmm._log_prob), gmm._e_step(rows, mixture)
    assert abs(fast[0] - plain[0]) < 1e-9
    np.testing.assert_allclose(fast[1], plain[1], rtol=1e-9, atol=1e-9 * np.abs(plain[1]).max())
    np.testing.assert_allclose(fast[2], plain[2], rtol=0, atol=1e-9)
    # Through the public functions: score and predict by the fast way, responsibilities plain.
    sample_resp, sample_ll = gmm.responsibilities(X, fit)
    assert abs(gmm.score(X, fit, weights) - weights @ sample_ll / weights.sum()) < 1e-9
    np.testing.assert_array_equal(gmm.predict(X, fit), sample_resp.argmax(axis=1))
    return kept.mean()


@pytest.mark.parametrize("n_components, spread", [(3, 400.0), (40, 100.0), (300, 30.0)])
def test_the_fast_scoring_is_the_plain_one_on_random_mixtures(n_components, spread):
    rng = np.random.default_rng(n_components)
    X = np.vstack([rng.uniform(0.0, 255.0, size=(3000, 3)),
                   np.round(rng.normal(128.0, 40.0, size=(3000, 3)))])
    weights = rng.integers(1, 50, size=len(X)).astype(float)
    share = assert_fast_is_plain(X, weights, random_mixture(rng, n_components, spread))
    if n_components >= 40:  # the test must see components left out
        assert share < 0.9


def test_the_fast_scoring_is_the_plain_one_on_a_photo(photo, photo_fit):
    X, counts = photo
    assert assert_fast_is_plain(X, counts.astype(float), photo_fit) < 0.9  # some left out
    # The last entry of the history belongs to the returned parameters.
    assert abs(gmm.score(X, photo_fit, counts) - photo_fit.log_likelihood[-1]) < 1e-9


def test_tight_components_far_from_the_centre_are_scored_accurately():
    # Components at the floor reg_covar in the corners of the 0..255 cube: the worst case
    # for the fast scoring's expanded quadratic form.
    rng = np.random.default_rng(11)
    X = rng.integers(0, 256, size=(500, 3)).astype(np.float64)
    X[:2] = [[0.0, 0.0, 1.0], [255.0, 254.0, 255.0]]
    fit = mixture_of([0.3, 0.3, 0.4], [[0.0, 0.0, 0.0], [255.0, 255.0, 255.0], X[5]],
                     [gmm.REG_COVAR * np.eye(3)] * 2 + [random_covariance(rng, 3, 50.0)])
    assert_fast_is_plain(X, np.ones(len(X)), fit)
    log_prob = direct_log_prob(X, fit)
    expected = log_sum_exp(log_prob, axis=1).mean()
    assert gmm.score(X, fit) == pytest.approx(expected, rel=1e-12, abs=1e-9)


# ---------------------------------------------------------------- EM

def test_one_component_is_the_weighted_mean_and_covariance():
    # With k = 1 every responsibility is 1: the M-step gives the weighted mean and the
    # weighted (biased) covariance plus the floor, whatever the start; the next E-step
    # then moves nothing, and the log-likelihood is the Gaussian's at those parameters.
    rng = np.random.default_rng(14)
    X = rng.gamma(2.0, 20.0, size=(500, 3))
    weights = rng.integers(1, 5, size=len(X)).astype(float)
    fit = gmm.fit_gmm(X, 1, sample_weight=weights, reg_covar=0.5)
    mean = weights @ X / weights.sum()
    covariance = np.cov(X.T, aweights=weights, bias=True) + 0.5 * np.eye(3)
    np.testing.assert_allclose(fit.weights, [1.0])
    np.testing.assert_allclose(fit.means[0], mean, rtol=1e-10)
    np.testing.assert_allclose(fit.covariances[0], covariance, rtol=1e-9)
    expected = weights @ direct_log_density(X, mean, covariance) / weights.sum()
    assert fit.log_likelihood[-1] == pytest.approx(expected, rel=1e-10)
    assert fit.converged


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


@pytest.mark.parametrize("n_components, coarse", [(20, True), (100, False)])
def test_the_coarse_em_runs_only_on_enough_cells(n_components, coarse):
    # Every colour of an 8-level cube: 8 cells of side 4, 64 of side 2.  With more
    # components than either grid has cells, EM starts on the colours themselves.
    X = np.stack(np.meshgrid(*[np.arange(8.0)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    seen = []
    fit = gmm.fit_gmm(X, n_components, max_iter=3, callback=seen.append)
    assert ("coarse EM" in {step.stage for step in seen}) == coarse
    assert np.all(np.isfinite(fit.covariances)) and len(fit.weights) == n_components


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


def test_a_heavily_repeated_colour_gets_its_own_component():
    X, counts, index = spiked_cloud(0, 150)
    share = counts[index] / counts.sum()
    seen = []
    fit = gmm.fit_gmm(X, 3, sample_weight=counts, rng=np.random.default_rng(0),
                      callback=seen.append)
    nearest = int(np.argmin(np.linalg.norm(fit.means - X[index], axis=1)))
    # A component collapsed onto one colour: that colour as mean, the floor as
    # covariance, the colour's share of the pixels as weight.
    np.testing.assert_allclose(fit.means[nearest], X[index], atol=0.05)
    np.testing.assert_allclose(fit.covariances[nearest], gmm.REG_COVAR * np.eye(3), atol=0.01)
    assert fit.weights[nearest] == pytest.approx(share, abs=0.002)
    assert np.all(np.diff(fit.log_likelihood) >= 0)
    assert gmm.score(X, fit, counts) == pytest.approx(fit.log_likelihood[-1], rel=1e-12)
    # The first EM run, from the coarse start, converged on a plateau far lower.
    first = [step for step in seen if step.stage == "EM" and step.run == 1]
    assert fit.n_runs >= 2 and first[-1].iteration < first[-1].max_iter
    assert fit.log_likelihood[-1] > first[-1].value + 0.1


def test_a_colour_repeated_a_little_gets_no_spike():
    X, counts, _ = spiked_cloud(1, 1)
    assert gmm.fit_gmm(X, 2, sample_weight=counts, rng=np.random.default_rng(0)).n_runs == 1


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
    # The precision factors: upper-triangular, P P^T the inverse of each covariance.
    P = fit.precisions_cholesky
    assert np.all(np.tril(P, -1) == 0) and np.all(np.diagonal(P, axis1=1, axis2=2) > 0)
    np.testing.assert_allclose(P @ np.swapaxes(P, 1, 2), np.linalg.inv(fit.covariances),
                               rtol=1e-8)


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


def test_init_names_the_seeding_of_the_start():
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
    # The M-step itself (a dead component cannot be made to appear through fit_gmm).
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

def test_a_constant_channel_stays_exact(tmp_path):
    pixels = np.random.default_rng(12).integers(0, 256, size=(40, 40, 3)).astype(np.uint8)
    pixels[:, :, 2] = 7
    Image.fromarray(pixels).save(tmp_path / "in.png")
    book, _ = check_round_trip(tmp_path / "in.png", tmp_path, 8, "mixture")
    assert np.all(np.isfinite(book["means"]))
    np.testing.assert_allclose(book["means"][:, 2], 7.0, atol=1e-9)


def test_a_large_flat_background_keeps_its_colour(tmp_path):
    with Image.open(ROCKET) as photo:
        patch = np.asarray(photo.convert("RGB"))[100:160, 200:260]
    background = np.array([250, 248, 240], dtype=np.uint8)
    pixels = np.empty((190, 190, 3), dtype=np.uint8)
    pixels[:] = background  # 90% of the pixels
    pixels[65:125, 65:125] = patch
    Image.fromarray(pixels).save(tmp_path / "in.png")
    book, printed = check_round_trip(tmp_path / "in.png", tmp_path, 20, "mixture")
    rebuilt = book["means"][book["assignments"]].reshape(pixels.shape)
    flat = np.ones(pixels.shape[:2], dtype=bool)
    flat[65:125, 65:125] = False
    # The colour of 90% of the pixels has a component of its own, centred on it.
    assert np.abs(rebuilt[flat] - background).max() < 0.5
    assert printed > 0.0
