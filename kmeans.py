"""k-means clustering: k-means++ seeding and Lloyd's algorithm, written out in NumPy.

Data ``X`` is ``(n_samples, n_features)`` with non-negative ``sample_weight``: a sample of
weight 3 counts as three copies, so fitting a photo's distinct colours weighted by their
counts minimises the objective over every pixel.  Top to bottom: :func:`kmeans` (starts,
the best finished), :func:`kmeans_plusplus`, :func:`_lloyd` (assign step, update step, stop
test, final assignment), then the speed-ups: the starts run on a coarse histogram
(:func:`coarse_histogram`, a heuristic) and the assign step may keep Hamerly's bounds
(:class:`_BoundedDistance`, exact).  The objective (``inertia``) is the weighted sum of
squared distances; the reconstruction error (mean distance) is codec.py's.  Each constant's
measurements: bench/NOTES.md, "k-means".
"""
from functools import partial
from typing import NamedTuple

import numpy as np

# The most clusters the command line accepts: k-means++ grows as k^2 log k (NOTES: "Largest k").
MAX_CLUSTERS = 1 << 13

# Heuristics (they change which optimum is found).  The starts run on the coarsest grid of
# these bits per feature with enough occupied cells, else on X (NOTES: "Coarse grid").
_COARSE_BITS = (5, 6, 7)
_CELLS_PER_CLUSTER = 2
_MIN_CELLS = 10_000
# n_init="auto": as many starts as fit in this many cell-centre pairs, at most 2 per
# cluster (so small k at 10 MP costs what it did) and 16 (NOTES: "Starts").
_START_BUDGET = 5_000_000
_STARTS_PER_CLUSTER = 2
_MAX_STARTS = 16
# A start on the grid stops at this many times tol: ranking the starts needs no more, and
# the lowest is finished on X (NOTES: "Starts").
_START_TOL = 10
# The finish stops after this many sample-centre pairs: Lloyd's tail is long and flat
# (NOTES: "Finish").
_FINISH_PAIRS = 75_000_000
_FINISH_MIN_ITER = 15

# Exact speed-ups (the same result).  Hamerly's bounds pay from this many clusters on
# (NOTES: "Bounds").
_BOUNDS_MIN_CLUSTERS = 128
# Bounds err by this relative margin, far above float64 rounding, towards looking again.
_BOUND_SLACK = 1e-9
# Distances held at once by the blocked kernels: rows per block times clusters (NOTES:
# "Blocked distances").
_CHUNK_ELEMENTS = 1 << 17
_MIN_BLOCK_ROWS = 16


class Progress(NamedTuple):
    """What a fit passes to its ``callback`` as it goes (k-means and the mixture alike):
    ``stage`` (``"seeding"``, ``"coarse"``, ``"exact"``, ``"EM"``...); ``run`` of ``n_runs``,
    the start, from 1; ``iteration`` of ``max_iter`` (centres chosen, while seeding);
    ``value``, the objective per unit of weight or the mean log-likelihood, or NaN."""

    stage: str
    run: int
    n_runs: int
    iteration: int
    max_iter: int
    value: float


class KMeansResult(NamedTuple):
    """What :func:`kmeans` returns: ``centers`` (n_clusters, n_features); ``labels``
    (n_samples,), each sample's nearest centre (the lowest index on ties); ``inertia``, the
    weighted sum of squared distances to them; ``n_iter`` and ``converged``, of the finish
    on ``X``; ``n_init``, the starts tried."""

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    converged: bool
    n_init: int = 1


# ---------------------------------------------------------------- k-means

