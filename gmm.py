"""A Gaussian mixture with full covariance matrices, fitted by EM, in NumPy.

Sample ``x_i`` (a distinct colour) has weight ``s_i`` (its pixel count); component ``j`` has
weight ``w_j``, mean ``mu_j`` and covariance ``Sigma_j``.  One EM iteration (:func:`_em`):

  E  log p_ij   = log w_j + log N(x_i | mu_j, Sigma_j)          _log_prob (or _log_prob_fast)
     log p(x_i) = m_i + log sum_j exp(log p_ij - m_i), m_i = max_j log p_ij        _e_step
     r_ij       = exp(log p_ij - log p(x_i))                                        _e_step
  M  N_j = sum_i s_i r_ij,   w_j = N_j / sum_j N_j                                  _m_step
     mu_j = sum_i s_i r_ij x_i / N_j                                                _m_step
     Sigma_j = sum_i s_i r_ij (x_i - mu_j)(x_i - mu_j)^T / N_j + reg I              _m_step
  stop when the mean log-likelihood sum_i s_i log p(x_i) / sum_i s_i moves < tol   _em

with ``log N(x | mu, Sigma) = sum_a log P_aa - d/2 log(2 pi) - |P^T (x - mu)|^2 / 2`` and
``P P^T = Sigma^-1``, ``P`` upper-triangular from Sigma's Cholesky factor
(:func:`_precision_cholesky`).  A sample of weight 3 counts as three copies of it.

Then the speed-ups: heuristics choosing where EM starts (:func:`_coarse_start`,
:func:`_with_spikes`) and :func:`_log_prob_fast`, exact within 1e-10.  Their constants'
measurements: bench/NOTES.md, section "Gaussian mixture", a table per constant.
"""
from typing import NamedTuple

import numpy as np

import kmeans

# The variance of rounding a colour to an integer level: keeps a one-colour component finite.
REG_COVAR = 1.0 / 12.0
# The most responsibility _log_prob_fast may leave out of any sample.
MAX_DROPPED = 1e-10
# Most components hw2.py accepts: 16384 takes 5 minutes (bench/NOTES.md, "MAX_COMPONENTS").
MAX_COMPONENTS = 8192
# Products this small run on one BLAS thread, faster on busy cores (table "_BLOCK_MULADDS").
_BLOCK_MULADDS = 1 << 18
# Rows per block (/ sqrt(k), clipped): tight boxes vs less Python (table "_BLOCK_ROWS_AT_ONE").
_BLOCK_ROWS_AT_ONE = 8192
_MIN_BLOCK_ROWS = 128
_MAX_BLOCK_ROWS = 4096
# Below this share of the weight (1e-6 pixel of a 1000 MP image) a component is re-seeded.
_MIN_SHARE = 1e-15
# Nats below the best bound scored first; only speed depends on it (table "_FIRST_GUESS").
_FIRST_GUESS = 40.0
# Heuristic: cell sides of the coarse start's histogram, coarsest first (table "_COARSE_WIDTHS").
_COARSE_WIDTHS = (4, 2)
# Heuristic: a spike must gain this much (>> tol), _MAX_SPIKES a fit (table "_SPIKE_MIN_GAIN").
_SPIKE_MIN_GAIN = 0.05
_MAX_SPIKES = 3
# Heuristic: EM iterations <= _EM_WORK / (n_rows * k): at large k EM creeps (table "_EM_WORK").
_EM_WORK = 1.5e9
_MIN_EM_ITER = 5


