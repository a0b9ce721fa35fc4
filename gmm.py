"""A Gaussian mixture with full covariance matrices, fitted by EM, in NumPy.

The model says each sample ``x`` (a pixel colour) was drawn by first picking a
component ``j`` with probability ``weights[j]`` and then drawing ``x`` from the
normal distribution ``N(means[j], covariances[j])``.  Expectation-maximisation
alternates two steps that never lower the likelihood of the data:

* the E-step (:func:`_e_step`) gives every sample its *responsibilities*, the
  posterior probability of each component given the sample;
* the M-step (:func:`_m_step`) re-estimates the weights, means and covariances
  as responsibility-weighted averages.

A sample of weight 3 counts exactly like three copies of it (equal samples are
merged first, their weights summed), so the compressor fits the distinct
colours of a photo weighted by their pixel counts and maximises the likelihood
of all its pixels.

The fit, :func:`fit_gmm`, in three parts:

1. **Hard start** (:func:`_hard_start`): k-means on a coarse histogram of the
   samples (the occupied cells of a grid, each with its weight, mean and the
   second moments of its samples); each cell goes wholly to its cluster.
2. **EM** (:func:`_em`): first on the cells, every cell's samples sharing one
   set of responsibilities, then on the exact samples.  With shared
   responsibilities the E-step scores a cell by the *expected* log density of
   its samples, which is linear in their monomials (``1, x_a, x_a x_b``), and
   the M-step sums the cells' pooled monomials: EM on the cells is ordinary EM
   on a lower bound of the likelihood (Verbeek, Nunnink & Vlassis, "Accelerated
   EM-based clustering of large data sets", 2006), and it hands weights,
   means *and* covariances to the exact EM.  Each EM stops when one
   iteration changes the mean log-likelihood per unit weight by less than
   ``tol``, or after ``max_iter`` iterations, fewer at large
   ``n_samples * n_components`` (``_EM_WORK``, a heuristic).
3. **Spikes** (:func:`_spiked`): a colour repeated over a large share of the
   pixels (a flat background) that the mixture explains badly gets the
   lightest component, and EM runs again; kept only if it ends higher.

How the E-step is computed.  Each covariance is factored by Cholesky and its
triangular inverse gives ``P`` with ``precision = P P^T``; no determinant or
inverse of a covariance is formed.  ``log(w_j N_j(x))`` is a quadratic
polynomial in ``x``: one row of coefficients per component, so a block of
samples is scored against many components by one matrix product with the
samples' monomials.  Samples are sorted along a Z-order curve and cut into
blocks of nearby samples; every block's log probabilities are normalised by
log-sum-exp, so no ``(n_samples, n_components)`` array is ever held.

The truncated E-step (an exact speed-up, :func:`_truncated_log_prob`).  Most
components are far from most blocks.  For a block with bounding box ``B``,
interval arithmetic on ``P_j^T (x - mu_j)`` gives ``U_j >= max over x in B of
log(w_j N_j(x))``.  The rule: component ``j`` is left out of the block only if
``U_j < min over the block's samples of log p_S(x) + log(eps)`` with
``eps = MAX_DROPPED / n_components``, where ``p_S`` is the mixture density over
the components kept (this is checked after they are evaluated, and any
component failing it is added back).  Since ``p_S <= p``, every component left
out has responsibility below ``eps`` for every sample of the block; together
they hold less than ``MAX_DROPPED = 1e-10`` of any sample's responsibility.
So each sample's log-likelihood is off by less than ``-log(1 - 1e-10)``, about
``1e-10`` (per pixel, and so for the mean), each kept responsibility by a
factor within ``1e-10`` of one, and each dropped one by less than ``eps``.
(For a cell the score is an expected log density, never above the density
at the cell's mean, so the same bound holds with the box of the cells'
means.)  The plain E-step over every component, :func:`_full_log_prob`, is
the reference the tests hold it against.  On the noisy 10.7 MP photo at
k=256 a block keeps 51 components on average (a colour has 12 with a
responsibility above 1e-6).
"""
from typing import NamedTuple

import numpy as np

import kmeans

# ---------------------------------------------------------------- exact constants

# A covariance floor for pixel data on the integer scale 0..255.  A colour value
# v stands for the interval [v - 1/2, v + 1/2); spreading it uniformly over that
# interval has variance 1/12, the least variance a colour can honestly be said to
# have.  The floor keeps a component that collapses onto one colour (a flat
# background, a logo) a finite, well-conditioned Gaussian.
REG_COVAR = 1.0 / 12.0

# The most responsibility the truncated E-step may leave out, per sample (the
# bound in the module docstring).
MAX_DROPPED = 1e-10

