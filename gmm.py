"""A Gaussian mixture with full covariance matrices, fitted by EM, in NumPy.

The model says each sample ``x`` (a pixel colour) was drawn by first picking a
component ``j`` with probability ``weights[j]`` and then drawing ``x`` from the
normal distribution ``N(means[j], covariances[j])``.  Expectation-maximisation
alternates two steps that never lower the likelihood of the data:

* the E-step gives every sample its *responsibilities*, the posterior
  probability of each component given the sample (a soft clustering);
* the M-step re-estimates the weights, means and covariances as
  responsibility-weighted averages.

Every function takes ``X`` of shape ``(n_samples, n_features)`` with optional
non-negative per-sample weights: a sample of weight 3 counts exactly like three
copies of it, so the image compressor fits on the distinct colours of a photo,
weighted by their pixel counts, and maximises the same likelihood as over all
pixels.

How it is computed, for data with a handful of features (colour channels):

* Each covariance is factored by Cholesky, ``covariance = L L^T``; its triangular
  inverse gives the Cholesky factor of the precision matrix,
  ``P = L^{-T}`` with ``precision = P P^T``.  The log-determinant is the sum of
  ``log(diag(P))``.  No determinant or inverse of a covariance is ever formed.
* The log density ``log N(x) = log det P - d/2 log(2 pi) - ||(x - mu) @ P||^2 / 2``
  is a quadratic polynomial in ``x``.  Its coefficients are computed once per
  component per iteration, and each sample's monomials (``1``, ``x_a``,
  ``x_a x_b``) once per block of rows, so the log densities of a block for all
  components are one matrix product, and so are the M-step's sufficient
  statistics (mass, weighted sums, weighted outer products) with the same
  monomials.  The data are centred first, which keeps the cancellation in the
  expanded square harmless (about 1e-9 absolute on 0..255 data).
* The E-step normalises with log-sum-exp, one block of rows at a time: no
  ``(n_samples, n_components)`` array is ever held whole during a fit.
"""
from typing import NamedTuple

import numpy as np

import kmeans

# A covariance floor for pixel data on the integer scale 0..255.  A colour value
# v stands for the interval [v - 1/2, v + 1/2); spreading it uniformly over that
# interval has variance 1/12, the least variance a colour can honestly be said to
# have.  The floor keeps a component that collapses onto one colour (a flat
# background, a logo) a finite, well-conditioned Gaussian.
REG_COVAR = 1.0 / 12.0

# The largest number of components the command line accepts (hw2.py refuses more up front).
MAX_COMPONENTS = 1 << 16

# Blocks of rows for the E- and M-steps: at most this many multiply-adds per
# matrix product and this many rows.  OpenBLAS runs a matrix product of at most
# 2**18 multiply-adds, and a dot product of at most 10000 elements, on one
# thread; larger ones are split over threads whose start-up and synchronisation
# cost more than they save on these thin products, and stall badly when the
# cores are busy.  Blocks this size (about 1300 rows at 20 components) also
# stay in cache.
_BLOCK_MULADDS = 1 << 18
_BLOCK_ROWS = 8192

# Below this, a column sum of exp(log_prob - ceiling) is too small to trust (its
# terms may be subnormal): that sample is renormalised by its own maximum.
_UNDERFLOW = 1e-250

# A heavy sample whose own component would raise the mean log-likelihood per
# unit weight by at least this much gets one (see _spiked), at most _MAX_SPIKES
# times a fit, each kept only if EM from it ends higher.  The bar is far above
# tol: only colours holding a large share of the pixels clear it.
_SPIKE_MIN_GAIN = 0.05
_MAX_SPIKES = 3

# A component holding less than this share of the total weight is dead (a
# millionth of a pixel of a 1000-megapixel image) and is re-seeded.
_MIN_SHARE = 1e-15


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
        Mean log-likelihood per unit of sample weight (per pixel) of the run
        that is returned: entry 0 for the model it started from (the k-means
        start, or the last kept spike), entry ``i`` after ``i`` EM iterations.
        It never falls except by a dead component's re-seeding.  The last
        entry belongs to the returned parameters.
    n_iter : int
        EM iterations of that run.
    converged : bool
        Whether the last iteration changed the mean log-likelihood by less
        than ``tol`` (rather than stopping at ``max_iter``).
    n_runs : int
        EM runs made: the first, and one for each spike tried.
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    log_likelihood: np.ndarray
    n_iter: int
    converged: bool
    n_runs: int


