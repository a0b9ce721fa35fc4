"""k-means clustering with k-means++ seeding, written out in NumPy.

Every function works on a data matrix ``X`` of shape ``(n_samples, n_features)``
with optional non-negative per-sample weights: a sample of weight 3 counts
exactly like three copies of it.  This is what lets the image compressor fit
on the distinct colours of a photo, weighted by how often each one occurs,
and still minimise the same objective as over every pixel.

The file reads top to bottom as the textbook does:

1. :func:`kmeans` checks its input and runs the two phases: several
   k-means++ starts (:func:`kmeans_plusplus`) each followed by Lloyd's
   algorithm on a *coarse* weighted histogram of the data
   (:func:`coarse_histogram`), where starts are cheap (all run to a loose
   tolerance, the best two on to the full one); then the best start
   is finished by Lloyd's algorithm on the *exact* data, until no label
   changes (a fixed point) or a budget of iterations runs out.
2. :func:`_lloyd` is Lloyd's algorithm: update step (:class:`_UpdateStep`,
   which also moves an emptied cluster), assign step, stop test.
3. The assign step is an object with one method, ``labels(centers)``:
   :class:`_EveryDistance` computes every sample-centre distance;
   :class:`_BoundedDistance` (Hamerly's bounds) gives the same labels and
   skips the samples its bounds prove cannot change.  :func:`_assign_step`
   picks one.

Two measures are kept apart throughout: the *objective* (``inertia``), the
weighted sum of squared distances from each sample to its centre, which
Lloyd's algorithm minimises; and the *reconstruction error* of an image, a
mean of plain Euclidean distances, which lives in ``codec.py``.
"""
from typing import NamedTuple

import numpy as np

# ---------------------------------------------------------------- constants
# Exact speed-ups: they change how much is computed at once, never a result.

# Distances held in memory at once by the blocked kernels (rows per block:
# this divided by the number of centres, at least _MIN_BLOCK_ROWS).
_CHUNK_ELEMENTS = 1 << 17
_MIN_BLOCK_ROWS = 16
# The assign step keeps distance bounds (Hamerly) from this many clusters on; below,
# every distance is as quick.  Measured, 30 Lloyd iterations on 546,000 colours took
# 3.5 s with every distance and 3.7 s with bounds at k=64, 12.9 s and 6.1 s at k=256,
# 47 s and 21 s at k=1024 (2 cores under load); 20 from k-means++ seeds on 33,000
# grid cells at k=4096, 5.1 s and 3.8 s.
_BOUNDS_MIN_CLUSTERS = 128
# Relative safety margin on the bounds, far above float64 rounding: a bound
# may only err on the side of checking a sample once more.
_BOUND_SLACK = 1e-9

# Heuristics: they change which local optimum is found.  "Noisy photo" below is
# samples/rocket.jpg upscaled 6x plus Gaussian noise of sigma 2 (9.8 MP, 546,363
# colours); "small photos" are rocket, and skimage's chelsea, coffee, astronaut.