# The largest number of components the command line accepts (hw2.py refuses
# more up front).  `hw2.py --model mixture` on the noisy 10.7 MP photo
# (546,363 colours, 26,039 cells), with the coarse-to-fine kmeans.py of the
# kmeans branch, on a 2-core machine shared with other work: k=8192 in 82 s
# (68 s of CPU, 45 s of it the hard start's k-means), k=16384 in 299 s
# (178 s of CPU, 248 s before the first EM step); peak memory 267-268 MB.
# k=16384 is at the 5-minute limit, so 8192.
MAX_COMPONENTS = 8192

# Matrix products are made in pieces of at most this many multiply-adds
# (:func:`_matmul`): OpenBLAS runs those on one thread, and splits larger ones
# over threads that stall when the cores are busy (noisy 10.7 MP photo, k=256,
# one exact E-step on a loaded 2-core machine: 0.80 s threaded, 0.33 s not;
# rocket.jpg, k=1024: 0.6 s against 0.09 s).
_BLOCK_MULADDS = 1 << 18

# Rows per block of the E-step: _BLOCK_ROWS_AT_ONE / sqrt(n_components), within
# [_MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS].  Any size gives the same result.  Smaller
# blocks have tighter boxes (fewer components kept) but cost more Python per
# row.  One E-step's CPU time against rows per block: noisy 10.7 MP photo at
# k=256, 0.39 s at 256, 0.34 s at 512 (51 of 256 components kept on average),
# 0.36 s at 1024; rocket.jpg at k=1024, 0.094 s at 128, 0.090 s at 256
# (190 kept); at k=4096, 0.21 s at 64, 0.18 s at 128 (321 kept), 0.21 s at 256.
_BLOCK_ROWS_AT_ONE = 8192
_MIN_BLOCK_ROWS = 128
_MAX_BLOCK_ROWS = 4096

# A component holding less than this share of the total weight is dead (a
# millionth of a pixel of a 1000-megapixel image) and is re-seeded.
_MIN_SHARE = 1e-15

# The truncated E-step first evaluates the components whose bound is within
# this many nats of the best one, then adds any the rule says it needs.  Only
# the speed depends on it: one E-step on rocket.jpg at k=1024 takes 0.07 s
# from 10 to 60 alike, 0.27 s when every component is evaluated first.
_FIRST_GUESS = 40.0

# ---------------------------------------------------------------- heuristics

# Side of a cell of the coarse histogram, in colour levels (6 bits a channel).
# Noisy 10.7 MP photo (546,363 colours; 136,719, 26,039 and 4,414 cells at
# widths 2, 4 and 8), k=256, seed 0: fit CPU 2.8, 3.4, 3.6 s and mean
# log-likelihood -11.2446, -11.2469, -11.2494 at widths 4, 6, 8 (today's
# code: -11.2469).  Coarser cells leave more iterations to the exact EM.
# When there are fewer cells than components, cells of side 2 are tried
# before the samples themselves.
_COARSE_WIDTHS = (4, 2)

# A heavy sample whose own component would raise the mean log-likelihood per
# unit weight by at least this much gets one (see _spiked), at most _MAX_SPIKES
# times a fit, each kept only if EM from it ends higher.  The bar is far above
# tol: only colours holding a large share of the pixels clear it.  On
# skimage's astronaut at k=20 (black background) spikes raise the mean
# log-likelihood from -11.386 to -11.298 (seed 1) and from -11.361 to -11.288
# (seed 2) for 0.1-0.3 s of CPU; on rocket.jpg and coffee none is proposed.
_SPIKE_MIN_GAIN = 0.05
_MAX_SPIKES = 3

# Each EM stops after at most _EM_WORK / (n_rows * n_components) iterations
# (but at least _MIN_EM_ITER, at most max_iter): at large k EM keeps gaining
# more than tol per iteration for hundreds of iterations as components shrink
# onto single colours.  rocket.jpg (45,526 colours) at k=1024: 30 exact
# iterations, 4.5 s of CPU, mean log-likelihood -10.09 -> -9.38, still rising
# 0.008 per iteration.  The limit leaves every k <= 256 on the photos of the
# bench to tol (the noisy 10.7 MP photo at k=256 converges in 3 to 5).
_EM_WORK = 1.5e9
_MIN_EM_ITER = 5