def fit_gmm(X, n_components, *, sample_weight=None, reg_covar=REG_COVAR, tol=1e-3,
            max_iter=100, init_iter=10, init_means=None, rng=None, callback=None):
    """Fit a Gaussian mixture with full covariances to ``X`` by EM.

    The start is k-means (greedy k-means++ seeding and at most ``init_iter``
    Lloyd iterations, from :mod:`kmeans`): each sample is given wholly to its
    cluster and the first weights, means and covariances are those of the
    clusters.  EM then runs until one iteration raises the mean log-likelihood
    per unit weight by less than ``tol``, or ``max_iter`` iterations.

    A component whose total responsibility falls below ``1e-15`` of the total
    weight is re-seeded as a tight component (covariance ``reg_covar`` times
    the identity) on the sample the mixture explains worst, the mixture's
    analogue of moving an empty k-means cluster to the farthest sample.  Only
    such an iteration can lower the log-likelihood.

    Then *spikes*: EM is slow to give a value repeated over a large share of
    the weight (a black background, clipped highlights) a component of its
    own, and often stops on the plateau before it does.  When such a
    component would raise the mean log-likelihood by at least 0.05, the
    lightest component is moved onto that value (weight its share, covariance
    ``reg_covar`` times the identity) and EM runs again from there; the new
    run is kept only if it ends higher.  At most three such tries.  Repeated
    samples pool their weight for this, so it too treats a weighted sample
    like its copies.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
        The data, finite.
    n_components : int
        Number of components, at least 1 and at most the number of distinct
        samples with positive weight.
    sample_weight : array_like of shape (n_samples,), optional
        Non-negative weight of each sample, like a repeat count (default: ones).
    reg_covar : float
        Added to the diagonal of every covariance, > 0.  The default, 1/12, is
        the variance of the rounding of a real colour to an integer level, the
        right floor for pixel values on 0..255: a component on a single colour
        stays finite, while real clusters (photos vary by several levels) are
        barely touched.  For data on another scale, scale it accordingly.
    tol : float
        Stop when the mean log-likelihood changes by less than this, >= 0.
        It is per unit weight (per pixel), so it does not grow with the data.
    max_iter : int
        Most EM iterations, >= 1.
    init_iter : int
        Most Lloyd iterations of the k-means start, >= 1.
    init_means : array_like of shape (n_components, n_features), optional
        Start from these means instead of k-means: each sample is given to the
        nearest one, and the first model is built from those clusters.
    rng : numpy.random.Generator, optional
        Source of randomness for the k-means++ seeding (default:
        ``np.random.default_rng(0)``).  The same generator state gives the
        same result.
    callback : callable, optional
        Called as ``callback(iteration, mean_log_likelihood)`` for the start
        (iteration 0) and after each EM iteration, of every run: a spike's run
        counts again from 0.

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
    if init_means is None:
        rng = np.random.default_rng(0) if rng is None else rng
        labels = kmeans.kmeans(X, n_components, sample_weight=weights, n_init=1,
                               max_iter=init_iter, rng=rng).labels
    else:
        init_means = np.asarray(init_means, dtype=np.float64)
        if init_means.shape != (n_components, X.shape[1]):
            raise ValueError(f"init_means has shape {init_means.shape}, expected "
                             f"({n_components}, {X.shape[1]}).")
        labels = kmeans.assign(X, init_means)[0]
    return _fit(X, weights, labels, n_components, reg_covar, tol, max_iter, callback)


def predict(X, fit):
    """The component with the highest responsibility for each sample.

    Computed block by block: memory stays small however many samples there are.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
    fit : GMMResult

    Returns
    -------
    ndarray of shape (n_samples,), intp
    """
    XT, coef, _ = _prepare(X, fit.weights, fit.means, fit.precisions_cholesky)
    labels = np.empty(XT.shape[1], dtype=np.intp)
    for start, stop in _blocks(XT.shape[1], len(coef), len(XT)):
        labels[start:stop] = _argmax_rows(coef @ _monomials(XT[:, start:stop]))
    return labels


def score(X, fit, sample_weight=None):
    """Mean log-likelihood per unit of sample weight (per pixel), block by block.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
    fit : GMMResult
    sample_weight : array_like of shape (n_samples,), optional

    Returns
    -------
    float
    """
    X, weights = kmeans.check_data(X, sample_weight)
    XT, coef, ceiling = _prepare(X, fit.weights, fit.means, fit.precisions_cholesky)
    total = 0.0
    for start, stop in _blocks(len(X), len(coef), len(XT)):
        _, _, log_norm = _exp_log_prob(coef, ceiling, _monomials(XT[:, start:stop]))
        total += weights[start:stop] @ log_norm
    return total / weights.sum()


def log_density(X, means, precisions_cholesky):
    """Log density of each sample under each component, mixing weights left out.

    ``log N(x | mu_j, S_j)`` with ``inv(S_j) = P_j P_j^T``, by the same kernel
    as the fit.  The whole ``(n_samples, n_components)`` array is returned: for
    inspection and tests, not for large data.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
    means : ndarray of shape (n_components, n_features)
    precisions_cholesky : ndarray of shape (n_components, n_features, n_features)

    Returns
    -------
    ndarray of shape (n_samples, n_components)
    """
    XT, coef, ceiling = _prepare(X, np.ones(len(means)), means, precisions_cholesky)
    return (coef @ _monomials(XT)).T + ceiling


def responsibilities(X, fit):
    """Posterior probability of each component for each sample, and its log-likelihood.

    By the same kernel as the fit.  Whole arrays are returned: for inspection
    and tests, not for large data.

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
    XT, coef, ceiling = _prepare(X, fit.weights, fit.means, fit.precisions_cholesky)
    shifted, norm, log_norm = _exp_log_prob(coef, ceiling, _monomials(XT))
    shifted /= norm
    return shifted.T, log_norm


