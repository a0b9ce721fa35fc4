"""k-means clustering with k-means++ seeding, written out in NumPy.

Every function works on a data matrix ``X`` of shape ``(n_samples, n_features)``
with optional non-negative per-sample weights: a sample of weight 3 counts
exactly like three copies of it.  This is what lets the image compressor fit
on the distinct colours of a photo, weighted by how often each one occurs,
and still minimise the same objective as over every pixel.

Two measures are kept apart throughout:

* the *objective* (``inertia``): the weighted sum of squared distances from
  each sample to its nearest centre, which Lloyd's algorithm minimises;
* the *reconstruction error* of the image, a mean of plain Euclidean
  distances, which lives in ``codec.py``.

Speed comes from three things that leave the result of Lloyd's algorithm as
it is:

* Hamerly's bounds: each sample keeps an upper bound on the distance to its
  centre and a lower bound on the distance to any other; when the centres
  move little, most samples are proven to keep their label without any
  distance being computed;
* centre sums updated only for the samples that changed cluster;
* on large data, the seedings are tried on a coarse weighted summary of it
  (the weighted means of the occupied cells of a grid), and only the best
  few run on the data itself, so twenty starts cost about as much as three.

Quality comes from the many starts and from the *polish*: Lloyd's last steps
are small but many, so a run stopped by the tolerance still has some 0.1% of
objective to lose; polished runs go on, with extrapolated steps (kept only
when they lower the objective), until no label changes.
"""
from typing import NamedTuple

import numpy as np

# Rows handled at once by the distance kernel: it never holds more than
# _CHUNK_ELEMENTS distances in memory, however many samples there are.
_CHUNK_ELEMENTS = 1 << 16

# Seedings tried on a summary when there are more samples than this.
_SUMMARY_MIN_SAMPLES = 20_000
# Cells of the summary grid along each feature (at most 2**18 cells in all).
_SUMMARY_LEVELS = 32
_SUMMARY_MAX_CELLS = 1 << 18
_SUMMARY_SHRINK = 4

# Starts (best first on the summary) that go on to run on the data itself: at most
# _REFINE_TOP, and fewer when n_samples * n_clusters is more than a third of the budget.
_REFINE_TOP = 3
_REFINE_BUDGET = 7_000_000

# A refined run is polished only when its objective is within this fraction of the
# best so far: polishing gains some 0.1-0.2% on photos.
_POLISH_REACH = 0.005

# Without a summary: Lloyd iterations each seeding gets before only the best goes on.
_SCREEN_ITER = 5

# Relative safety margin on Hamerly's bounds, far above float64 rounding:
# a bound may only err on the side of checking a sample once more.
_BOUND_SLACK = 1e-9


# The largest number of clusters the command line accepts (hw2.py refuses more up front).
MAX_CLUSTERS = 1 << 16


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


class KMeansResult(NamedTuple):
    """What :func:`kmeans` returns.

    Attributes
    ----------
    centers : ndarray of shape (n_clusters, n_features)
        The cluster centres (float64).
    labels : ndarray of shape (n_samples,)
        Index of the centre nearest to each sample; always consistent with
        ``centers``.
    inertia : float
        Weighted sum of squared distances of the samples to their centres.
    n_iter : int
        Lloyd iterations run by the best start.
    converged : bool
        Whether the best start stopped before ``max_iter``.
    """

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    converged: bool