class GMMResult(NamedTuple):
    """What :func:`fit_gmm` returns.

    Attributes
    ----------
    weights : ndarray of shape (n_components,)
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray of shape (n_components, n_features, n_features)
    precisions_cholesky : ndarray of shape (n_components, n_features, n_features)
        Upper-triangular ``P`` with ``P @ P.T`` the inverse of the covariance.
    log_likelihood : ndarray of shape (n_iter + 1,)
        Mean log-likelihood per unit weight in the returned EM run, of the mixture it started
        from, then after each iteration; it never falls but when a dead component is re-seeded.
    n_iter : int
    converged : bool
        Whether the last iteration moved the mean log-likelihood by less than ``tol``.
    n_runs : int
        EM runs on the samples: the first and one per spike tried.
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
    """Fit a Gaussian mixture with full covariances to ``X`` by EM; a :class:`GMMResult`.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
    n_components : int
        At least 1, at most the number of distinct samples with positive weight.
    sample_weight : array_like of shape (n_samples,), optional
        Non-negative weights, like repeat counts (default: ones).
    init : {"k-means++", "random"}
        Seeding of the starting k-means (:func:`kmeans.kmeans`).
    reg_covar, tol : float
        Added to every covariance's diagonal (> 0; the default suits values on 0..255); the
        change of mean log-likelihood that stops an EM (>= 0).
    max_iter, init_iter : int
        Most iterations of each EM (fewer at large k, ``_EM_WORK``), of the k-means; >= 1.
    rng : numpy.random.Generator, optional
        For the k-means seeding (default: ``np.random.default_rng(0)``).
    callback : callable, optional
        Called with a :class:`kmeans.Progress`: k-means's, then stage ``"coarse EM"`` and
        ``"EM"`` (run ``r``) at iteration 0 of each EM and after each iteration.
    """
    X, weights = kmeans.check_data(X, sample_weight)
    if n_components < 1:
        raise ValueError(f"n_components={n_components} should be >= 1.")
    if not (np.isfinite(reg_covar) and reg_covar > 0):
        raise ValueError(f"reg_covar={reg_covar} should be a positive number.")
    if not tol >= 0:
        raise ValueError(f"tol={tol} should be >= 0.")
    if max_iter < 1 or init_iter < 1:
        raise ValueError(f"max_iter={max_iter} and init_iter={init_iter} should be >= 1.")
    # Centred, the monomials of _log_prob_fast keep their precision.
    centre = np.average(X, axis=0, weights=weights)
    exact = _sample_rows(X - centre, weights, n_components)
    n_distinct = int(np.count_nonzero(exact.weights))
    if n_components > n_distinct:
        raise ValueError(f"n_components={n_components} should be <= the number of distinct "
                         f"samples with positive weight ({n_distinct}).")
    rng = np.random.default_rng(0) if rng is None else rng
    settings = _Settings(reg_covar, tol, max_iter, callback)
    start = _coarse_start(exact, n_components, init, init_iter, rng, settings)
    run, n_runs = _with_spikes(exact, _em(exact, start, settings, "EM", run=1), settings)
    best = run.mixture._replace(means=run.mixture.means + centre)
    return GMMResult(*best, np.array(run.history), len(run.history) - 1, run.converged, n_runs)


def _em(rows, mixture, settings, stage, run):
    """EM from ``mixture``: E-step, stop test, M-step; a _Run, its history from ``mixture``."""
    work = len(rows.weights) * len(mixture.weights)
    max_iter = int(np.clip(_EM_WORK // work, _MIN_EM_ITER, settings.max_iter))
    history = []
    for n_iter in range(max_iter + 1):
        mean_ll, sums, row_ll = _e_step(rows, mixture)
        history.append(mean_ll)
        if settings.callback is not None:
            # The number of runs is known only at the end: each run reports n_runs=1.
            settings.callback(kmeans.Progress(stage, run, 1, n_iter, max_iter, mean_ll))
        if n_iter > 0 and abs(history[-1] - history[-2]) < settings.tol:
            return _Run(mixture, history, True, row_ll)
        if n_iter < max_iter:
            mixture = _m_step(rows, sums, settings.reg_covar, row_ll)
    return _Run(mixture, history, False, row_ll)


def _e_step(rows, mixture, log_prob_of=None):
    """The E-step, block by block with ``log_prob_of`` (default :func:`_log_prob_fast`).

    Returns ``sum_i s_i log p(x_i) / sum_i s_i``; the M-step's sums ``sum_i s_i r_ij phi_i``,
    ``phi_i = (1, x_i, x_i x_i^T)`` (:func:`_monomials`), shape (n_components, n_monomials);
    and ``log p(x_i)``, shape (n_rows,).
    """
    sums = np.zeros((len(mixture.weights), len(rows.phi)))
    row_ll = np.empty(len(rows.weights))
    for block, kept, log_prob in (log_prob_of or _log_prob_fast)(rows, mixture):
        peak = log_prob.max(axis=0)                                  # m_i
        # In place: new arrays of megabytes each block cost page faults (NOTES: "_e_step").
        log_prob -= peak
        resp = np.exp(log_prob, out=log_prob)                        # exp(log p_ij - m_i)
        total = resp.sum(axis=0)
        row_ll[block] = peak + np.log(total)                         # log p(x_i)
        resp *= rows.weights[block] / total                          # s_i r_ij
        sums[kept] += _matmul(resp, rows.phi[:, block].T)            # sum_i s_i r_ij phi_i
    return rows.weights @ row_ll / rows.weights.sum(), sums, row_ll


def _m_step(rows, sums, reg_covar, row_ll):
    """The M-step from the E-step's sums; ``Sigma_j`` as ``E[x x^T] - mu_j mu_j^T``.

    A dead component becomes a tight Gaussian (``reg_covar`` times the identity) on the row
    of lowest ``row_ll``, with that row's weight: the analogue of moving an empty cluster.
    """
    n_features = _n_features(rows.phi)
    nk = sums[:, 0] + 10 * np.finfo(np.float64).eps                 # N_j, never 0
    means = sums[:, 1:1 + n_features] / nk[:, None]                  # mu_j
    covariances = _symmetric(sums[:, 1 + n_features:], n_features) / nk[:, None, None]
    covariances -= means[:, :, None] * means[:, None, :]             # Sigma_j
    covariances += reg_covar * np.eye(n_features)
    dead = np.flatnonzero(sums[:, 0] < _MIN_SHARE * rows.weights.sum())
    if len(dead):
        worst = np.argsort(np.where(rows.weights > 0, row_ll, np.inf), kind="stable")[:len(dead)]
        means[dead] = _points(rows)[worst]
        covariances[dead] = reg_covar * np.eye(n_features)
        nk[dead] = rows.weights[worst]
    return _mixture(nk / nk.sum(), means, covariances)                # w_j


def _log_prob(rows, mixture):
    """``log w_j + log N(x_i | mu_j, Sigma_j)`` of sample rows, as one block of every row.

    Yields ``(block, kept, log_prob)``: every row, every component, shape (n_components, n_rows).
    """
    prec_chol = mixture.precisions_cholesky
    n_features = prec_chol.shape[-1]
    z = (_points(rows)[None] - mixture.means[:, None]) @ prec_chol       # P_j^T (x_i - mu_j)
    log_det = np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)
    constant = np.log(mixture.weights) + log_det - 0.5 * n_features * np.log(2 * np.pi)
    yield slice(None), np.arange(len(prec_chol)), constant[:, None] - 0.5 * (z ** 2).sum(axis=2)


# ---------------------------------------------------------------- the fitted mixture, applied

def predict(X, fit):
    """The most responsible component of each sample, shape (n_samples,), intp."""
    rows, mixture = _rows_and_mixture(X, None, fit)
    labels = np.empty(len(rows.weights), dtype=np.intp)
    for block, kept, log_prob in _log_prob_fast(rows, mixture):
        labels[block] = kept[log_prob.argmax(axis=0)]
    return labels[rows.of_sample]


def score(X, fit, sample_weight=None):
    """Mean log-likelihood per unit of sample weight (per pixel), a float."""
    return _e_step(*_rows_and_mixture(X, sample_weight, fit))[0]


def responsibilities(X, fit):
    """``r_ij`` (n_samples, n_components), ``log p(x_i)`` (n_samples,): plain, for small data."""
    rows, mixture = _rows_and_mixture(X, None, fit)
    [(_, _, log_prob)] = _log_prob(rows, mixture)
    row_ll = np.logaddexp.reduce(log_prob, axis=0)
    resp = np.exp(log_prob - row_ll)
    return resp.T[rows.of_sample], row_ll[rows.of_sample]


# ---------------------------------------------------------------- speed-ups

def _coarse_start(exact, n_components, init, init_iter, rng, settings):
    """The first mixture (a heuristic): k-means, then EM, on a coarse histogram's cells.

    The occupied cells of the coarsest grid of ``_COARSE_WIDTHS`` with ``n_components`` or
    more; EM scores a cell by its samples' expected log density, a lower bound of the
    likelihood (Verbeek, Nunnink & Vlassis, 2006).  Without enough cells, or with over half as
    many as samples: k-means on the samples, and no EM here.
    """
    for width in _COARSE_WIDTHS:
        cells = _cell_rows(exact, width, n_components)
        if len(cells.weights) >= n_components:
            break
    coarse = n_components <= len(cells.weights) <= len(exact.weights) / 2
    rows = cells if coarse else exact
    labels = kmeans.kmeans(_points(rows), n_components, sample_weight=rows.weights, init=init,
                           n_init=1, max_iter=init_iter, rng=rng,
                           callback=settings.callback).labels
    sums = np.stack([np.bincount(labels, weights=rows.weights * phi, minlength=n_components)
                     for phi in rows.phi], axis=1)
    # No likelihood yet: a dead cluster (one of zero weight) goes to the first rows.
    start = _m_step(rows, sums, settings.reg_covar, np.zeros(len(rows.weights)))
    return _em(cells, start, settings, "coarse EM", run=1).mixture if coarse else start


def _with_spikes(rows, run, settings):
    """Up to ``_MAX_SPIKES`` runs from :func:`_spiked`, each kept if it ends higher."""
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


def _spiked(rows, run, reg_covar):
    """The mixture with its lightest component on a heavy, badly explained sample, or None.

    A sample with a share ``p`` of the weight (a flat background) and log-likelihood ``ll``
    gains about ``p (log(exp(ll) + p peak) - ll)`` from a component ``(p, x, reg_covar I)``
    (density ``peak`` at ``x``), which EM finds only slowly, across a long plateau.
    """
    n_features = _n_features(rows.phi)
    share = rows.weights / rows.weights.sum()
    log_peak = -0.5 * n_features * np.log(2 * np.pi * reg_covar)
    with np.errstate(divide="ignore"):
        gain = share * (np.logaddexp(run.row_ll, np.log(share) + log_peak) - run.row_ll)
    best = int(np.argmax(gain))
    if gain[best] < _SPIKE_MIN_GAIN:
        return None
    weights, means, covariances, _ = (array.copy() for array in run.mixture)
    lightest = int(np.argmin(weights))
    means[lightest] = _points(rows)[best]
    covariances[lightest] = reg_covar * np.eye(n_features)
    weights[lightest] = share[best]
    return _mixture(weights / weights.sum(), means, covariances)


def _log_prob_fast(rows, mixture):
    """What :func:`_log_prob` yields, block by block, for the components that matter.

    ``log w_j + log N_j(x)`` is a quadratic in ``x``: one row of coefficients per component
    (:func:`_components`) times the rows' monomials ``phi`` scores a block in one product.
    Rows come in blocks of nearby points (Z-order), each with its bounding box ``B``.

    Truncation.  ``U_j >= log w_j N_j(x)`` for every ``x`` in ``B`` (:func:`_upper_bounds`).
    Component ``j`` is left out of a block only if ``U_j < min_i max_kept log p_ij + log eps``
    with ``eps = MAX_DROPPED / n_components``.  As ``max_kept log p_ij <= log p(x_i)``, each
    one left out has ``r_ij < eps``, and all of them together less than ``MAX_DROPPED``: the
    log-likelihoods are off by less than ``-log(1 - MAX_DROPPED)``, the kept responsibilities
    by a factor within ``MAX_DROPPED`` of one.  A cell's score, an expected log density, is
    at most the log density at the cell's mean (Jensen), which is in ``B``: the bound holds.
    """
    coef, bounds = _components(mixture)
    log_eps = np.log(MAX_DROPPED / len(mixture.weights))
    for block, box in zip(rows.blocks, rows.boxes):
        upper = _upper_bounds(bounds, box)
        keep = upper >= upper.max() - _FIRST_GUESS
        while True:
            kept = np.flatnonzero(keep)
            log_prob = _matmul(coef[kept], rows.phi[:, block])
            missing = ~keep & (upper >= log_prob.max(axis=0).min() + log_eps)
            if not missing.any():
                break
            keep |= missing
        yield block, kept, log_prob


def _upper_bounds(bounds, box):
    """``U_j >= max over the box of log(w_j N_j(x))``, shape (n_components,).

    ``z = P_j^T (x - mu_j)`` is linear in ``x``: over the box each ``z_a`` stays within its
    value at the centre plus or minus ``sum_b |P_j[b, a]| half_width[b]``, so ``|z|^2`` is at
    least the sum of the squared distances of those intervals from zero.
    """
    (low, high), (peak, whiten, abs_whiten, whitened_means) = box, bounds
    centre, half = (low + high) / 2, (high - low) / 2
    gap = np.maximum(np.abs(centre @ whiten - whitened_means) - half @ abs_whiten, 0.0)
    gap *= gap
    return peak - 0.5 * gap.reshape(len(peak), -1).sum(axis=1)


def _components(mixture):
    """``coef`` with ``coef @ phi = log w_j N_j(x)``, and the terms of :func:`_upper_bounds`.

    With ``A = P P^T`` and ``b = A mu``: ``log N(x) = [log det P - d/2 log(2 pi) - mu.b / 2]
    + b.x - x^T A x / 2``.  Bounds: ``peak`` (``coef @ phi`` at ``mu_j``), ``whiten`` with
    ``x @ whiten`` stacking ``P_j^T x`` for every ``j``, its absolute value, and ``P_j^T mu_j``.
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
    whiten = np.swapaxes(prec_chol, 0, 1).reshape(n_features, -1)
    whitened_means = np.einsum("kai,ka->ki", prec_chol, means).reshape(-1)
    coef = np.column_stack([constant, linear, quadratic])
    return coef, (peak, whiten, np.abs(whiten), whitened_means)