class GMMResult(NamedTuple):
    """What :func:`fit_gmm` returns.

    Attributes
    ----------
    weights : ndarray of shape (n_components,)
        Mixing weights, positive, summing to one.
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray of shape (n_components, n_features, n_features)
        Each includes the floor ``reg_covar`` on its diagonal.
    precisions_cholesky : ndarray of shape (n_components, n_features, n_features)
        Upper-triangular ``P`` with ``P @ P.T`` the inverse of the covariance.
    log_likelihood : ndarray of shape (n_iter + 1,)
        Mean log-likelihood per unit of sample weight (per pixel) in the exact
        EM run that is returned: entry 0 for the model it started from (the
        coarse fit, or the last kept spike), entry ``i`` after ``i``
        iterations.  It never falls except by a dead component's re-seeding.
        The last entry belongs to the returned parameters.
    n_iter : int
        EM iterations of that run.
    converged : bool
        Whether the last iteration changed the mean log-likelihood by less
        than ``tol`` (rather than stopping at ``max_iter``).
    n_runs : int
        EM runs on the exact samples: the first, and one for each spike tried.
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    log_likelihood: np.ndarray
    n_iter: int
    converged: bool
    n_runs: int


def fit_gmm(X, n_components, *, sample_weight=None, init="k-means++", reg_covar=REG_COVAR,
            tol=1e-3, max_iter=100, init_iter=10, rng=None, callback=None):
    """Fit a Gaussian mixture with full covariances to ``X`` by EM.

    Hard start, EM on a coarse histogram then on the samples, spikes: see the
    module docstring.  A component whose total responsibility falls below
    ``1e-15`` of the total weight is re-seeded as a tight component
    (covariance ``reg_covar`` times the identity) on the sample the mixture
    explains worst, the analogue of moving an empty k-means cluster; only
    such an iteration can lower the log-likelihood.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
        The data, finite.
    n_components : int
        Number of components, at least 1 and at most the number of distinct
        samples with positive weight.
    sample_weight : array_like of shape (n_samples,), optional
        Non-negative weight of each sample, like a repeat count (default: ones).
    init : {"k-means++", "random"}
        Seeding of the hard start's k-means (see :func:`kmeans.kmeans`).
    reg_covar : float
        Added to the diagonal of every covariance, > 0.  The default, 1/12, is
        the variance of the rounding of a real colour to an integer level, the
        right floor for pixel values on 0..255.  For data on another scale,
        scale it accordingly.
    tol : float
        Stop each EM when the mean log-likelihood per unit weight changes by
        less than this, >= 0.
    max_iter : int
        Most iterations of each EM (on the histogram, on the samples), >= 1.
        At large ``n_samples * n_components`` fewer (``_EM_WORK``).
    init_iter : int
        Most Lloyd iterations of the hard start's k-means, >= 1.
    rng : numpy.random.Generator, optional
        Source of randomness for the k-means seeding (default:
        ``np.random.default_rng(0)``).  The same generator state gives the same
        result.
    callback : callable, optional
        Called with a :class:`kmeans.Progress` as the fit goes: k-means's own
        (passed through), then stage ``"coarse EM"`` and ``"EM"`` (run ``r``
        of at most ``1 + _MAX_SPIKES``) at the start of each EM (iteration 0)
        and after each of its iterations, with the mean log-likelihood.

    Returns
    -------
    GMMResult
    """
    X, weights = kmeans.check_data(X, sample_weight)
    n_positive = int(np.count_nonzero(weights))
    if not 1 <= n_components <= n_positive:
        raise ValueError(f"n_components={n_components} should be >= 1 and <= the number "
                         f"of samples with positive weight ({n_positive}).")
    if not (np.isfinite(reg_covar) and reg_covar > 0):
        raise ValueError(f"reg_covar={reg_covar} should be a positive number.")
    if not tol >= 0:
        raise ValueError(f"tol={tol} should be >= 0.")
    if max_iter < 1 or init_iter < 1:
        raise ValueError(f"max_iter={max_iter} and init_iter={init_iter} should be >= 1.")
    rng = np.random.default_rng(0) if rng is None else rng
    centre = np.average(X, axis=0, weights=weights)
    exact = _sample_rows(X - centre, weights, n_components)
    n_distinct = int(np.count_nonzero(exact.weights))
    if n_components > n_distinct:
        raise ValueError(f"n_components={n_components} should be <= the number of distinct "
                         f"samples with positive weight ({n_distinct}).")
    settings = _Settings(reg_covar, tol, max_iter, callback)
    mixture, coarse = _hard_start(exact, n_components, init, init_iter, rng, settings)
    if coarse is not None:
        mixture = _em(coarse, mixture, settings, "coarse EM", run=1).mixture
    run, n_runs = _with_spikes(exact, _em(exact, mixture, settings, "EM", run=1), settings)
    best = run.mixture
    return GMMResult(best.weights, best.means + centre, best.covariances,
                     best.precisions_cholesky, np.array(run.history), len(run.history) - 1,
                     run.converged, n_runs)


def predict(X, fit):
    """The component with the highest responsibility for each sample (the first on ties).

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
    fit : GMMResult

    Returns
    -------
    ndarray of shape (n_samples,), intp
    """
    rows, mixture = _rows_and_mixture(X, None, fit)
    labels = np.empty(len(rows.weights), dtype=np.intp)
    for block, components, resp, _ in _blockwise(rows, mixture):
        labels[block] = components[resp.argmax(axis=0)]
    return labels[rows.of_sample]


def score(X, fit, sample_weight=None):
    """Mean log-likelihood per unit of sample weight (per pixel).

    By the truncated E-step: within 1e-10 of the plain one (module docstring).

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
    fit : GMMResult
    sample_weight : array_like of shape (n_samples,), optional

    Returns
    -------
    float
    """
    rows, mixture = _rows_and_mixture(X, sample_weight, fit)
    total = sum(rows.weights[block] @ row_ll for block, _, _, row_ll in _blockwise(rows, mixture))
    return total / rows.weights.sum()


def log_density(X, means, precisions_cholesky):
    """Log density of each sample under each component, mixing weights left out.

    ``log N(x | mu_j, S_j)`` with ``inv(S_j) = P_j P_j^T``, by the same
    polynomial as the fit.  The whole ``(n_samples, n_components)`` array is
    returned: for inspection and tests, not for large data.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
    means : ndarray of shape (n_components, n_features)
    precisions_cholesky : ndarray of shape (n_components, n_features, n_features)

    Returns
    -------
    ndarray of shape (n_samples, n_components)
    """
    X = np.asarray(X, dtype=np.float64)
    centre = X.mean(axis=0)
    mixture = _Mixture(np.ones(len(means)), means - centre, None, precisions_cholesky)
    return (_components(mixture).coef @ _monomials((X - centre).T)).T


def responsibilities(X, fit):
    """Posterior probability of each component for each sample, and its log-likelihood.

    By the plain E-step over every component.  Whole arrays are returned: for
    inspection and tests, not for large data.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
    fit : GMMResult

    Returns
    -------
    resp : ndarray of shape (n_samples, n_components)
        Rows sum to one.
    log_likelihood : ndarray of shape (n_samples,)
        ``log(sum_j weights[j] N(x | mu_j, S_j))`` of each sample.
    """
    rows, mixture = _rows_and_mixture(X, None, fit)
    resp = np.empty((len(rows.weights), len(fit.weights)))
    sample_ll = np.empty(len(rows.weights))
    for block, _, block_resp, row_ll in _blockwise(rows, mixture, _full_log_prob):
        resp[block], sample_ll[block] = block_resp.T, row_ll
    return resp[rows.of_sample], sample_ll[rows.of_sample]


def _rows_and_mixture(X, sample_weight, fit):
    """Rows of checked ``X`` and the fitted mixture, both centred on ``X``'s mean."""
    X, weights = kmeans.check_data(X, sample_weight)
    centre = X.mean(axis=0)
    mixture = _Mixture(fit.weights, fit.means - centre, fit.covariances,
                       fit.precisions_cholesky)
    return _sample_rows(X - centre, weights, len(fit.weights)), mixture