# The starts run on the grid of _COARSE_BITS[i] bits per feature (over the widest
# feature's range), the coarsest one with at least _CELLS_PER_CLUSTER occupied cells
# per cluster and _MIN_CELLS in all; on the data itself when none has, or when a
# grid does not pool samples.  Measured at k=20 on the small photos, the objective
# over scikit-learn's best of 10 starts: 1.0009, 1.0040, 0.9980, 0.9997 with 5,000
# cells (5-6 bits); 1.0009, 0.9994, 0.9980, 0.9997 with 10,000; 20,000 gained 0.2%
# more on two of them for twice the time.  At k=256 on the noisy photo, one start on
# 6 bits (26,000 cells) ended 0.8% lower than four on 5 bits, in the same time.
# At k=4096 on rocket, seeding on its 7-bit grid (33,000 cells) took 7 of 13 s.
_COARSE_BITS = (5, 6, 7)
_CELLS_PER_CLUSTER = 2
_MIN_CELLS = 10_000
# n_init="auto": as many starts as fit in _START_BUDGET cell-centre pairs, at most
# _MAX_STARTS.  At k=20 on the noisy photo, 10 starts ended 0.4% lower than 3.
_START_BUDGET = 5_000_000
_MAX_STARTS = 10
# Every start runs to _SCREEN_TOL times tol; the _SCREEN_KEEP lowest go on to tol.  At
# k=20 on the small photos this keeps the start that wins at tol (the objectives over
# scikit-learn's stay 1.0027, 0.9972, 0.9971, 0.9995) with 196, 246, 101, 141 Lloyd
# iterations on the grid instead of 265, 368, 218, 327; keeping only one start ended
# chelsea 0.04% higher; screening on a 2,000-cell grid instead, rocket 1.2% higher.
_SCREEN_TOL = 10
_SCREEN_KEEP = 2
# The finish on the exact data stops after as many iterations as fit in
# _FINISH_PAIRS sample-centre pairs (at least _FINISH_MIN_ITER) even while a few
# labels still change: Lloyd's tail is long and nearly flat.  At k=256 on the noisy
# photo, the mean squared error after 15, 30 and 261 iterations (the fixed point)
# was 18.49, 18.36 and 18.20 (pngquant's: 19.74), for about 1, 2 and 10 s.  At k=20
# on coffee and astronaut, 75 million pairs (39 and 33 iterations) ended 0.02% and
# 0.001% higher than 150 million (79 and 50), some 0.15 and 0.07 s sooner.
_FINISH_PAIRS = 75_000_000
_FINISH_MIN_ITER = 15

# The largest number of clusters the command line accepts (hw2.py refuses more up front).
# Measured on the noisy photo (2 cores shared with other work): k=4096 took 98 s and
# k=8192 197 s to fit, peak memory 225 MB, first progress within 1 s; k-means++ alone
# grows as k^2 log k on the grid it runs on, so k=16384 would take some 15 minutes
# (its seeding runs on a 136,000-cell grid) and 65536 hours.
MAX_CLUSTERS = 1 << 13


# ---------------------------------------------------------------- what goes in and out

class Progress(NamedTuple):
    """What a fit passes to its ``callback`` as it goes (k-means and the mixture alike).

    Attributes
    ----------
    stage : str
        What is running, in a word or two a person reads: ``"seeding"``,
        ``"coarse"`` (the fit on the colour histogram), ``"exact"`` (on the
        distinct colours), ``"EM"``, ...
    run : int
        Which start this is, from 1.
    n_runs : int
        How many starts this stage runs in all.
    iteration : int
        Steps done in this stage and run (centres chosen, while seeding).
    max_iter : int
        The most steps this stage and run can take.
    value : float
        The objective per unit of weight (k-means: mean squared distance) or
        the mean log-likelihood per sample (mixture); NaN when there is none yet.
    """

    stage: str
    run: int
    n_runs: int
    iteration: int
    max_iter: int
    value: float


class KMeansResult(NamedTuple):
    """What :func:`kmeans` returns.

    Attributes
    ----------
    centers : ndarray of shape (n_clusters, n_features)
        The cluster centres (float64).
    labels : ndarray of shape (n_samples,)
        Index of the centre nearest to each sample (the lowest on ties);
        always consistent with ``centers``.
    inertia : float
        Weighted sum of squared distances of the samples to their centres.
    n_iter : int
        Lloyd iterations of the last phase (on the exact data).
    converged : bool
        Whether that phase stopped before ``max_iter``.
    n_init : int
        Starts tried; the best one was kept.
    """

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    converged: bool
    n_init: int = 1