def kmeans(X, n_clusters, *, sample_weight=None, init="k-means++", n_init="auto",
           max_iter=300, tol=1e-4, rng=None, callback=None):
    """Cluster ``X`` into ``n_clusters`` groups: k-means++ starts, then Lloyd's algorithm.

    Each start is seeded and run to ``10 * tol`` on a coarse histogram of ``X`` (or on
    ``X`` when no grid suits); the one that ends lowest is finished on ``X`` until no
    label changes or an iteration budget runs out (``max_iter``, fewer on large data).

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
    n_clusters : int
        From 1 to the number of samples of positive weight.
    sample_weight : array_like of shape (n_samples,), optional
    init : {"k-means++", "random"} or ndarray of shape (n_clusters, n_features)
        Greedy k-means++, samples drawn in proportion to weight, or these centres.
    n_init : int or "auto"
        Number of starts; "auto": as many as a budget of work allows.
    max_iter : int
        Most Lloyd iterations of a start, and of a finish.
    tol : float
        A start stops when the summed squared shift of the centres is at most ``10 *
        tol`` times the mean per-feature variance of ``X`` (scale-free).
    rng : numpy.random.Generator, optional
    callback : callable, optional
        Given a :class:`Progress` while seeding and after each update step.

    Returns
    -------
    KMeansResult
    """
    X, weights = check_data(X, sample_weight)
    _check_n_clusters(X, weights, n_clusters)
    start = _check_init(init, n_clusters, X.shape[1])
    if not (n_init == "auto" or (isinstance(n_init, (int, np.integer)) and n_init >= 1)):
        raise ValueError(f"n_init={n_init!r} should be 'auto' or an int >= 1.")
    if max_iter < 1 or not tol >= 0:
        raise ValueError(f"max_iter={max_iter} should be >= 1 and tol={tol} >= 0.")
    rng = np.random.default_rng(0) if rng is None else rng
    stage = partial(_reporter, callback, weights.sum())
    run, n_runs = 1, 1
    if start is None:
        points, point_weights, offset = _coarse_data(X, weights, n_clusters)
        n_runs = n_init if n_init != "auto" else int(np.clip(_START_BUDGET // (
            len(points) * n_clusters), 1, min(_MAX_STARTS, _STARTS_PER_CLUSTER * n_clusters)))
        run, start = _best_start(points, point_weights, n_clusters, INITS[init], n_runs, max_iter,
                                 _START_TOL * tol * _mean_variance(X, weights), rng,
                                 partial(stage, offset=offset))
    finish_iter = min(max_iter, max(_FINISH_MIN_ITER, _FINISH_PAIRS // (len(X) * n_clusters)))
    result = _lloyd(X, weights, start, _assign_step(X, n_clusters), finish_iter, 0.0,
                    stage("exact", run, n_runs, finish_iter))
    return result._replace(n_init=n_runs)


def _best_start(X, weights, n_clusters, seed, n_init, max_iter, tol_abs, rng, stage):
    """Seed and run Lloyd to ``tol_abs`` ``n_init`` times; ``(run, centers)`` of the lowest end
    (runs numbered from 1)."""
    best = None
    for run in range(1, n_init + 1):
        centers = seed(X, n_clusters, weights, rng, stage("seeding", run, n_init, n_clusters))
        result = _lloyd(X, weights, centers, _assign_step(X, n_clusters), max_iter, tol_abs,
                        stage("coarse", run, n_init, max_iter))
        if best is None or result.inertia < best[0]:
            best = (result.inertia, run, result.centers)
    return best[1:]


# ---------------------------------------------------------------- k-means++

def kmeans_plusplus(X, n_clusters, *, sample_weight=None, rng=None, n_local_trials=None):
    """Choose initial centres by greedy k-means++: ``(centers, indices)``, rows of ``X``.

    The first centre is a sample drawn in proportion to its weight.  Each next one is
    the best of ``n_local_trials`` candidates (default ``2 + int(ln(n_clusters))``) drawn
    in proportion to weight times squared distance to the nearest centre so far: the one
    that lowers the potential (the weighted sum of those squared distances) most.
    """
    X, weights = check_data(X, sample_weight)
    _check_n_clusters(X, weights, n_clusters)
    rng = np.random.default_rng(0) if rng is None else rng
    indices = _kmeans_plusplus(X, n_clusters, weights, rng, n_local_trials, lambda n: None)
    return X[indices].copy(), indices


def _kmeans_plusplus(X, n_clusters, weights, rng, n_local_trials, report):
    """Greedy k-means++ on checked input: the chosen row indices; ``report(n_chosen)``."""
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    x_sq = _row_norms(X)
    indices = np.empty(n_clusters, dtype=np.intp)
    indices[0] = rng.choice(len(X), p=weights / weights.sum())
    closest = _sq_dist_to(X, x_sq, X[indices[:1]])[0]
    for c in range(1, n_clusters):
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


def _init_plusplus(X, n_clusters, weights, rng, report):
    return X[_kmeans_plusplus(X, n_clusters, weights, rng, None, report)]


def _init_random(X, n_clusters, weights, rng, report):
    return X[rng.choice(len(X), size=n_clusters, replace=False, p=weights / weights.sum())]


INITS = {"k-means++": _init_plusplus, "random": _init_random}


# ---------------------------------------------------------------- Lloyd

def _lloyd(X, weights, centers, assign_step, max_iter, tol_abs, report):
    """Lloyd's algorithm from ``centers`` on checked input: a :class:`KMeansResult`.

    Stops when no label changes, when the summed squared shift of the centres is at most
    ``tol_abs``, or after ``max_iter`` iterations; the labels returned are those of the
    centres returned.  ``assign_step`` is fresh; ``report(iteration, objective)``.
    """
    update_step = _UpdateStep(X, weights, len(centers))
    labels = assign_step.labels(centers)
    converged, n_iter = False, 0
    for n_iter in range(1, max_iter + 1):
        new_centers, objective = update_step(labels, centers)
        report(n_iter, objective)
        shift = float(np.sum((new_centers - centers) ** 2))
        centers = new_centers
        labels, old_labels = assign_step.labels(centers), labels
        if np.array_equal(labels, old_labels) or shift <= tol_abs:
            converged = True
            break
    inertia = float(weights @ _row_norms(X - centers[labels]))
    return KMeansResult(centers, labels, inertia, n_iter, converged)


class _UpdateStep:
    """The update step, ``update(labels, centers) -> (new_centers, objective of labels)``:
    each centre moves to the weighted mean of its samples; an emptied one to the sample of
    largest weighted squared distance (the move that lowers the objective most; several
    take the largest few).  The clusters' sums are kept between calls and changed only by
    the samples whose label changed (exact for integer data and weights)."""

    def __init__(self, X, weights, n_clusters):
        self.X, self.weights, self.n_clusters = X, weights, n_clusters
        # Summed per cluster: the weighted features, the mass and the count of members.
        self.columns = np.vstack([X.T * weights, weights, weights > 0])
        self.sq_total = float(weights @ _row_norms(X))
        self.labels = None

    def __call__(self, labels, centers):
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
        # sum w ||x - mean||^2 = sum w ||x||^2 - sum_j m_j ||mean_j||^2
        objective = self.sq_total - float(mass[filled] @ _row_norms(new_centers[filled]))
        empty = np.flatnonzero(~filled)
        if len(empty) > 0:
            cost = self.weights * _row_norms(self.X - centers[labels])
            far = np.argsort(cost, kind="stable")[::-1][:len(empty)]
            new_centers[empty] = self.X[far]
        return new_centers, max(objective, 0.0)

    def _totals(self, labels, rows):
        """Sums of ``self.columns`` over ``rows`` per cluster, (n_features + 2, n_clusters)."""
        return np.stack([np.bincount(labels, weights=column[rows], minlength=self.n_clusters)
                         for column in self.columns])


# ---------------------------------------------------------------- speed-up: coarse starts

def _coarse_data(X, weights, n_clusters):
    """What the starts run on, ``(points, weights, offset)``: a coarse histogram of ``X``,
    or ``X`` itself.  ``offset``, the samples' weighted squared scatter about their cells'
    means, turns the points' objective into that of ``X`` clustered by cells."""
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


def coarse_histogram(X, weights, width):
    """Pool ``X`` (n_samples, n_features), weighted by ``weights``, in the cells of side
    ``width`` of a grid (for 0..255 colours, 8 pools 5 bits a channel).  Returns
    ``cell_means`` (n_cells, n_features), each occupied cell's weighted mean (its plain mean
    if it weighs nothing); ``cell_weights`` (n_cells,); ``cell_of_sample`` (n_samples,)."""
    coords = np.floor((X - X.min(axis=0)) / width).astype(np.int64)
    dims = coords.max(axis=0) + 1
    if np.prod(dims.astype(float)) < 2.0 ** 62:
        _, cell_of_sample = np.unique(np.ravel_multi_index(coords.T, dims), return_inverse=True)
    else:
        _, cell_of_sample = np.unique(coords, axis=0, return_inverse=True)
    cell_of_sample = cell_of_sample.reshape(-1)
    n_cells = int(cell_of_sample.max()) + 1
    cell_weights = np.bincount(cell_of_sample, weights=weights, minlength=n_cells)
    pooling = np.where(cell_weights[cell_of_sample] > 0, weights, 1.0)
    totals = np.bincount(cell_of_sample, weights=pooling, minlength=n_cells)
    cell_means = np.stack([np.bincount(cell_of_sample, weights=pooling * x, minlength=n_cells)
                           for x in X.T], axis=1) / totals[:, None]
    return cell_means, cell_weights, cell_of_sample


# ---------------------------------------------------------------- speed-up: the assign step

def _assign_step(X, n_clusters):
    """The assign step for ``X``: an object whose ``labels(centers)`` labels every sample.

    Every distance, or Hamerly's bounds where they pay: the same labels either way.
    """
    return (_BoundedDistance if n_clusters >= _BOUNDS_MIN_CLUSTERS else _EveryDistance)(X)


class _EveryDistance:
    """The textbook assign step: every distance from every sample to every centre."""

    def __init__(self, X):
        self.X = X

    def labels(self, centers):
        return _nearest_two(self.X, centers, None, second=False)[0]


class _BoundedDistance:
    """The assign step with Hamerly's bounds: the labels of :class:`_EveryDistance`.

    Each sample keeps an upper bound ``u`` on the distance to its centre and a lower bound
    ``l`` on the distance to every other; when the centres move, ``u`` grows by its centre's
    move and ``l`` shrinks by the largest move, and while ``u < l`` the label cannot change.
    The rest are checked against their centre, then if need be every centre.  Lazily: with
    ``moved[j]`` the summed moves of centre ``j`` and ``largest`` the summed largest moves,
    ``u < l`` while ``moved[label] + largest < key = l + largest - u + moved[label]``, taken
    when the sample was last looked at."""

    def __init__(self, X):
        self.X, self.x_sq = X, _row_norms(X)
        self.x_sq_max = float(self.x_sq.max(initial=0.0))
        self.centers = None

    def labels(self, centers):
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
        slack = _BOUND_SLACK * (1.0 + self.largest)  # for the rounding of the running sums
        self.lower_at[rows] = lower + self.largest
        self.key[rows] = self.lower_at[rows] - upper + np.take(self.moved, self.nearest[rows]) - slack


def assign(X, centers):
    """``(labels, min_sq_dist)``, each (n_samples,): the nearest of ``centers``
    (n_clusters, n_features) to each row of ``X`` (the lowest index on ties) and the
    squared distance to it."""
    X, centers = np.asarray(X, dtype=np.float64), np.asarray(centers, dtype=np.float64)
    labels, min_sq_dist, _ = _nearest_two(X, centers, _row_norms(X), second=False)
    return labels, min_sq_dist


def _nearest_two(X, centers, x_sq, second=True):
    """``(labels, first, runner_up)``, each (n_samples,): the nearest centre of each row,
    its squared distance and the runner-up's (``inf`` for a lone centre), clipped at zero.
    Over blocks of rows, as ``-2 x.c + ||c||^2``; ``||x||^2`` is added to the minima only.
    Without ``x_sq`` the labels alone (``first`` and ``runner_up`` None), a fifth quicker."""
    n_samples, n_clusters = len(X), len(centers)
    minus_two_ct, c_sq = -2.0 * centers.T, _row_norms(centers)
    labels = np.empty(n_samples, dtype=np.intp)
    first = np.empty(n_samples) if x_sq is not None else None
    runner_up = np.empty(n_samples) if second else None
    step = max(_MIN_BLOCK_ROWS, _CHUNK_ELEMENTS // n_clusters)
    # One buffer for every block: fresh pages per block cost time (NOTES: "Blocked distances").
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
    np.maximum(first + x_sq, 0.0, out=first)
    if second:
        np.maximum(runner_up + x_sq, 0.0, out=runner_up)
    return labels, first, runner_up


# ---------------------------------------------------------------- checks and helpers

def check_data(X, sample_weight):
    """``X`` (n_samples, n_features) as C-contiguous float64 and its weights (all ones if
    ``sample_weight`` is None), checked: finite, weights non-negative."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X should be a non-empty 2-D array, got shape {X.shape}.")
    if not np.isfinite(X).all():
        row = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
        raise ValueError(f"X contains {X[~np.isfinite(X)][0]} (NaN or infinity) at row {row}.")
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


def _reporter(callback, total_weight, stage, run, n_runs, max_iter, offset=0.0):
    """``report(iteration, objective)`` for one stage: a :class:`Progress` to ``callback``,
    with ``(objective + offset)`` per unit of weight."""
    def report(iteration, objective=np.nan):
        if callback is not None:
            value = (objective + offset) / total_weight
            callback(Progress(stage, run, n_runs, iteration, max_iter, value))
    return report


def _mean_variance(X, weights):
    """Mean over the features of their weighted variance (what ``tol`` is relative to)."""
    mean = np.average(X, axis=0, weights=weights)
    return float(np.average((X - mean) ** 2, axis=0, weights=weights).mean())


def _sq_dist_to(X, x_sq, points):
    """Squared distances from each of ``points`` to every row of ``X``, (n_points, n_samples)."""
    d2 = (-2.0 * points) @ X.T
    d2 += x_sq
    d2 += _row_norms(points)[:, None]
    return np.maximum(d2, 0.0, out=d2)


def _row_norms(X):
    """Squared Euclidean norm of each row, shape (n_samples,)."""
    return np.einsum("ij,ij->i", X, X)