# ---------------------------------------------------------------- the fit

class _Mixture(NamedTuple):
    """The parameters, means in the centred coordinates of the rows."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray


class _Rows(NamedTuple):
    """What EM fits: samples (or cells of samples) in a spatial order, in blocks.

    Attributes
    ----------
    phi : ndarray of shape (n_monomials, n_rows)
        Each row's monomials (:func:`_monomials`); for a cell of samples, their
        weighted mean over the cell.  ``phi[1:1 + n_features]`` are the points.
    weights : ndarray of shape (n_rows,)
    blocks : list of slice
        Consecutive rows, near each other along a Z-order curve.
    boxes : list of (ndarray, ndarray)
        Each block's bounding box ``(low, high)``, of shape (n_features,) each.
    of_sample : ndarray of shape (n_samples,), intp
        The row holding each sample given (equal samples share one).
    """

    phi: np.ndarray
    weights: np.ndarray
    blocks: list
    boxes: list
    of_sample: np.ndarray


class _Run(NamedTuple):
    """One EM run: where it ended, its history, and its last E-step's log-likelihoods."""

    mixture: _Mixture
    history: list
    converged: bool
    row_ll: np.ndarray


class _Settings(NamedTuple):
    """The settings every EM run of a fit shares."""

    reg_covar: float
    tol: float
    max_iter: int
    callback: object


def _hard_start(exact, n_components, init, init_iter, rng, settings):
    """k-means on the coarse histogram, each cell wholly in its cluster: the first mixture.

    The histogram is the coarsest of ``_COARSE_WIDTHS`` with at least
    ``n_components`` cells; the samples themselves when none of them has, or
    when it would not at least halve the rows.

    Returns
    -------
    mixture : _Mixture
    coarse : _Rows or None
        The cells the mixture was made on, None if on the samples.
    """
    for width in _COARSE_WIDTHS:
        coarse = _cell_rows(exact, width, n_components)
        if len(coarse.weights) >= n_components:
            break
    if len(coarse.weights) < n_components or 2 * len(coarse.weights) > len(exact.weights):
        coarse = None
    rows = exact if coarse is None else coarse
    labels = kmeans.kmeans(_points(rows), n_components, sample_weight=rows.weights, init=init,
                           n_init=1, max_iter=init_iter, rng=rng,
                           callback=settings.callback).labels
    stats = np.stack([np.bincount(labels, weights=rows.weights * phi, minlength=n_components)
                      for phi in rows.phi], axis=1)
    # No likelihood yet: a dead cluster (one of zero weight) goes to the first rows.
    return _m_step(rows, stats, settings.reg_covar, np.zeros(len(rows.weights))), coarse