def coarse_histogram(X, weights, width):
    """Pool the samples into the cells of a grid: the cells' weighted means and weights.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    weights : ndarray of shape (n_samples,)
        Non-negative sample weights.
    width : float
        Side of a grid cell, in the units of ``X`` (for 0..255 colours, 8 pools
        5 bits a channel and 4 pools 6 bits).

    Returns
    -------
    cell_means : ndarray of shape (n_cells, n_features)
        Weighted mean of the samples of each occupied cell (its plain mean if
        all its weights are zero).
    cell_weights : ndarray of shape (n_cells,)
        Summed weight of each occupied cell.
    cell_of_sample : ndarray of shape (n_samples,)
        Row of ``cell_means`` holding each sample.
    """
    coords = np.floor((X - X.min(axis=0)) / width).astype(np.int64)
    dims = coords.max(axis=0) + 1
    if np.prod(dims.astype(float)) < 2.0 ** 62:
        keys = np.ravel_multi_index(coords.T, dims)
        _, cell_of_sample = np.unique(keys, return_inverse=True)
    else:
        _, cell_of_sample = np.unique(coords, axis=0, return_inverse=True)
    cell_of_sample = cell_of_sample.reshape(-1)
    n_cells = int(cell_of_sample.max()) + 1
    cell_weights = np.bincount(cell_of_sample, weights=weights, minlength=n_cells)
    # A cell whose samples all weigh nothing still needs a mean: their plain one.
    pooling = np.where(cell_weights[cell_of_sample] > 0, weights, 1.0)
    totals = np.bincount(cell_of_sample, weights=pooling, minlength=n_cells)
    cell_means = np.stack([np.bincount(cell_of_sample, weights=pooling * X[:, j],
                                       minlength=n_cells)
                           for j in range(X.shape[1])], axis=1) / totals[:, None]
    return cell_means, cell_weights, cell_of_sample


# ---------------------------------------------------------------- k-means