def kmeans(X, n_clusters, *, sample_weight=None, init="k-means++", n_init=1,
           max_iter=300, tol=1e-4, polish=False, rng=None, callback=None):
    """Cluster ``X`` into ``n_clusters`` groups with Lloyd's algorithm.

    Parameters
    ----------
    X : array_like of shape (n_samples, n_features)
        The data, finite.
    n_clusters : int
        Number of clusters, ``1 <= n_clusters <= n_samples``.
    sample_weight : array_like of shape (n_samples,), optional
        Non-negative weight of each sample (default: all ones).
    init : {"k-means++", "random"} or ndarray of shape (n_clusters, n_features)
        ``"k-means++"``: greedy k-means++ seeding.  ``"random"``: ``n_clusters``
        distinct samples drawn in proportion to their weight.  An array: these
        initial centres (then one run, whatever ``n_init``).
    n_init : int
        Number of seedings.  On up to 20,000 samples each gets a few Lloyd
        iterations and the one with the lowest objective runs on to
        convergence.  On more, each runs to convergence on a weighted summary
        of the data (the means of the occupied cells of a 32-level grid), and
        the best three of those (fewer when ``n_samples * n_clusters`` exceeds
        about 2 million) run to convergence on the data itself (and are
        polished, if asked); the lowest objective wins.
    max_iter : int
        Most Lloyd iterations per seeding.
    tol : float
        Relative tolerance: a run stops when the summed squared shift of the
        centres falls below ``tol`` times the mean per-feature variance of
        ``X`` (so the default suits data on 0..1 and 0..255 alike).
    polish : bool
        Whether the runs on ``X`` that finish, once within ``tol``, go on until
        no label changes (within ``max_iter`` iterations each), with
        extrapolated steps; of several runs, those within 0.5% of the best.
        Lloyd's last steps are small but many: they lower the objective by
        about 0.1-0.2% on photos.
    rng : numpy.random.Generator, optional
        Source of randomness (default: ``np.random.default_rng(0)``).
    callback : callable, optional
        Called as ``callback(iteration, inertia)`` after each assignment step
        on ``X`` itself (not on the summary).

    Returns
    -------
    KMeansResult
        Centres, labels, inertia, iterations and convergence of the best run.
    """
    X, weights = check_data(X, sample_weight)
    _check_n_clusters(X, weights, n_clusters)
    start = _check_init(init, n_clusters, X.shape[1])
    if n_init < 1 or max_iter < 1:
        raise ValueError(f"n_init={n_init} and max_iter={max_iter} should be >= 1.")
    rng = np.random.default_rng(0) if rng is None else rng
    tol_abs = tol * float(np.mean(weighted_variance(X, weights)))
    x_sq = _row_norms(X)
    if start is not None:
        return _lloyd(X, weights, start, max_iter, tol_abs, x_sq, callback, polish=polish)
    summary = _grid_summary(X, weights) if len(X) > _SUMMARY_MIN_SAMPLES else None
    if summary is None or len(summary[0]) < n_clusters:
        return _best_start(X, weights, n_clusters, init, n_init, max_iter, tol_abs, rng,
                           x_sq, callback, polish)
    runs = _refined_runs(X, weights, summary, n_clusters, init, n_init, max_iter, tol_abs,
                         rng, x_sq, callback, polish)
    return min(runs, key=lambda run: run.inertia)