def _em(rows, mixture, settings, stage, run):
    """EM from ``mixture`` until the mean log-likelihood changes by less than ``settings.tol``.

    Returns
    -------
    _Run
        ``history`` holds the mean log-likelihood of ``mixture`` as given, then
        after each iteration.
    """
    work = len(rows.weights) * len(mixture.weights)
    max_iter = int(np.clip(_EM_WORK // work, _MIN_EM_ITER, settings.max_iter))
    # How many runs EM makes is known only at the end (a spike may or may not pay):
    # each reports its own number and no total.
    n_runs = 1
    history = []
    for n_iter in range(max_iter + 1):
        mean_ll, stats, row_ll = _e_step(rows, mixture)
        history.append(mean_ll)
        if settings.callback is not None:
            settings.callback(kmeans.Progress(stage, run, n_runs, n_iter, max_iter, mean_ll))
        if n_iter > 0 and abs(history[-1] - history[-2]) < settings.tol:
            return _Run(mixture, history, True, row_ll)
        if n_iter < max_iter:
            mixture = _m_step(rows, stats, settings.reg_covar, row_ll)
    return _Run(mixture, history, False, row_ll)


def _with_spikes(rows, run, settings):
    """Up to ``_MAX_SPIKES`` spikes (:func:`_spiked`) after ``run``; each kept if it ends higher.

    Returns
    -------
    run : _Run
        The best run.
    n_runs : int
        EM runs made, ``run`` included.
    """
    n_runs = 1
    for _ in range(_MAX_SPIKES):
        start = _spiked(rows, run, settings.reg_covar)
        if start is None:
            break
        n_runs += 1
        trial = _em(rows, start, settings, "EM", run=n_runs)
        if trial.history[-1] <= run.history[-1]:
            break
        run = trial
    return run, n_runs


def _e_step(rows, mixture, log_prob_of=None):
    """One pass over the rows: mean log-likelihood, the M-step's statistics, each row's.

    Parameters
    ----------
    rows : _Rows
    mixture : _Mixture
    log_prob_of : callable, optional
        How a block is scored: :func:`_truncated_log_prob` (default) or
        :func:`_full_log_prob`.

    Returns
    -------
    mean_ll : float
        Mean log-likelihood per unit weight under ``mixture``.
    stats : ndarray of shape (n_components, n_monomials)
        Responsibility-weighted sums of the rows' monomials per component:
        mass, first moments, second moments.
    row_ll : ndarray of shape (n_rows,)
        Each row's log-likelihood.
    """
    stats = np.zeros((len(mixture.weights), len(rows.phi)))
    row_ll = np.empty(len(rows.weights))
    for block, components, resp, block_ll in _blockwise(rows, mixture, log_prob_of):
        resp *= rows.weights[block]
        stats[components] += _matmul(resp, rows.phi[:, block].T)
        row_ll[block] = block_ll
    return rows.weights @ row_ll / rows.weights.sum(), stats, row_ll


def _m_step(rows, stats, reg_covar, row_ll):
    """Weights, means, covariances and precision factors from the E-step's statistics.

    A dead component (almost no mass) becomes a tight Gaussian (covariance
    ``reg_covar`` times the identity) on the row the mixture explains worst
    (lowest ``row_ll``), weighted by that row's weight.

    Returns
    -------
    _Mixture
    """
    n_features = _n_features(rows.phi)
    mass = stats[:, 0]
    nk = mass + 10 * np.finfo(np.float64).eps
    means = stats[:, 1:1 + n_features] / nk[:, None]
    covariances = _symmetric(stats[:, 1 + n_features:], n_features) / nk[:, None, None]
    covariances -= means[:, :, None] * means[:, None, :]
    covariances += reg_covar * np.eye(n_features)
    dead = np.flatnonzero(mass < _MIN_SHARE * rows.weights.sum())
    if len(dead):
        worst = np.argsort(np.where(rows.weights > 0, row_ll, np.inf), kind="stable")[:len(dead)]
        means[dead] = _points(rows)[worst]
        covariances[dead] = reg_covar * np.eye(n_features)
        nk[dead] = rows.weights[worst]
    return _Mixture(nk / nk.sum(), means, covariances, _precision_cholesky(covariances))


def _spiked(rows, run, reg_covar):
    """The mixture with its lightest component moved onto a heavy, badly explained sample.

    A sample holding a share ``p`` of the weight (a colour repeated over a flat
    area: a black background, clipped highlights) would raise the mean
    log-likelihood by about ``p * (log(exp(ll) + p * peak) - ll)`` with a
    component of weight ``p`` and covariance ``reg_covar * I`` (density
    ``peak`` at its mean) on it, ``ll`` being its log-likelihood now.  EM finds
    such a spike only slowly, across a long plateau, and often stops before.

    Returns
    -------
    _Mixture or None
        None when no sample would gain at least ``_SPIKE_MIN_GAIN``.
    """
    n_features = _n_features(rows.phi)
    share = rows.weights / rows.weights.sum()
    log_peak = -0.5 * n_features * np.log(2 * np.pi * reg_covar)
    with np.errstate(divide="ignore"):
        gain = share * (np.logaddexp(run.row_ll, np.log(share) + log_peak) - run.row_ll)
    best = int(np.argmax(gain))
    if gain[best] < _SPIKE_MIN_GAIN:
        return None
    mixture = run.mixture
    lightest = int(np.argmin(mixture.weights))
    weights, means, covariances = (mixture.weights.copy(), mixture.means.copy(),
                                   mixture.covariances.copy())
    means[lightest] = _points(rows)[best]
    covariances[lightest] = reg_covar * np.eye(n_features)
    weights[lightest] = share[best]
    return _Mixture(weights / weights.sum(), means, covariances,
                    _precision_cholesky(covariances))


# ---------------------------------------------------------------- the E-step's kernels

class _Components(NamedTuple):
    """What scoring a block needs of the mixture, computed once per E-step.

    ``coef @ phi`` is ``log(weights[j] N_j(x))`` for monomials ``phi``;
    ``peak[j]`` is its largest value (at ``x = means[j]``).  For the bounds,
    with ``P`` the precision factors: ``x @ whiten`` is ``P_j^T x`` for every
    ``j`` (shape (n_components * n_features,)), ``abs_whiten`` the same with
    ``|P|``, and ``whitened_means`` holds ``P_j^T mu_j``.
    """

    coef: np.ndarray
    peak: np.ndarray
    whiten: np.ndarray
    abs_whiten: np.ndarray
    whitened_means: np.ndarray


def _blockwise(rows, mixture, log_prob_of=None):
    """Score the rows block by block: the one loop over the data.

    Yields
    ------
    block : slice
        Rows of the block.
    components : ndarray of shape (n_kept,), intp
        The components scored for it, increasing.
    resp : ndarray of shape (n_kept, n_block_rows)
        Their responsibilities for each row of the block.
    row_ll : ndarray of shape (n_block_rows,)
        Each row's log-likelihood.
    """
    log_prob_of = _truncated_log_prob if log_prob_of is None else log_prob_of
    components = _components(mixture)
    for block, box in zip(rows.blocks, rows.boxes):
        yield (block, *log_prob_of(components, rows.phi[:, block], box))


def _full_log_prob(components, phi, box):
    """The plain E-step on a block: every component for every row.

    Parameters
    ----------
    components : _Components
    phi : ndarray of shape (n_monomials, n_block_rows)
    box : (ndarray, ndarray)
        The block's bounding box (not needed here).

    Returns
    -------
    kept : ndarray of shape (n_components,)
        ``arange(n_components)``.
    resp : ndarray of shape (n_components, n_block_rows)
    row_ll : ndarray of shape (n_block_rows,)
    """
    return (np.arange(len(components.coef)), *_normalised(_matmul(components.coef, phi)))


def _truncated_log_prob(components, phi, box):
    """The truncated E-step on a block: only the components that can matter there.

    Component ``j`` is left out only if its bound over the block's box
    (:func:`_upper_bounds`) is below the lowest log-likelihood of the block's
    rows, over the components kept, plus ``log(MAX_DROPPED / n_components)``.
    The first guess is every component within ``_FIRST_GUESS`` of the best
    bound; any that fails the test once they are scored is added, and the
    block scored again.  Takes and returns what :func:`_full_log_prob` does.
    """
    upper = _upper_bounds(components, box)
    log_eps = np.log(MAX_DROPPED / len(upper))
    keep = upper >= upper.max() - _FIRST_GUESS
    while True:
        kept = np.flatnonzero(keep)
        resp, row_ll = _normalised(_matmul(components.coef[kept], phi))
        missing = ~keep & (upper >= row_ll.min() + log_eps)
        if not missing.any():
            return kept, resp, row_ll
        keep |= missing


def _upper_bounds(components, box):
    """An upper bound on ``log(weights[j] N_j(x))`` over the box, for each component.

    The Mahalanobis distance is ``||z||^2`` with ``z = P^T (x - mu)``, linear
    in ``x``: over the box each ``z_i`` stays within its value at the box's
    centre plus or minus ``sum_a |P[a, i]| half_width[a]``, so ``||z||^2`` is at
    least the sum of the squared distances of those intervals from zero.

    Parameters
    ----------
    components : _Components
    box : (ndarray, ndarray)
        Low and high corners, of shape (n_features,) each.

    Returns
    -------
    ndarray of shape (n_components,)
    """
    low, high = box
    centre, half = (low + high) / 2, (high - low) / 2
    z = centre @ components.whiten - components.whitened_means
    gap = np.maximum(np.abs(z) - half @ components.abs_whiten, 0.0)
    gap *= gap
    return components.peak - 0.5 * gap.reshape(len(components.peak), -1).sum(axis=1)


def _normalised(log_prob):
    """Responsibilities and log-likelihoods from log probabilities, by log-sum-exp.

    Parameters
    ----------
    log_prob : ndarray of shape (n_kept, n_rows)
        Overwritten by the responsibilities.

    Returns
    -------
    resp : ndarray of shape (n_kept, n_rows)
        Columns sum to one.
    row_ll : ndarray of shape (n_rows,)
    """
    peak = log_prob.max(axis=0)
    log_prob -= peak
    resp = np.exp(log_prob, out=log_prob)
    norm = resp.sum(axis=0)
    resp /= norm
    return resp, peak + np.log(norm)


def _components(mixture):
    """``log weight + log N(x)`` of each component as a polynomial in the monomials of x.

    With the precision ``A = P P^T`` and ``b = A mu``::

        log N(x) = log det P - d/2 log(2 pi) - (x - mu)^T A (x - mu) / 2
                 = [log det P - d/2 log(2 pi) - mu.b / 2] + b.x - x^T A x / 2

    Returns
    -------
    _Components
        ``coef`` of shape (n_components, n_monomials), ordered like the rows of
        :func:`_monomials`.
    """
    prec_chol, means = mixture.precisions_cholesky, mixture.means
    n_features = means.shape[1]
    precision = prec_chol @ np.swapaxes(prec_chol, -1, -2)
    linear = np.einsum("kab,kb->ka", precision, means)
    log_det = np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)
    peak = np.log(mixture.weights) + log_det - 0.5 * n_features * np.log(2 * np.pi)
    constant = peak - 0.5 * np.einsum("ka,ka->k", means, linear)
    rows, cols = np.triu_indices(n_features)
    # x^T A x holds each off-diagonal product twice.
    quadratic = np.where(rows == cols, -0.5, -1.0) * precision[:, rows, cols]
    coef = np.column_stack([constant, linear, quadratic])
    whiten = np.swapaxes(prec_chol, 0, 1).reshape(n_features, -1)
    whitened_means = np.einsum("kai,ka->ki", prec_chol, means).reshape(-1)
    return _Components(coef, peak, whiten, np.abs(whiten), whitened_means)


def _matmul(a, b):
    """``a @ b``, by pieces of rows of ``a`` of at most ``_BLOCK_MULADDS`` multiply-adds each."""
    step = max(1, _BLOCK_MULADDS // (a.shape[1] * b.shape[1]))
    if step >= len(a):
        return a @ b
    product = np.empty((len(a), b.shape[1]))
    for start in range(0, len(a), step):
        np.matmul(a[start:start + step], b, out=product[start:start + step])
    return product


# ---------------------------------------------------------------- the rows

def _sample_rows(X, weights, n_components):
    """The samples as rows: equal ones merged (weights summed), in spatial order.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Centred samples.
    weights : ndarray of shape (n_samples,)
    n_components : int
        Of the mixtures that will score them (it sizes the blocks).

    Returns
    -------
    _Rows
    """
    order = _spatial_order(X)
    ordered = X[order]
    new = np.ones(len(X), dtype=bool)
    new[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    group = np.cumsum(new) - 1
    of_sample = np.empty(len(X), dtype=np.intp)
    of_sample[order] = group
    merged = np.bincount(group, weights=weights[order])
    return _in_blocks(_monomials(ordered[new].T), merged, of_sample, n_components)


def _cell_rows(exact, width, n_components):
    """The occupied cells of a grid over the samples, as rows of pooled monomials.

    A cell's row holds the weighted mean of its samples' monomials: their
    mean, and their second moments, which carry the cell's own spread.  Cells
    of zero weight are left out.

    Parameters
    ----------
    exact : _Rows
        The samples.
    width : float
        Side of a cell (see :func:`kmeans.coarse_histogram`).
    n_components : int

    Returns
    -------
    _Rows
        ``of_sample`` gives each row of ``exact`` its cell.
    """
    _, cell_weights, cell_of_row = kmeans.coarse_histogram(_points(exact), exact.weights, width)
    pooled = np.stack([np.bincount(cell_of_row, weights=exact.weights * phi,
                                   minlength=len(cell_weights)) for phi in exact.phi])
    occupied = cell_weights > 0
    phi = pooled[:, occupied] / cell_weights[occupied]
    order = _spatial_order(phi[1:1 + _n_features(phi)].T)
    cell = np.full(len(cell_weights), -1)
    cell[np.flatnonzero(occupied)[order]] = np.arange(len(order))
    return _in_blocks(phi[:, order], cell_weights[occupied][order], cell[cell_of_row],
                      n_components)


def _in_blocks(phi, weights, of_sample, n_components):
    """Rows cut into blocks (see ``_BLOCK_ROWS_AT_ONE``), with the bounding box of each."""
    block_rows = int(np.clip(_BLOCK_ROWS_AT_ONE / np.sqrt(n_components),
                             _MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS))
    starts = np.arange(0, len(weights), block_rows)
    points = phi[1:1 + _n_features(phi)]
    lows = np.minimum.reduceat(points, starts, axis=1).T
    highs = np.maximum.reduceat(points, starts, axis=1).T
    blocks = [slice(start, start + block_rows) for start in starts]
    return _Rows(phi, weights, blocks, list(zip(lows, highs)), of_sample)


def _spatial_order(points):
    """An order of the rows along a Z-order (Morton) curve; equal rows end up adjacent.

    The curve runs over a grid of ``2**bits`` levels a feature spanning the
    points; rows in one grid cell are ordered lexicographically.
    """
    n_features = points.shape[1]
    bits = max(1, min(10, 62 // n_features))
    low, span = points.min(axis=0), np.ptp(points, axis=0)
    levels = (points - low) / np.where(span > 0, span, 1.0) * (2 ** bits - 1)
    levels = levels.astype(np.int64)
    # Each level's bits spread n_features apart; the features' interleave.
    values = np.arange(2 ** bits)
    spread = np.zeros(2 ** bits, dtype=np.int64)
    for bit in range(bits):
        spread |= ((values >> bit) & 1) << (bit * n_features)
    code = np.zeros(len(points), dtype=np.int64)
    for a in range(n_features):
        code |= spread[levels[:, a]] << (n_features - 1 - a)
    return np.lexsort((*points.T[::-1], code))


def _points(rows):
    """The rows' points (for cells, their means), shape (n_rows, n_features)."""
    return rows.phi[1:1 + _n_features(rows.phi)].T


def _n_features(phi):
    """``d`` from the number of monomials ``1 + d + d (d + 1) / 2``."""
    return int(round((np.sqrt(8 * len(phi) + 1) - 3) / 2))


# ---------------------------------------------------------------- numerics

def _precision_cholesky(covariances):
    """Upper-triangular ``P`` with ``P P^T = inv(covariance)``, for each component.

    With ``covariance = L L^T`` (Cholesky), ``P = L^{-T}``: ``L^{-1}`` comes from
    forward substitution (:func:`_inverse_lower`); no covariance is inverted.

    Parameters
    ----------
    covariances : ndarray of shape (n_components, n_features, n_features)

    Returns
    -------
    ndarray of shape (n_components, n_features, n_features)
    """
    try:
        chol = np.linalg.cholesky(covariances)
    except np.linalg.LinAlgError:
        raise ValueError("a covariance matrix is not positive definite; "
                         "increase reg_covar.") from None
    return np.swapaxes(_inverse_lower(chol), -1, -2)


def _inverse_lower(lower):
    """Inverses of lower-triangular matrices by forward substitution.

    Row ``i`` of ``L Y = I`` gives ``Y[i, j] = -sum_{j <= m < i} L[i, m] Y[m, j] / L[i, i]``
    below the diagonal and ``1 / L[i, i]`` on it; the result is exactly
    lower-triangular.

    Parameters
    ----------
    lower : ndarray of shape (n_components, n_features, n_features)

    Returns
    -------
    ndarray of shape (n_components, n_features, n_features)
    """
    n_features = lower.shape[-1]
    inverse = np.zeros_like(lower)
    for i in range(n_features):
        inverse[:, i, i] = 1.0 / lower[:, i, i]
        for j in range(i):
            inverse[:, i, j] = -np.einsum("km,km->k", lower[:, i, j:i],
                                          inverse[:, j:i, j]) / lower[:, i, i]
    return inverse


def _monomials(XT):
    """The monomials ``1, x_a, x_a x_b (a <= b)`` of each sample.

    Parameters
    ----------
    XT : ndarray of shape (n_features, n_rows)
        Samples as columns.

    Returns
    -------
    ndarray of shape (n_monomials, n_rows)
        ``n_monomials = 1 + d + d (d + 1) / 2``, the products in
        ``np.triu_indices(d)`` order.
    """
    n_features, n_rows = XT.shape
    rows, cols = np.triu_indices(n_features)
    phi = np.empty((1 + n_features + len(rows), n_rows))
    phi[0] = 1.0
    phi[1:1 + n_features] = XT
    np.multiply(XT[rows], XT[cols], out=phi[1 + n_features:])
    return phi


def _symmetric(upper, n_features):
    """Symmetric matrices from their upper triangles in ``np.triu_indices`` order.

    Parameters
    ----------
    upper : ndarray of shape (n_components, n_features * (n_features + 1) / 2)

    Returns
    -------
    ndarray of shape (n_components, n_features, n_features)
    """
    rows, cols = np.triu_indices(n_features)
    full = np.empty((len(upper), n_features, n_features))
    full[:, rows, cols] = upper
    full[:, cols, rows] = upper
    return full