def kmeans(X, n_clusters, *, sample_weight=None, init="k-means++", n_init="auto",
           max_iter=300, tol=1e-4, rng=None, callback=None):
    """Cluster ``X`` into ``n_clusters`` groups: k-means++ starts, then Lloyd's algorithm.

    Coarse to fine: each start is seeded and run (to ``_SCREEN_TOL * tol``,
    the ``_SCREEN_KEEP`` best on to ``tol``) on a coarse
    weighted histogram of ``X`` (the weighted means of the occupied cells of
    a grid, see :func:`coarse_histogram`), or on ``X`` itself when no grid
    suits.  The start with the lowest objective is then finished on ``X``
    until no label changes: a fixed point of Lloyd's algorithm on the exact
    data, unless it runs out of iterations first (``max_iter``, or fewer on
    large data: as many as fit in ``_FINISH_PAIRS`` sample-centre pairs, at
    least ``_FINISH_MIN_ITER``; ``converged`` tells).

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
        The data, finite.
    n_clusters : int
        Number of clusters, ``1 <= n_clusters <=`` the samples of positive weight.
    sample_weight : array_like of shape (n_samples,), optional
        Non-negative weight of each sample (default: all ones).
    init : {"k-means++", "random"} or ndarray of shape (n_clusters, n_features)
        ``"k-means++"``: greedy k-means++ seeding.  ``"random"``: ``n_clusters``
        distinct samples drawn in proportion to their weight.  An array: these
        initial centres, finished on ``X`` at once (one start).
    n_init : int or "auto"
        Number of starts.  ``"auto"``: as many as a budget of work allows on
        the coarse data, 1 to 10.
    max_iter : int
        Most Lloyd iterations per start, and in the finish on ``X``.  The
        finish stops at a fixed point, whatever ``tol``.
    tol : float
        Relative tolerance of the starts: one stops when the summed squared
        shift of the centres falls below ``tol`` times the mean per-feature
        variance of ``X`` (so the default suits data on 0..1 and 0..255 alike).
    rng : numpy.random.Generator, optional
        Source of randomness (default: ``np.random.default_rng(0)``).
    callback : callable, optional
        Called with a :class:`Progress` during seeding (stage ``"seeding"``,
        every few centres), after each update step of the starts (``"coarse"``)
        and of the finish (``"exact"``).

    Returns
    -------
    KMeansResult
        The finished best start.
    """
    X, weights = check_data(X, sample_weight)
    _check_n_clusters(X, weights, n_clusters)
    start = _check_init(init, n_clusters, X.shape[1])
    if not (n_init == "auto" or (isinstance(n_init, (int, np.integer)) and n_init >= 1)):
        raise ValueError(f"n_init={n_init!r} should be 'auto' or an int >= 1.")
    if max_iter < 1 or not tol >= 0:
        raise ValueError(f"max_iter={max_iter} should be >= 1 and tol={tol} >= 0.")
    rng = np.random.default_rng(0) if rng is None else rng
    report = _Reporter(callback, weights.sum())
    best_run, n_runs = 1, 1
    if start is None:
        coarse = _coarse_data(X, weights, n_clusters)
        if n_init == "auto":
            n_init = int(np.clip(_START_BUDGET // (len(coarse[0]) * n_clusters),
                                 1, _MAX_STARTS))
        best_run, start = _best_of_starts(*coarse, n_clusters, INITS[init], n_init, max_iter,
                                      tol * _mean_variance(X, weights), rng, report)
        n_runs = n_init
    finish_iter = min(max_iter, max(_FINISH_MIN_ITER, _FINISH_PAIRS // (len(X) * n_clusters)))
    report.stage("exact", best_run, n_runs, finish_iter)
    result = _lloyd(X, weights, start, _assign_step(X, n_clusters), finish_iter,
                    0.0, report)
    return result._replace(n_init=n_runs)


def _coarse_data(X, weights, n_clusters):
    """The data the starts run on: a coarse histogram of ``X``, or ``X`` itself.

    Returns
    -------
    points : ndarray of shape (n_points, n_features)
    weights : ndarray of shape (n_points,)
    offset : float
        The weighted squared scatter of the samples about their cells' means:
        a clustering of the points, plus this, is the objective of ``X``
        clustered by cells.
    """
    span = float((X.max(axis=0) - X.min(axis=0)).max())
    for bits in _COARSE_BITS:
        if span == 0.0:
            break
        points, cell_weights, _ = coarse_histogram(X, weights, span / 2 ** bits)
        if len(points) == len(X):
            break
        if np.count_nonzero(cell_weights) >= max(_MIN_CELLS, _CELLS_PER_CLUSTER * n_clusters):
            offset = float(weights @ _row_norms(X) - cell_weights @ _row_norms(points))
            return points, cell_weights, max(offset, 0.0)
    return X, weights, 0.0


def _best_of_starts(points, weights, offset, n_clusters, seed, n_init, max_iter, tol_abs, rng,
                    report):
    """Seed and run Lloyd ``n_init`` times on ``points``; the start with the lowest objective.

    Every start runs to ``_SCREEN_TOL`` times ``tol_abs``; only the
    ``_SCREEN_KEEP`` lowest of them go on to ``tol_abs``.

    Returns
    -------
    best_run : int
        Its number, from 1.
    centers : ndarray of shape (n_clusters, n_features)
    """
    screened = []
    for run in range(1, n_init + 1):
        report.stage("seeding", run, n_init, n_clusters)
        centers = seed(points, n_clusters, weights, rng, report)
        report.stage("coarse", run, n_init, max_iter, offset)
        result = _lloyd(points, weights, centers, _assign_step(points, n_clusters), max_iter,
                        tol_abs * _SCREEN_TOL, report)
        screened.append((result.inertia, run, result))
    best, best_run = None, 0
    for _, run, result in sorted(screened, key=lambda s: s[:2])[:_SCREEN_KEEP]:
        if result.n_iter < max_iter:  # (at a fixed point already: one more assign step)
            report.stage("coarse", run, n_init, max_iter - result.n_iter, offset)
            result = _lloyd(points, weights, result.centers, _assign_step(points, n_clusters),
                            max_iter - result.n_iter, tol_abs, report)
        if best is None or result.inertia < best.inertia:
            best, best_run = result, run
    return best_run, best.centers


class _Reporter:
    """Turns a fit's steps into ``callback(Progress(...))`` calls; does nothing without one.

    Parameters
    ----------
    callback : callable or None
    total_weight : float
        The objective is reported per unit of it.
    """

    def __init__(self, callback, total_weight):
        self.callback, self.total_weight = callback, total_weight
        self.now = Progress("", 1, 1, 0, 0, np.nan)
        self.offset = 0.0

    def stage(self, stage, run, n_runs, max_iter, offset=0.0):
        """Start a stage; ``offset`` is added to every objective it reports."""
        self.now = Progress(stage, run, n_runs, 0, max_iter, np.nan)
        self.offset = offset

    def __call__(self, iteration, objective=np.nan):
        if self.callback is not None:
            value = (objective + self.offset) / self.total_weight
            self.callback(self.now._replace(iteration=iteration, value=value))


# ---------------------------------------------------------------- k-means++

def kmeans_plusplus(X, n_clusters, *, sample_weight=None, rng=None, n_local_trials=None):
    """Choose initial centres by greedy k-means++.

    The first centre is a sample drawn in proportion to its weight.  Each next
    one is the best of ``n_local_trials`` candidates drawn in proportion to
    weight times squared distance to the nearest centre chosen so far: the
    candidate that lowers the potential (the weighted sum of those squared
    distances) the most.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
    n_clusters : int
    sample_weight : array_like of shape (n_samples,), optional
    rng : numpy.random.Generator, optional
    n_local_trials : int, optional
        Candidates per step (default ``2 + int(ln(n_clusters))``).

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_features)
        Rows of ``X``.
    indices : ndarray of shape (n_clusters,)
        Their row indices in ``X``.
    """
    X, weights = check_data(X, sample_weight)
    _check_n_clusters(X, weights, n_clusters)
    rng = np.random.default_rng(0) if rng is None else rng
    indices = _kmeans_plusplus(X, n_clusters, weights, rng, n_local_trials)
    return X[indices].copy(), indices


def _kmeans_plusplus(X, n_clusters, weights, rng, n_local_trials=None, report=None):
    """Greedy k-means++ on checked input; returns the chosen row indices.

    ``report(n_chosen)`` is called every few centres (at most 512 times in all).
    """
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    x_sq = _row_norms(X)
    every = max(1, n_clusters // 512)
    indices = np.empty(n_clusters, dtype=np.intp)
    indices[0] = rng.choice(len(X), p=weights / weights.sum())
    closest = _sq_dist_to(X, x_sq, X[indices[:1]])[0]
    for c in range(1, n_clusters):
        if report is not None and c % every == 0:
            report(c)
        cumulative = np.cumsum(weights * closest)
        if cumulative[-1] <= 0.0:  # every weighted sample already sits on a centre
            raise ValueError(f"X has fewer than n_clusters={n_clusters} distinct points "
                             "with positive weight.")
        draws = rng.uniform(size=n_local_trials) * cumulative[-1]
        candidates = np.minimum(np.searchsorted(cumulative, draws), len(X) - 1)
        # Every candidate at once, one row each (the first of equal potentials wins).
        trials = np.minimum(_sq_dist_to(X, x_sq, X[candidates]), closest)
        best = int(np.argmin(trials @ weights))
        indices[c] = candidates[best]
        closest = trials[best]
    return indices


def _init_plusplus(X, n_clusters, weights, rng, report=None):
    return X[_kmeans_plusplus(X, n_clusters, weights, rng, report=report)].copy()


def _init_random(X, n_clusters, weights, rng, report=None):
    rows = rng.choice(len(X), size=n_clusters, replace=False, p=weights / weights.sum())
    return X[rows].copy()


INITS = {"k-means++": _init_plusplus, "random": _init_random}


# ---------------------------------------------------------------- Lloyd

def _lloyd(X, weights, centers, assign_step, max_iter, tol_abs, report):
    """Lloyd's algorithm from ``centers`` on checked input.

    Stops when no label changes, or when the summed squared shift of the
    centres is at most ``tol_abs``, or after ``max_iter`` iterations; the
    labels returned are always those of the centres returned.

    Parameters
    ----------
    assign_step : _EveryDistance or _BoundedDistance
        Made for ``X`` and not yet used (it follows the centres it is given).
    report : callable
        Called as ``report(iteration, objective)`` after each update step.

    Returns
    -------
    KMeansResult
    """
    update_step = _UpdateStep(X, weights, len(centers))
    labels = assign_step.labels(centers)
    converged, n_iter = False, 0
    for n_iter in range(1, max_iter + 1):
        new_centers, objective = update_step(labels, centers)
        report(n_iter, objective)
        shift = float(np.sum((new_centers - centers) ** 2))
        centers = new_centers
        new_labels = assign_step.labels(centers)
        unchanged = np.array_equal(new_labels, labels)
        labels = new_labels
        if unchanged or shift <= tol_abs:
            converged = True
            break
    return KMeansResult(centers, labels, _inertia(X, weights, centers, labels), n_iter,
                        converged)


class _UpdateStep:
    """The update step: each centre moves to the weighted mean of its samples.

    The clusters' weighted sums and masses are kept from one call to the
    next and changed only by the samples whose label changed: exact for
    integer data and weights (colours and their counts), accurate to
    rounding otherwise.

    An emptied cluster (no weight) is handled here and only here: it moves to
    the sample with the largest weighted squared distance to its centre (the
    one whose move lowers the objective most); several take the largest few.
    """

    def __init__(self, X, weights, n_clusters):
        self.X, self.weights, self.n_clusters = X, weights, n_clusters
        # One row per feature, then the weight and whether it is positive: summed per
        # cluster, the weighted sums, the mass and the count of members.
        self.columns = np.vstack([X.T * weights, weights, weights > 0])
        self.sq_total = float(weights @ _row_norms(X))
        self.labels = None

    def __call__(self, labels, centers):
        """The new centres for ``labels``, and the objective of the labels with their means.

        Returns
        -------
        new_centers : ndarray of shape (n_clusters, n_features)
        objective : float
            ``sum w ||x - mean||^2`` over the non-empty clusters, from the
            totals: ``sum w ||x||^2 - sum_j m_j ||mean_j||^2``.
        """
        if self.labels is None:
            self.totals = self._totals(labels, slice(None))
        else:
            moved = np.flatnonzero(labels != self.labels)
            self.totals += self._totals(labels[moved], moved)
            self.totals -= self._totals(self.labels[moved], moved)
        self.labels = labels
        *sums, mass, members = self.totals
        filled = members > 0.5
        if (mass[filled] <= 0).any():  # lost to rounding (real weights): count afresh
            self.labels = None
            return self(labels, centers)
        new_centers = centers.copy()
        new_centers[filled] = np.transpose(sums)[filled] / mass[filled, None]
        objective = self.sq_total - float(mass[filled] @ _row_norms(new_centers[filled]))
        empty = np.flatnonzero(~filled)
        if len(empty) > 0:
            cost = self.weights * _row_norms(self.X - centers[labels])
            far = np.argsort(cost, kind="stable")[::-1][:len(empty)]
            new_centers[empty] = self.X[far]
        return new_centers, max(objective, 0.0)

    def _totals(self, labels, rows):
        """Per cluster, the sums of ``self.columns`` over the samples ``rows`` with ``labels``.

        Returns
        -------
        ndarray of shape (n_features + 2, n_clusters)
        """
        return np.stack([np.bincount(labels, weights=column[rows], minlength=self.n_clusters)
                         for column in self.columns])


def _inertia(X, weights, centers, labels):
    """Weighted sum of squared distances of the samples to their centres (exact)."""
    total = 0.0
    for start in range(0, len(X), _CHUNK_ELEMENTS):
        stop = min(start + _CHUNK_ELEMENTS, len(X))
        diff = X[start:stop] - centers[labels[start:stop]]
        total += float(weights[start:stop] @ _row_norms(diff))
    return total


# ---------------------------------------------------------------- assign step

def _assign_step(X, n_clusters):
    """The assign step for Lloyd on ``X``: every distance, or bounded when that pays.

    Both give the same labels (an exact speed-up, see ``_BOUNDS_MIN_CLUSTERS``).
    """
    if n_clusters >= _BOUNDS_MIN_CLUSTERS:
        return _BoundedDistance(X)
    return _EveryDistance(X)


class _EveryDistance:
    """The textbook assign step: every distance from every sample to every centre."""

    def __init__(self, X):
        self.X = X

    def labels(self, centers):
        """Index of the nearest centre of each sample (the lowest on ties)."""
        return _nearest_two(self.X, centers, None, second=False)[0]


class _BoundedDistance:
    """The assign step with Hamerly's bounds: the labels of :class:`_EveryDistance`.

    Each sample keeps an upper bound ``u`` on the distance to its centre and a
    lower bound ``l`` on the distance to every other centre.  When the centres
    move, ``u`` grows by its own centre's move and ``l`` shrinks by the largest
    move of any centre; while ``u < l`` the sample's label cannot change.
    Only the others are looked at: first their distance to their own centre,
    then, if that does not settle it, their distances to every centre.

    The bounds are kept lazily, so that an iteration costs one comparison per
    sample: with ``moved[j]`` the summed moves of centre ``j`` and ``largest``
    the summed largest moves since the start, ``u < l`` holds as long as
    ``moved[label] + largest < key``, where ``key = l + largest - u + moved[label]``
    with all four taken when the sample was last looked at.
    """

    def __init__(self, X):
        self.X, self.x_sq = X, _row_norms(X)
        self.x_sq_max = float(self.x_sq.max(initial=0.0))
        self.centers = None

    def labels(self, centers):
        """Index of the nearest centre of each sample (the lowest on ties)."""
        if self.centers is None:
            self.moved, self.largest = np.zeros(len(centers)), 0.0
            self.nearest = np.empty(len(self.X), dtype=np.intp)
            self.key, self.lower_at = np.empty(len(self.X)), np.empty(len(self.X))
            self._look(np.arange(len(self.X)), centers)
        else:
            drift = np.sqrt(_row_norms(centers - self.centers)) * (1.0 + _BOUND_SLACK)
            self.moved += drift
            self.largest += float(drift.max())
            # np.take: some four times quicker than fancy indexing here.
            unsure = np.flatnonzero(self.key <= np.take(self.moved, self.nearest) + self.largest)
            own = np.sqrt(_row_norms(self.X[unsure] - centers[self.nearest[unsure]]))
            own *= 1.0 + _BOUND_SLACK
            lower = self.lower_at[unsure] - self.largest
            settled = own < lower
            self._store(unsure[settled], own[settled], lower[settled])
            self._look(unsure[~settled], centers)
        self.centers = centers
        return self.nearest.copy()

    def _look(self, rows, centers):
        """Label ``rows`` from their distances to every centre, and store their bounds."""
        if len(rows) == 0:
            return
        labels, first, second = _nearest_two(self.X[rows], centers, self.x_sq[rows])
        # ||x||^2 - 2 x.c + ||c||^2 loses about eps * (||x||^2 + ||c||^2) to cancellation.
        margin = _BOUND_SLACK * (self.x_sq_max + float(_row_norms(centers).max()))
        self.nearest[rows] = labels
        self._store(rows, np.sqrt(first + margin), np.sqrt(np.maximum(second - margin, 0.0)))

    def _store(self, rows, upper, lower):
        # An absolute margin for the rounding of the running sums.
        slack = _BOUND_SLACK * (1.0 + self.largest)
        self.lower_at[rows] = lower + self.largest
        self.key[rows] = self.lower_at[rows] - upper + np.take(self.moved, self.nearest[rows]) - slack


def assign(X, centers, x_sq=None):
    """Label each sample with its nearest centre.

    Distances are computed as ``||x||^2 - 2 x.c + ||c||^2`` over blocks of
    rows, so no ``(n_samples, n_clusters)`` array is ever held whole.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    centers : ndarray of shape (n_clusters, n_features)
    x_sq : ndarray of shape (n_samples,), optional
        Precomputed squared norms of the rows of ``X``.

    Returns
    -------
    labels : ndarray of shape (n_samples,)
        Index of the nearest centre (the lowest index on ties).
    min_sq_dist : ndarray of shape (n_samples,)
        Squared distance to it, clipped at zero.
    """
    X = np.asarray(X, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    if x_sq is None:
        x_sq = _row_norms(X)
    labels, min_sq_dist, _ = _nearest_two(X, centers, x_sq, second=False)
    return labels, min_sq_dist


def _nearest_two(X, centers, x_sq, second=True):
    """Nearest centre of each row, its squared distance and that of the runner-up.

    Works over blocks of rows; ``||x||^2`` is added only to the two minima,
    since it does not change which centre is nearest.  Without ``x_sq`` only
    the labels are found (the assign step of :class:`_EveryDistance` needs no
    more; this saves about a fifth of its time at k=20).

    Returns
    -------
    labels : ndarray of shape (n_samples,), intp
    first : ndarray of shape (n_samples,) or None
        Squared distance to the nearest centre, clipped at zero (None without ``x_sq``).
    second : ndarray of shape (n_samples,) or None
        Squared distance to the second nearest (``inf`` with one centre; None
        when not ``second`` or without ``x_sq``).
    """
    n_samples, n_clusters = len(X), len(centers)
    minus_two_ct = -2.0 * centers.T
    c_sq = _row_norms(centers)
    labels = np.empty(n_samples, dtype=np.intp)
    first = np.empty(n_samples) if x_sq is not None else None
    runner_up = np.empty(n_samples) if second else None
    step = max(_MIN_BLOCK_ROWS, _CHUNK_ELEMENTS // max(1, n_clusters))
    # One buffer for every block: a fresh ~1 MB array per block costs the allocator new
    # pages each time (this took the assign step from 1.1 to 0.6 s on chelsea, k=20).
    dist_buffer = np.empty((min(step, n_samples), n_clusters))
    for start in range(0, n_samples, step):
        stop = min(start + step, n_samples)
        dist = np.matmul(X[start:stop], minus_two_ct, out=dist_buffer[:stop - start])
        dist += c_sq
        nearest = np.argmin(dist, axis=1, out=labels[start:stop])
        if first is None:
            continue
        rows = np.arange(stop - start)
        first[start:stop] = dist[rows, nearest]
        if second:
            dist[rows, nearest] = np.inf
            runner_up[start:stop] = dist.min(axis=1)
    if first is None:
        return labels, None, None
    first += x_sq
    np.maximum(first, 0.0, out=first)
    if second:
        runner_up += x_sq
        np.maximum(runner_up, 0.0, out=runner_up)
    return labels, first, runner_up


def _sq_dist_to(X, x_sq, points):
    """Squared distances from each of ``points`` to every row of ``X``.

    Returns
    -------
    ndarray of shape (n_points, n_samples)
        One row per point (rows, not columns: NumPy's loops run fastest along them).
    """
    d2 = (-2.0 * points) @ X.T
    d2 += x_sq
    d2 += _row_norms(points)[:, None]
    return np.maximum(d2, 0.0, out=d2)


def _row_norms(X):
    """Squared Euclidean norm of each row, shape (n_samples,)."""
    return np.einsum("ij,ij->i", X, X)


# ---------------------------------------------------------------- input checks

def check_data(X, sample_weight):
    """Validate and convert the data and weights.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
    sample_weight : array_like of shape (n_samples,) or None

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float64, C-contiguous
    weights : ndarray of shape (n_samples,), float64
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X should be a non-empty 2-D array, got shape {X.shape}.")
    if not np.isfinite(X).all():
        bad = X[~np.isfinite(X)][0]
        raise ValueError(f"X contains {bad} (NaN or infinity) at row "
                         f"{int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])}.")
    if sample_weight is None:
        return X, np.ones(len(X))
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.shape != (len(X),):
        raise ValueError(f"sample_weight has shape {weights.shape}, expected ({len(X)},).")
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        raise ValueError(f"sample_weight should be finite and non-negative, got "
                         f"{weights[bad][0]} at row {int(np.flatnonzero(bad)[0])}.")
    return X, weights


def _check_n_clusters(X, weights, n_clusters):
    n_positive = int(np.count_nonzero(weights))
    if not (isinstance(n_clusters, (int, np.integer)) and 1 <= n_clusters <= n_positive):
        raise ValueError(f"n_clusters={n_clusters!r} should be an int >= 1 and <= the "
                         f"number of samples with positive weight ({n_positive}).")


def _check_init(init, n_clusters, n_features):
    """None for a named seeding, or the explicit initial centres as float64."""
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"init={init!r} is not one of {sorted(INITS)}.")
        return None
    start = np.array(init, dtype=np.float64)
    if start.shape != (n_clusters, n_features):
        raise ValueError(f"init has shape {start.shape}, expected ({n_clusters}, {n_features}).")
    if not np.isfinite(start).all():
        raise ValueError("init contains NaN or infinity.")
    return start


def _mean_variance(X, weights):
    """Mean over the features of their weighted variance (what ``tol`` is relative to)."""
    mean = weights @ X / weights.sum()
    return float(np.mean(weights @ (X - mean) ** 2 / weights.sum()))