def _refined_runs(X, weights, summary, n_clusters, init, n_init, max_iter, tol_abs, rng,
                  x_sq, callback=None, polish=False):
    """Seed and run ``n_init`` times on the summary; run the best few on ``X``.

    Returns
    -------
    list of KMeansResult
        The runs on ``X``, as many as a budget of work allows (at least one).
    """
    S, s_weights = summary
    s_sq = _row_norms(S)
    seeded = sorted((_lloyd_plain(S, s_weights, INITS[init](S, n_clusters, s_weights, rng,
                                                            s_sq), max_iter, tol_abs, s_sq)
                     for _ in range(n_init)), key=lambda run: run.inertia)
    # The summary's ranking of the starts is only roughly that of the data's, so the
    # best few go on, as many as a budget of sample-centre pairs allows.
    n_refine = int(np.clip(_REFINE_BUDGET // (len(X) * n_clusters), 1, _REFINE_TOP))
    refined = sorted((_lloyd_steps(X, weights, run.centers, max_iter, tol_abs, x_sq, callback)
                      for run in seeded[:n_refine]), key=lambda pair: pair[0].inertia)
    if not polish:
        return [result for result, _ in refined]
    runs = []
    for result, resume in refined:
        # A polish gains some 0.1-0.2%: runs further behind the best are left as they are.
        if runs and result.inertia > min(run.inertia for run in runs) * (1.0 + _POLISH_REACH):
            break
        runs.append(resume() if resume is not None else result)
    return runs


def _lloyd_extrapolated(X, weights, centers, max_iter, tol_abs, x_sq, callback=None,
                        first_iter=1):
    """Lloyd's iterations with extrapolated steps, from ``centers`` on checked input.

    Lloyd's centres often creep along much the same direction for many
    iterations.  So each step first tries going twice as far (the new means
    plus their last move) and keeps that only when it lowers the objective
    below that of the means with the old labels, which plain Lloyd would have
    reached; otherwise it takes the plain step.  The objective still falls at
    every step, so the run ends, in a quarter to a half of the iterations on
    photos.  It stops, like :func:`_lloyd`, when a plain step changes no
    label or moves the centres by at most ``tol_abs`` (summed squared shift).

    Returns
    -------
    KMeansResult
    """
    bounds = _Bounds(X, x_sq, centers)
    totals = _ClusterTotals(X, weights, bounds.labels, len(centers))
    return _extrapolated_steps(X, weights, x_sq, bounds, totals, centers,
                               range(first_iter, first_iter + max_iter), tol_abs, callback)


def _extrapolated_steps(X, weights, x_sq, bounds, totals, centers, iterations, tol_abs,
                        callback=None):
    """:func:`_lloyd_extrapolated` from a state: bounds and totals for ``centers``' labels.

    Parameters
    ----------
    iterations : range
        The numbers of the iterations to run at most.

    Returns
    -------
    KMeansResult
    """
    sq_total = float(weights @ x_sq)
    previous = centers
    converged, n_iter = False, iterations.start - 1
    for n_iter in iterations:
        if callback is not None:
            callback(n_iter, totals.objective(centers, sq_total))
        means, relocated = totals.centers(centers, bounds.labels)
        if relocated:  # an empty cluster moved: the bounds start afresh there
            bounds = _Bounds(X, x_sq, means)
            totals = _ClusterTotals(X, weights, bounds.labels, len(means))
            centers = previous = means
            continue
        if float(np.sum((means - centers) ** 2)) <= tol_abs:
            _move_centers(bounds, totals, centers, means)
            centers, converged = means, True
            break
        before = bounds.labels.copy()
        plain = totals.objective(means, sq_total)
        trial = 2.0 * means - previous
        _move_centers(bounds, totals, centers, trial)
        previous = means
        if totals.objective(trial, sq_total) < plain and totals.members.min() > 0:
            centers = trial
            continue
        _move_centers(bounds, totals, trial, means)
        centers = means
        if np.array_equal(bounds.labels, before):
            converged = True
            break
    labels = bounds.labels
    return KMeansResult(centers, labels, _inertia(X, weights, centers, labels), n_iter,
                        converged)


def _move_centers(bounds, totals, centers, new_centers):
    """Relabel after the centres moved from ``centers`` to ``new_centers``; update totals."""
    shifts = np.sqrt(_row_norms(new_centers - centers))
    moved, old_labels = bounds.update(new_centers, shifts)
    totals.move(moved, old_labels, bounds.labels[moved])


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


def _best_start(X, weights, n_clusters, init, n_init, max_iter, tol_abs, rng, x_sq,
                callback=None, polish=False):
    """Seed ``n_init`` times, run each a few iterations, finish the best.

    Returns
    -------
    KMeansResult
    """
    screen_iter = min(_SCREEN_ITER, max_iter) if n_init > 1 else max_iter
    best = None
    for _ in range(n_init):
        centers = INITS[init](X, n_clusters, weights, rng, x_sq)
        result = _lloyd(X, weights, centers, screen_iter, tol_abs, x_sq, callback,
                        polish=polish and n_init == 1)
        if best is None or result.inertia < best.inertia:
            best = result
    if best.n_iter >= max_iter or (best.converged and (n_init == 1 or not polish)):
        return best
    return _lloyd(X, weights, best.centers, max_iter - best.n_iter, tol_abs, x_sq, callback,
                  first_iter=best.n_iter + 1, polish=polish)


def auto_n_init(n_samples, n_clusters):
    """How many seedings to try: several when they are cheap enough.

    Seedings on more than 20,000 samples are tried on a summary of a few
    thousand points (see :func:`kmeans`), so they count as ``_SUMMARY_COST``
    samples each, and up to 20 of them are tried (10 without the summary).

    Parameters
    ----------
    n_samples, n_clusters : int

    Returns
    -------
    int
        Between 1 and 20, shrinking as ``n_samples * n_clusters`` grows.
    """
    summarised = n_samples > _SUMMARY_MIN_SAMPLES
    n_seeded = _SUMMARY_COST if summarised else n_samples
    most = _MAX_N_INIT if summarised else _MAX_N_INIT // 2
    return int(np.clip(_N_INIT_BUDGET // max(1, n_seeded * n_clusters), 1, most))


# Sample-centre pairs worth of seedings to spend, and the most seedings worth trying on
# the summary (it ranks them only roughly, so more buys little).
_N_INIT_BUDGET = 4_000_000
_MAX_N_INIT = 20
# What a seeding on the summary costs, in samples.
_SUMMARY_COST = 10_000


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
    if x_sq is None:
        x_sq = _row_norms(X)
    labels, min_sq_dist, _ = _nearest_two(X, centers, x_sq, second=False)
    return labels, min_sq_dist


def _nearest_two(X, centers, x_sq, second=True):
    """Nearest centre of each row, its squared distance and that of the runner-up.

    Works over blocks of rows; ``||x||^2`` is added only to the two minima,
    since it does not change which centre is nearest.

    Returns
    -------
    labels : ndarray of shape (n_samples,), intp
    first : ndarray of shape (n_samples,)
        Squared distance to the nearest centre, clipped at zero.
    second : ndarray of shape (n_samples,) or None
        Squared distance to the second nearest (``inf`` with one centre).
    """
    n_samples, n_clusters = len(X), len(centers)
    minus_two_ct = -2.0 * centers.T
    c_sq = _row_norms(centers)
    labels = np.empty(n_samples, dtype=np.intp)
    first = np.empty(n_samples)
    runner_up = np.empty(n_samples) if second else None
    step = max(1, _CHUNK_ELEMENTS // max(1, n_clusters))
    for start in range(0, n_samples, step):
        stop = min(start + step, n_samples)
        dist = X[start:stop] @ minus_two_ct
        dist += c_sq
        nearest = np.argmin(dist, axis=1)
        rows = np.arange(stop - start)
        labels[start:stop] = nearest
        first[start:stop] = dist[rows, nearest]
        if second:
            dist[rows, nearest] = np.inf
            runner_up[start:stop] = dist.min(axis=1)
    first += x_sq
    np.maximum(first, 0.0, out=first)
    if second:
        runner_up += x_sq
        np.maximum(runner_up, 0.0, out=runner_up)
    return labels, first, runner_up


def _row_norms(X):
    """Squared Euclidean norm of each row, shape (n_samples,)."""
    return np.einsum("ij,ij->i", X, X)


def weighted_variance(X, weights):
    """Per-feature variance of ``X`` under sample weights.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    weights : ndarray of shape (n_samples,)

    Returns
    -------
    ndarray of shape (n_features,)
    """
    total = weights.sum()
    mean = weights @ X / total
    return weights @ (X - mean) ** 2 / total


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
        raise ValueError("X contains NaN or infinity.")
    if sample_weight is None:
        return X, np.ones(len(X))
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.shape != (len(X),):
        raise ValueError(f"sample_weight has shape {weights.shape}, expected ({len(X)},).")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("sample_weight should be finite and non-negative.")
    return X, weights


def _check_n_clusters(X, weights, n_clusters):
    n_positive = int(np.count_nonzero(weights))
    if not 1 <= n_clusters <= n_positive:
        raise ValueError(f"n_clusters={n_clusters} should be >= 1 and <= the number of "
                         f"samples with positive weight ({n_positive}).")


# ---------------------------------------------------------------- seeding

def _sq_dist_to(X, x_sq, points):
    """Squared distances from each of ``points`` to every row of ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    x_sq : ndarray of shape (n_samples,)
    points : ndarray of shape (n_points, n_features)

    Returns
    -------
    ndarray of shape (n_points, n_samples)
        One row per point (rows, not columns: NumPy's loops run fastest along them).
    """
    d2 = (-2.0 * points) @ X.T
    d2 += x_sq
    d2 += _row_norms(points)[:, None]
    return np.maximum(d2, 0.0, out=d2)


def _kmeans_plusplus(X, n_clusters, weights, rng, n_local_trials=None, x_sq=None):
    """Greedy k-means++ on checked input; returns the chosen row indices."""
    if x_sq is None:
        x_sq = _row_norms(X)
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    indices = np.empty(n_clusters, dtype=np.intp)
    indices[0] = rng.choice(len(X), p=weights / weights.sum())
    closest = _sq_dist_to(X, x_sq, X[indices[:1]])[0]
    for c in range(1, n_clusters):
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


def _init_plusplus(X, n_clusters, weights, rng, x_sq):
    return X[_kmeans_plusplus(X, n_clusters, weights, rng, x_sq=x_sq)].copy()


def _init_random(X, n_clusters, weights, rng, x_sq):
    rows = rng.choice(len(X), size=n_clusters, replace=False, p=weights / weights.sum())
    return X[rows].copy()


INITS = {"k-means++": _init_plusplus, "random": _init_random}


def _grid_summary(X, weights):
    """The weighted means and total weights of the occupied cells of a grid over ``X``.

    The grid has ``_SUMMARY_LEVELS`` cells along each feature over its range
    (fewer when there would be more than ``_SUMMARY_MAX_CELLS`` in all).

    Returns
    -------
    (points, weights) : ndarrays of shapes (n_cells, n_features) and (n_cells,)
        Or None when the grid would not make the data much smaller.
    """
    n_samples, n_features = X.shape
    levels = min(_SUMMARY_LEVELS, int(_SUMMARY_MAX_CELLS ** (1.0 / n_features)))
    if levels < 2:
        return None
    low, high = X.min(axis=0), X.max(axis=0)
    scale = levels / np.where(high > low, high - low, 1.0)
    keys = np.zeros(n_samples, dtype=np.intp)
    for j in range(n_features):
        cell = ((X[:, j] - low[j]) * scale[j]).astype(np.intp)
        np.minimum(cell, levels - 1, out=cell)
        keys *= levels
        keys += cell
    mass = np.bincount(keys, weights=weights, minlength=levels ** n_features)
    occupied = np.flatnonzero(mass)
    if len(occupied) * _SUMMARY_SHRINK > n_samples:
        return None
    sums = np.stack([np.bincount(keys, weights=weights * X[:, j], minlength=len(mass))[occupied]
                     for j in range(n_features)], axis=1)
    return sums / mass[occupied, None], mass[occupied]


# ---------------------------------------------------------------- Lloyd

def _lloyd(X, weights, centers, max_iter, tol_abs, x_sq, callback=None, first_iter=1,
           polish=False):
    """Lloyd iterations from ``centers`` on checked input, pruned by distance bounds.

    Iterations are numbered from ``first_iter`` (to continue an earlier run).
    With ``polish``, a run that stops within ``tol_abs`` goes on with
    extrapolated steps (:func:`_lloyd_extrapolated`) until no label changes,
    within ``max_iter`` iterations in all; it still counts as converged.

    Returns
    -------
    KMeansResult
    """
    result, resume = _lloyd_steps(X, weights, centers, max_iter, tol_abs, x_sq, callback,
                                  first_iter)
    return resume() if polish and resume is not None else result


def _lloyd_steps(X, weights, centers, max_iter, tol_abs, x_sq, callback=None, first_iter=1):
    """:func:`_lloyd` without the polish, and what it takes to polish later.

    Returns
    -------
    result : KMeansResult
    resume : callable or None
        For a run stopped within ``tol_abs`` with labels still changing and
        iterations to spare: ``resume()`` polishes it from where it stopped,
        with its bounds, and returns the polished KMeansResult.
    """
    bounds = _Bounds(X, x_sq, centers)
    totals = _ClusterTotals(X, weights, bounds.labels, len(centers))
    converged, n_iter, moved = False, first_iter - 1, []
    for n_iter in range(first_iter, first_iter + max_iter):
        if callback is not None:
            callback(n_iter, _inertia(X, weights, centers, bounds.labels))
        new_centers, relocated = totals.centers(centers, bounds.labels)
        shifts = np.sqrt(_row_norms(new_centers - centers))
        centers = new_centers
        if relocated:
            old = bounds.labels
            bounds = _Bounds(X, x_sq, centers)
            moved = np.flatnonzero(bounds.labels != old)
            old_labels = old[moved]
        else:
            moved, old_labels = bounds.update(centers, shifts)
        totals.move(moved, old_labels, bounds.labels[moved])
        if len(moved) == 0 or float(shifts @ shifts) <= tol_abs:
            converged = True
            break
    labels = bounds.labels
    result = KMeansResult(centers, labels, _inertia(X, weights, centers, labels), n_iter,
                          converged)
    iterations = range(n_iter + 1, first_iter + max_iter)
    if not (converged and len(moved) > 0 and len(iterations) > 0):
        return result, None

    def resume():
        polished = _extrapolated_steps(X, weights, x_sq, bounds, totals, centers, iterations,
                                       0.0, callback)
        return polished._replace(converged=True)
    return result, resume


def _lloyd_plain(X, weights, centers, max_iter, tol_abs, x_sq):
    """Lloyd iterations with every distance at every step, for small data (the summary).

    On a few thousand samples the bookkeeping of :func:`_lloyd`'s bounds costs
    more than the distances it saves; the steps and the result are the same.

    Returns
    -------
    KMeansResult
        Its ``inertia`` is from the expanded distances (accurate to rounding).
    """
    n_clusters = len(centers)
    weighted = np.ascontiguousarray((X * weights[:, None]).T)  # one row per feature
    labels = _nearest_labels(X, centers)
    converged, n_iter = False, 0
    for n_iter in range(1, max_iter + 1):
        mass = np.bincount(labels, weights=weights, minlength=n_clusters)
        if (mass > 0).all():
            new_centers = np.stack([np.bincount(labels, weights=feature, minlength=n_clusters)
                                    for feature in weighted], axis=1) / mass[:, None]
        else:  # rare: let the totals move the empty clusters
            new_centers, _ = _ClusterTotals(X, weights, labels, n_clusters).centers(centers,
                                                                                 labels)
        shift = float(np.sum((new_centers - centers) ** 2))
        centers = new_centers
        new_labels = _nearest_labels(X, centers)
        unchanged = np.array_equal(new_labels, labels)
        labels = new_labels
        if unchanged or shift <= tol_abs:
            converged = True
            break
    labels, sq_dist = assign(X, centers, x_sq)
    return KMeansResult(centers, labels, float(weights @ sq_dist), n_iter, converged)


def _nearest_labels(X, centers):
    """Index of the nearest centre of each row (the lowest on ties), as in :func:`assign`.

    Only the labels: ``-2 x.c + ||c||^2`` in blocks of rows, nothing else kept.
    """
    minus_two_ct = -2.0 * centers.T
    c_sq = _row_norms(centers)
    labels = np.empty(len(X), dtype=np.intp)
    step = max(1, _CHUNK_ELEMENTS // max(1, len(centers)))
    for start in range(0, len(X), step):
        dist = X[start:start + step] @ minus_two_ct
        dist += c_sq
        labels[start:start + step] = np.argmin(dist, axis=1)
    return labels


def _inertia(X, weights, centers, labels):
    """Weighted sum of squared distances of the samples to their centres (exact)."""
    total = 0.0
    for start in range(0, len(X), _CHUNK_ELEMENTS):
        stop = min(start + _CHUNK_ELEMENTS, len(X))
        diff = X[start:stop] - centers[labels[start:stop]]
        total += float(weights[start:stop] @ _row_norms(diff))
    return total


class _Bounds:
    """Labels kept exact through Lloyd's iterations with few distances computed.

    Hamerly's argument with one drift for all centres: after a sample was
    last checked, with distance ``u`` to its centre and at least ``l`` to any
    other, no other centre can become nearer until the centres have moved,
    summed over iterations of the largest move, by ``(l - u) / 2``.  So each
    sample keeps the *deadline* at which that sum (``drift``) runs out, and
    only the samples past their deadline are looked at again: first against
    their own centre and half the gap to its nearest neighbour, and only
    then against every centre.

    Attributes
    ----------
    labels : ndarray of shape (n_samples,)
        Nearest centre of each sample.
    """

    def __init__(self, X, x_sq, centers):
        self.X, self.x_sq = X, x_sq
        self.x_sq_max = float(x_sq.max(initial=0.0))
        self.drift = 0.0
        self.labels, upper, lower = self._nearest(np.arange(len(X)), centers)
        self.lower_at = lower
        self.deadline = 0.5 * (lower - upper)

    def _nearest(self, rows, centers):
        """Labels, upper and lower bounds of ``rows`` from all the distances."""
        X, x_sq = (self.X, self.x_sq) if len(rows) == len(self.X) else \
            (self.X[rows], self.x_sq[rows])
        labels, first, second = _nearest_two(X, centers, x_sq)
        # ||x||^2 - 2 x.c + ||c||^2 loses about eps * (||x||^2 + ||c||^2) to cancellation.
        margin = _BOUND_SLACK * (self.x_sq_max + float(_row_norms(centers).max()))
        upper = np.sqrt(first + margin)
        second -= margin
        lower = np.sqrt(np.maximum(second, 0.0, out=second))
        return labels, upper, lower

    def update(self, centers, shifts):
        """Relabel after the centres moved by ``shifts``; return who moved, and from where.

        Returns
        -------
        moved : ndarray of int
            Samples whose label changed.
        old_labels : ndarray of int
            Their labels before.
        """
        self.drift += float(shifts.max()) * (1.0 + _BOUND_SLACK)
        unsure = np.flatnonzero(self.deadline <= self.drift)
        empty = np.empty(0, dtype=np.intp)
        if len(unsure) == 0:
            return empty, empty
        labels = self.labels[unsure]
        diff = self.X[unsure] - centers[labels]
        upper = np.sqrt(_row_norms(diff)) * (1.0 + _BOUND_SLACK)
        lower = np.maximum(self.lower_at[unsure] - self.drift,
                           2.0 * _half_gaps(centers)[labels] - upper)
        self._store(unsure, upper, lower)
        unsure = unsure[upper > lower]
        if len(unsure) == 0:
            return empty, empty
        nearest, upper, lower = self._nearest(unsure, centers)
        self._store(unsure, upper, lower)
        changed = nearest != self.labels[unsure]
        moved = unsure[changed]
        old_labels = self.labels[moved]
        self.labels[moved] = nearest[changed]
        return moved, old_labels

    def _store(self, rows, upper, lower):
        self.lower_at[rows] = lower + self.drift
        self.deadline[rows] = self.drift + 0.5 * (lower - upper)


def _half_gaps(centers):
    """Half the distance from each centre to the nearest other one, rounded down.

    Returns
    -------
    ndarray of shape (n_clusters,)
        ``inf`` when there is one centre.
    """
    if len(centers) == 1:
        return np.full(1, np.inf)
    c_sq = _row_norms(centers)
    _, _, second = _nearest_two(centers, centers, c_sq)
    second -= _BOUND_SLACK * 2.0 * float(c_sq.max())
    return 0.5 * np.sqrt(np.maximum(second, 0.0))


class _ClusterTotals:
    """Weighted sums, masses and member counts of the clusters, kept up to date.

    Only the samples that change cluster are added and subtracted, which is
    exact for integer data and weights (photos) and accurate to rounding
    otherwise.
    """

    def __init__(self, X, weights, labels, n_clusters):
        self.X, self.weights, self.n_clusters = X, weights, n_clusters
        self.positive = (weights > 0).astype(np.float64)
        self.sums = self._sum(labels, X, weights)
        self.mass = np.bincount(labels, weights=weights, minlength=n_clusters)
        self.members = np.bincount(labels, weights=self.positive, minlength=n_clusters)

    def _sum(self, labels, X, weights):
        return np.stack([np.bincount(labels, weights=weights * X[:, j],
                                     minlength=self.n_clusters)
                         for j in range(X.shape[1])], axis=1)

    def move(self, samples, old_labels, new_labels):
        """Move ``samples`` from ``old_labels`` to ``new_labels``."""
        if len(samples) == 0:
            return
        X, weights = self.X[samples], self.weights[samples]
        positive = self.positive[samples]
        self.sums += self._sum(new_labels, X, weights) - self._sum(old_labels, X, weights)
        k = self.n_clusters
        self.mass += (np.bincount(new_labels, weights=weights, minlength=k)
                      - np.bincount(old_labels, weights=weights, minlength=k))
        self.members += (np.bincount(new_labels, weights=positive, minlength=k)
                         - np.bincount(old_labels, weights=positive, minlength=k))

    def objective(self, centers, sq_total):
        """The objective of the current labels with ``centers``, from the totals alone.

        ``sum w ||x - c||^2 = sum w ||x||^2 - sum_j (2 c_j . s_j - m_j ||c_j||^2)``
        with ``s_j``, ``m_j`` the weighted sum and mass of cluster ``j``.

        Parameters
        ----------
        centers : ndarray of shape (n_clusters, n_features)
        sq_total : float
            ``sum w ||x||^2`` over all samples.
        """
        return sq_total - float(np.sum(2.0 * np.einsum("ij,ij->i", centers, self.sums)
                                       - self.mass * _row_norms(centers)))

    def refresh(self, labels):
        """Recompute every total from scratch."""
        self.__init__(self.X, self.weights, labels, self.n_clusters)

    def centers(self, centers, labels):
        """The weighted means of the clusters; empty clusters move to far samples.

        Returns
        -------
        new_centers : ndarray of shape (n_clusters, n_features)
        relocated : bool
            Whether some empty cluster was moved (the bounds are then void).
        """
        filled = self.members > 0
        if (self.mass[filled] <= 0).any():  # lost to cancellation: start afresh
            self.refresh(labels)
        new_centers = centers.copy()
        new_centers[filled] = self.sums[filled] / self.mass[filled, None]
        empty = np.flatnonzero(~filled)
        if len(empty) == 0:
            return new_centers, False
        # Farthest samples first; only samples that carry weight can hold a cluster.
        sq_dist = _row_norms(self.X - centers[labels])
        far = np.argsort(np.where(self.weights > 0, sq_dist, -1.0))[::-1][:len(empty)]
        new_centers[empty] = self.X[far]
        return new_centers, True