def _matmul(a, b):
    """``a @ b`` in pieces of rows of ``a`` of at most ``_BLOCK_MULADDS`` multiply-adds."""
    step = max(1, _BLOCK_MULADDS // (a.shape[1] * b.shape[1]))
    if step >= len(a):
        return a @ b
    product = np.empty((len(a), b.shape[1]))
    for start in range(0, len(a), step):
        np.matmul(a[start:start + step], b, out=product[start:start + step])
    return product


# ---------------------------------------------------------------- helpers

class _Mixture(NamedTuple):
    """The parameters, means in the centred coordinates of the rows."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray


class _Rows(NamedTuple):
    """What EM fits: samples, or cells of samples, in Z-order and in blocks.

    ``phi`` (n_monomials, n_rows): monomials (a cell: its samples' mean of them; ``phi[1:1 + d]``
    the points); ``boxes``: each block's ``(low, high)``; ``of_sample``: each sample's row.
    """

    phi: np.ndarray
    weights: np.ndarray
    blocks: list
    boxes: list
    of_sample: np.ndarray


class _Run(NamedTuple):
    """One EM run: its last mixture, history, whether it converged, last ``log p(x_i)``."""

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


def _mixture(weights, means, covariances):
    """A _Mixture, with the precisions' Cholesky factors."""
    return _Mixture(weights, means, covariances, _precision_cholesky(covariances))


def _rows_and_mixture(X, sample_weight, fit):
    """Rows of checked ``X`` and the fitted mixture, both centred on ``X``'s mean."""
    X, weights = kmeans.check_data(X, sample_weight)
    centre = X.mean(axis=0)
    mixture = _Mixture(*fit[:4])._replace(means=fit.means - centre)
    return _sample_rows(X - centre, weights, len(fit.weights)), mixture


def _sample_rows(X, weights, n_components):
    """The samples as _Rows: equal ones merged (weights summed), in Z-order."""
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
    """The occupied cells of side ``width`` as _Rows, ``phi`` their samples' mean ``phi``."""
    _, cell_weights, cell_of_row = kmeans.coarse_histogram(_points(exact), exact.weights, width)
    pooled = np.stack([np.bincount(cell_of_row, weights=exact.weights * phi,
                                   minlength=len(cell_weights)) for phi in exact.phi])
    occupied = cell_weights > 0
    phi = pooled[:, occupied] / cell_weights[occupied]
    order = _spatial_order(phi[1:1 + _n_features(phi)].T)
    return _in_blocks(phi[:, order], cell_weights[occupied][order], None, n_components)


def _in_blocks(phi, weights, of_sample, n_components):
    """_Rows cut into blocks (``_BLOCK_ROWS_AT_ONE``), with each block's bounding box."""
    block_rows = int(np.clip(_BLOCK_ROWS_AT_ONE / np.sqrt(n_components),
                             _MIN_BLOCK_ROWS, _MAX_BLOCK_ROWS))
    starts = np.arange(0, len(weights), block_rows)
    points = phi[1:1 + _n_features(phi)]
    lows = np.minimum.reduceat(points, starts, axis=1).T
    highs = np.maximum.reduceat(points, starts, axis=1).T
    blocks = [slice(start, start + block_rows) for start in starts]
    return _Rows(phi, weights, blocks, list(zip(lows, highs)), of_sample)


def _spatial_order(points):
    """An order of the rows along a Z-order curve over ``2**bits`` levels, equal rows adjacent."""
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


def _precision_cholesky(covariances):
    """Upper-triangular ``P = L^-T`` with ``covariance = L L^T``, so ``P P^T = covariance^-1``."""
    try:
        chol = np.linalg.cholesky(covariances)
    except np.linalg.LinAlgError:
        raise ValueError("a covariance matrix is not positive definite; "
                         "increase reg_covar.") from None
    # The identity as a stack: NumPy before 2.0 reads a (d, d) right side as d vectors.
    inverse = np.linalg.solve(chol, np.broadcast_to(np.eye(chol.shape[-1]), chol.shape))
    # solve works by LU and may leave rounding above the diagonal of L^-1.
    return np.triu(np.swapaxes(inverse, -1, -2))


def _monomials(XT):
    """``1, x_a, x_a x_b (a <= b, np.triu_indices order)`` of each column of ``XT`` (d, n)."""
    n_features, n_rows = XT.shape
    rows, cols = np.triu_indices(n_features)
    phi = np.empty((1 + n_features + len(rows), n_rows))
    phi[0] = 1.0
    phi[1:1 + n_features] = XT
    np.multiply(XT[rows], XT[cols], out=phi[1 + n_features:])
    return phi


def _symmetric(upper, n_features):
    """Symmetric matrices (n, d, d) from their upper triangles in ``np.triu_indices`` order."""
    rows, cols = np.triu_indices(n_features)
    full = np.empty((len(upper), n_features, n_features))
    full[:, rows, cols] = upper
    full[:, cols, rows] = upper
    return full