def _prepare(X, mix_weights, means, prec_chol):
    """Centred, transposed data and the polynomial coefficients in those coordinates."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    centre = X.mean(axis=0)
    coef, ceiling = _coefficients(mix_weights, means - centre, prec_chol)
    return _centred_transpose(X, centre), coef, ceiling


# ---------------------------------------------------------------- the fit

def _fit(X, weights, labels, n_components, reg_covar, tol, max_iter, callback):
    """EM on checked input from the clusters ``labels``, then spikes; returns a GMMResult."""
    centre = np.average(X, axis=0, weights=weights)
    XT = _centred_transpose(X, centre)
    stats = _hard_statistics(XT, weights, labels, n_components)
    params = _m_step(XT, weights, stats, reg_covar)
    run = _em(XT, weights, params, reg_covar, tol, max_iter, callback)
    groups = _equal_rows(XT)
    n_runs = 1
    for _ in range(_MAX_SPIKES):
        start = _spiked(XT, weights, run[0], reg_covar, groups)
        if start is None:
            break
        trial = _em(XT, weights, start, reg_covar, tol, max_iter, callback)
        n_runs += 1
        if trial[1][-1] <= run[1][-1]:
            break
        run = trial
    (mix_weights, means_c, covariances, prec_chol), history, converged = run
    return GMMResult(mix_weights, means_c + centre, covariances, prec_chol,
                     np.array(history), len(history) - 1, converged, n_runs)


def _em(XT, weights, params, reg_covar, tol, max_iter, callback):
    """EM from ``params`` until the change in mean log-likelihood is below ``tol``.

    Returns
    -------
    params : tuple of (mix_weights, means_c, covariances, precisions_cholesky)
    history : list of float
        Mean log-likelihood of ``params`` as given, then after each iteration.
    converged : bool
    """
    history, converged = [], False
    for n_iter in range(max_iter + 1):
        mean_ll, stats = _e_step(XT, weights, params)
        history.append(mean_ll)
        if callback is not None:
            callback(n_iter, mean_ll)
        if n_iter > 0 and abs(history[-1] - history[-2]) < tol:
            converged = True
            break
        if n_iter < max_iter:
            params = _m_step(XT, weights, stats, reg_covar)
    return params, history, converged


def _spiked(XT, weights, params, reg_covar, groups):
    """The mixture with its lightest component moved onto a heavy, badly explained value.

    A value holding a share ``p`` of the weight (a colour repeated over a flat
    area: a black background, clipped highlights) would raise the mean
    log-likelihood by about ``p * (log(exp(ll) + p * peak) - ll)`` with a
    component of weight ``p`` and covariance ``reg_covar * I`` (density
    ``peak`` at its mean) on it, ``ll`` being its log-likelihood now.  EM finds
    such a spike only slowly, across a long plateau, and often stops before.

    Parameters
    ----------
    XT : ndarray of shape (n_features, n_samples)
    weights : ndarray of shape (n_samples,)
    params : tuple of (mix_weights, means_c, covariances, precisions_cholesky)
    reg_covar : float
    groups : tuple of (first, group)
        From :func:`_equal_rows`: repeated samples pool their weight.

    Returns
    -------
    tuple of (mix_weights, means_c, covariances, precisions_cholesky) or None
        None when no value would gain at least ``_SPIKE_MIN_GAIN``.
    """
    mix_weights, means_c, covariances, prec_chol = params
    n_features = len(XT)
    first, group = groups
    coef, ceiling = _coefficients(mix_weights, means_c, prec_chol)
    value_ll = np.empty(len(first))
    for start, stop in _blocks(len(first), len(coef), n_features):
        _, _, value_ll[start:stop] = _exp_log_prob(coef, ceiling,
                                                   _monomials(XT[:, first[start:stop]]))
    share = np.bincount(group, weights=weights, minlength=len(first)) / weights.sum()
    log_peak = -0.5 * n_features * np.log(2 * np.pi * reg_covar)
    with np.errstate(divide="ignore"):
        gain = share * (np.logaddexp(value_ll, np.log(share) + log_peak) - value_ll)
    best = int(np.argmax(gain))
    if gain[best] < _SPIKE_MIN_GAIN:
        return None
    lightest = int(np.argmin(mix_weights))
    mix_weights, means_c, covariances = mix_weights.copy(), means_c.copy(), covariances.copy()
    means_c[lightest] = XT[:, first[best]]
    covariances[lightest] = reg_covar * np.eye(n_features)
    mix_weights[lightest] = share[best]
    mix_weights /= mix_weights.sum()
    return mix_weights, means_c, covariances, _precision_cholesky(covariances)


def _equal_rows(XT):
    """Group equal samples, so that a weighted sample and its copies look alike.

    Samples are grouped by one projection on a fixed direction with
    incommensurate components: equal samples always share a group; distinct
    ones could only by an exact coincidence of the projection (which at worst
    pools their weights for :func:`_spiked`'s proposal, never the fit itself).

    Returns
    -------
    first : ndarray of shape (n_groups,), intp
        One sample of each group.
    group : ndarray of shape (n_samples,), intp
        Group of each sample.
    """
    direction = np.sqrt(np.arange(2.0, 2.0 + len(XT)))
    keys, first, group = np.unique(direction @ XT, return_index=True, return_inverse=True)
    return first, group


def _centred_transpose(X, centre):
    """``(X - centre).T`` as a C-contiguous array of shape (n_features, n_samples)."""
    XT = np.array(X.T, order="C")
    XT -= centre[:, None]
    return XT


def _e_step(XT, weights, params):
    """One pass over the data: its mean log-likelihood and the M-step's statistics.

    Parameters
    ----------
    XT : ndarray of shape (n_features, n_samples)
        Centred data, transposed.
    weights : ndarray of shape (n_samples,)
    params : tuple of (mix_weights, means_c, covariances, precisions_cholesky)

    Returns
    -------
    mean_ll : float
        Mean log-likelihood per unit weight under ``params``.
    stats : ndarray of shape (n_components, n_monomials)
        Responsibility-weighted sums of each monomial (:func:`_monomials`) per
        component: mass, first moments, second moments.
    """
    mix_weights, means_c, _, prec_chol = params
    coef, ceiling = _coefficients(mix_weights, means_c, prec_chol)
    stats = np.zeros(coef.shape)
    total_ll = 0.0
    for start, stop in _blocks(XT.shape[1], len(coef), len(XT)):
        phi = _monomials(XT[:, start:stop])
        resp, norm, log_norm = _exp_log_prob(coef, ceiling, phi)
        w = weights[start:stop]
        total_ll += w @ log_norm
        resp *= w / norm
        stats += resp @ phi.T
    return total_ll / weights.sum(), stats


def _hard_statistics(XT, weights, labels, n_components):
    """The M-step's statistics when each sample belongs wholly to its label's component."""
    stats = np.zeros((n_components, _n_monomials(len(XT))))
    for start, stop in _blocks(XT.shape[1], n_components, len(XT)):
        resp = labels[start:stop] == np.arange(n_components)[:, None]
        stats += (resp * weights[start:stop]) @ _monomials(XT[:, start:stop]).T
    return stats


def _m_step(XT, weights, stats, reg_covar):
    """Weights, means, covariances and precision factors from the statistics.

    Dead components (almost no mass) are re-seeded by :func:`_reseed`.

    Returns
    -------
    tuple of (mix_weights, means_c, covariances, precisions_cholesky)
        ``means_c`` in the centred coordinates of ``XT``.
    """
    n_features = len(XT)
    mass = stats[:, 0]
    nk = mass + 10 * np.finfo(np.float64).eps
    means_c = stats[:, 1:1 + n_features] / nk[:, None]
    covariances = _symmetric(stats[:, 1 + n_features:], n_features) / nk[:, None, None]
    covariances -= means_c[:, :, None] * means_c[:, None, :]
    covariances += reg_covar * np.eye(n_features)
    dead = np.flatnonzero(mass < _MIN_SHARE * weights.sum())
    covariances[dead] = reg_covar * np.eye(n_features)
    params = (nk / nk.sum(), means_c, covariances, _precision_cholesky(covariances))
    if len(dead):
        params = _reseed(XT, weights, params, dead, reg_covar)
    return params


def _reseed(XT, weights, params, dead, reg_covar):
    """Move dead components onto the samples the live ones explain worst.

    Each becomes a tight Gaussian (covariance ``reg_covar`` times the identity)
    on one sample, weighted by that sample's share of the total weight.
    """
    mix_weights, means_c, covariances, prec_chol = params
    alive = np.ones(len(mix_weights), dtype=bool)
    alive[dead] = False
    coef, ceiling = _coefficients(mix_weights[alive], means_c[alive], prec_chol[alive])
    sample_ll = np.empty(XT.shape[1])
    for start, stop in _blocks(XT.shape[1], len(coef), len(XT)):
        _, _, sample_ll[start:stop] = _exp_log_prob(coef, ceiling, _monomials(XT[:, start:stop]))
    sample_ll[weights == 0] = np.inf
    worst = np.argsort(sample_ll, kind="stable")[:len(dead)]
    means_c, covariances, mix_weights = means_c.copy(), covariances.copy(), mix_weights.copy()
    means_c[dead] = XT[:, worst].T
    covariances[dead] = reg_covar * np.eye(len(XT))
    mix_weights[dead] = weights[worst] / weights.sum()
    mix_weights /= mix_weights.sum()
    return mix_weights, means_c, covariances, _precision_cholesky(covariances)


# ---------------------------------------------------------------- kernels

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


def _coefficients(mix_weights, means_c, prec_chol):
    """``log weight + log N(x)`` of each component as a polynomial in the monomials of x.

    With the precision ``A = P P^T`` and ``b = A mu``::

        log N(x) = log det P - d/2 log(2 pi) - (x - mu)^T A (x - mu) / 2
                 = [log det P - d/2 log(2 pi) - mu.b / 2] + b.x - x^T A x / 2

    The polynomial peaks at ``x = mu`` with ``log weight + log det P -
    d/2 log(2 pi)``; the largest such peak, the *ceiling*, is taken out of the
    constant terms so that their exponentials never overflow.

    Parameters
    ----------
    mix_weights : ndarray of shape (n_components,)
    means_c : ndarray of shape (n_components, n_features)
        Means in the coordinates of the monomials.
    prec_chol : ndarray of shape (n_components, n_features, n_features)

    Returns
    -------
    coef : ndarray of shape (n_components, n_monomials)
        Ordered like the rows of :func:`_monomials`, less the ceiling.
    ceiling : float
    """
    n_features = means_c.shape[1]
    precision = prec_chol @ np.swapaxes(prec_chol, -1, -2)
    linear = np.einsum("kab,kb->ka", precision, means_c)
    log_det = np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)
    peaks = np.log(mix_weights) + log_det - 0.5 * n_features * np.log(2 * np.pi)
    ceiling = float(peaks.max())
    constant = peaks - ceiling - 0.5 * np.einsum("ka,ka->k", means_c, linear)
    rows, cols = np.triu_indices(n_features)
    # x^T A x holds each off-diagonal product twice.
    quadratic = np.where(rows == cols, -0.5, -1.0) * precision[:, rows, cols]
    return np.column_stack([constant, linear, quadratic]), ceiling


def _n_monomials(n_features):
    return 1 + n_features + n_features * (n_features + 1) // 2


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
    phi = np.empty((_n_monomials(n_features), n_rows))
    phi[0] = 1.0
    phi[1:1 + n_features] = XT
    row = 1 + n_features
    for a in range(n_features):
        for b in range(a, n_features):
            np.multiply(XT[a], XT[b], out=phi[row])
            row += 1
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


def _exp_log_prob(coef, ceiling, phi):
    """Exponentiate a block's log probabilities and sum them over the components.

    ``log_prob = coef @ phi + ceiling`` never exceeds ``ceiling``, so
    ``exp(coef @ phi)`` cannot overflow.  It underflows only for a sample far
    from every component; such samples are shifted by their own largest log
    probability instead (log-sum-exp), so every sample keeps an exact
    log-likelihood.

    Parameters
    ----------
    coef : ndarray of shape (n_components, n_monomials)
    ceiling : float
    phi : ndarray of shape (n_monomials, n_rows)

    Returns
    -------
    shifted : ndarray of shape (n_components, n_rows)
        Each column is proportional to the sample's weighted densities:
        divided by ``norm`` it gives the responsibilities.
    norm : ndarray of shape (n_rows,)
        Column sums of ``shifted``, positive.
    log_norm : ndarray of shape (n_rows,)
        Each sample's log-likelihood, ``log(sum_j exp(log_prob[j]))``.
    """
    shifted = coef @ phi
    np.exp(shifted, out=shifted)
    norm = shifted.sum(axis=0)
    low = np.flatnonzero(norm < _UNDERFLOW)
    if len(low):
        log_prob = coef @ phi[:, low]
        peak = log_prob.max(axis=0)
        shifted[:, low] = np.exp(log_prob - peak)
        norm[low] = shifted[:, low].sum(axis=0)
    log_norm = np.log(norm)
    log_norm += ceiling
    if len(low):
        log_norm[low] += peak
    return shifted, norm, log_norm


def _argmax_rows(values):
    """Row index of the largest entry of each column (the first on ties).

    A running maximum over the few rows: much faster than ``argmax(axis=0)``.
    """
    best = values[0].copy()
    labels = np.zeros(values.shape[1], dtype=np.intp)
    for j in range(1, len(values)):
        better = values[j] > best
        labels[better] = j
        np.maximum(best, values[j], out=best)
    return labels


def _blocks(n_samples, n_components, n_features):
    """``(start, stop)`` row ranges small enough for one thread and the cache."""
    step = min(_BLOCK_ROWS,
               max(16, _BLOCK_MULADDS // (n_components * _n_monomials(n_features))))
    return [(start, min(start + step, n_samples)) for start in range(0, n_samples, step)]
