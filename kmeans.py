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
"""
from typing import Callable, NamedTuple, Optional

import numpy as np

# Rows handled at once by the distance kernel: it never holds more than
# _CHUNK_ELEMENTS distances in memory, however many samples there are.
_CHUNK_ELEMENTS = 1 << 18


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
           max_iter=300, tol=1e-4, rng=None, callback=None):
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
        Number of seedings; the run with the lowest inertia is returned.
    max_iter : int
        Most Lloyd iterations per seeding.
    tol : float
        Relative tolerance: a run stops when the summed squared shift of the
        centres falls below ``tol`` times the mean per-feature variance of
        ``X`` (so the default suits data on 0..1 and 0..255 alike).
    rng : numpy.random.Generator, optional
        Source of randomness (default: ``np.random.default_rng(0)``).
    callback : callable, optional
        Called as ``callback(iteration, inertia)`` after each assignment step.

    Returns
    -------
    KMeansResult
        Centres, labels, inertia, iterations and convergence of the best run.
    """
    X, weights = check_data(X, sample_weight)
    _check_n_clusters(X, weights, n_clusters)
    if isinstance(init, str) and init not in INITS:
        raise ValueError(f"init={init!r} is not one of {sorted(INITS)}.")
    if not isinstance(init, str):
        init = np.array(init, dtype=np.float64)
        if init.shape != (n_clusters, X.shape[1]):
            raise ValueError(f"init has shape {init.shape}, expected ({n_clusters}, {X.shape[1]}).")
        n_init = 1
    if n_init < 1 or max_iter < 1:
        raise ValueError(f"n_init={n_init} and max_iter={max_iter} should be >= 1.")
    rng = np.random.default_rng(0) if rng is None else rng
    tol_abs = tol * float(np.mean(weighted_variance(X, weights)))
    x_sq = np.einsum("ij,ij->i", X, X)
    best = None
    for _ in range(n_init):
        centers = init if not isinstance(init, str) else INITS[init](X, n_clusters, weights, rng, x_sq)
        result = _lloyd(X, weights, centers, max_iter, tol_abs, x_sq, callback)
        if best is None or result.inertia < best.inertia:
            best = result
    return best


def auto_n_init(n_samples, n_clusters):
    """How many seedings to try: several when the data is small enough to afford them.

    Parameters
    ----------
    n_samples, n_clusters : int

    Returns
    -------
    int
        Between 1 and 10, shrinking as ``n_samples * n_clusters`` grows.
    """
    return int(np.clip(_N_INIT_BUDGET // max(1, n_samples * n_clusters), 1, 10))


# Sample-centre pairs worth of seedings to spend: about a second of Lloyd iterations.
_N_INIT_BUDGET = 4_000_000


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
        x_sq = np.einsum("ij,ij->i", X, X)
    c_sq = np.einsum("ij,ij->i", centers, centers)
    n_samples = len(X)
    labels = np.empty(n_samples, dtype=np.intp)
    min_sq_dist = np.empty(n_samples)
    step = max(1, _CHUNK_ELEMENTS // max(1, len(centers)))
    for start in range(0, n_samples, step):
        stop = min(start + step, n_samples)
        dist = X[start:stop] @ centers.T
        dist *= -2.0
        dist += c_sq
        dist += x_sq[start:stop, None]
        labels[start:stop] = np.argmin(dist, axis=1)
        min_sq_dist[start:stop] = dist[np.arange(stop - start), labels[start:stop]]
    np.maximum(min_sq_dist, 0.0, out=min_sq_dist)
    return labels, min_sq_dist


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


def _sq_dist_to(X, x_sq, point):
    """Squared distances from every row of ``X`` to one point, shape (n_samples,)."""
    d2 = x_sq - 2.0 * (X @ point) + point @ point
    return np.maximum(d2, 0.0, out=d2)


def _kmeans_plusplus(X, n_clusters, weights, rng, n_local_trials=None, x_sq=None):
    """Greedy k-means++ on checked input; returns the chosen row indices."""
    if x_sq is None:
        x_sq = np.einsum("ij,ij->i", X, X)
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    indices = np.empty(n_clusters, dtype=np.intp)
    indices[0] = rng.choice(len(X), p=weights / weights.sum())
    closest = _sq_dist_to(X, x_sq, X[indices[0]])
    for c in range(1, n_clusters):
        cumulative = np.cumsum(weights * closest)
        if cumulative[-1] <= 0.0:  # every weighted sample already sits on a centre
            raise ValueError(f"X has fewer than n_clusters={n_clusters} distinct points "
                             "with positive weight.")
        draws = rng.uniform(size=n_local_trials) * cumulative[-1]
        candidates = np.minimum(np.searchsorted(cumulative, draws), len(X) - 1)
        best_potential, best_closest = np.inf, None
        for candidate in candidates:
            trial = np.minimum(closest, _sq_dist_to(X, x_sq, X[candidate]))
            potential = weights @ trial
            if potential < best_potential:
                best_potential, best_closest, indices[c] = potential, trial, candidate
        closest = best_closest
    return indices


def _init_plusplus(X, n_clusters, weights, rng, x_sq):
    return X[_kmeans_plusplus(X, n_clusters, weights, rng, x_sq=x_sq)].copy()


def _init_random(X, n_clusters, weights, rng, x_sq):
    rows = rng.choice(len(X), size=n_clusters, replace=False, p=weights / weights.sum())
    return X[rows].copy()


INITS = {"k-means++": _init_plusplus, "random": _init_random}


def _update_centers(X, weights, labels, centers, min_sq_dist):
    """Weighted means of the clusters; empty clusters move to far samples.

    Returns
    -------
    ndarray of shape (n_clusters, n_features)
    """
    n_clusters = len(centers)
    mass = np.bincount(labels, weights=weights, minlength=n_clusters)
    sums = np.stack([np.bincount(labels, weights=weights * X[:, j], minlength=n_clusters)
                     for j in range(X.shape[1])], axis=1)
    new_centers = centers.copy()
    filled = mass > 0
    new_centers[filled] = sums[filled] / mass[filled, None]
    empty = np.flatnonzero(~filled)
    if len(empty):
        # Farthest samples first; only samples that carry weight can hold a cluster.
        far = np.argsort(np.where(weights > 0, min_sq_dist, -1.0))[::-1][:len(empty)]
        new_centers[empty] = X[far]
    return new_centers


def _lloyd(X, weights, centers, max_iter, tol_abs, x_sq, callback=None):
    """Lloyd iterations from ``centers`` on checked input; returns a KMeansResult."""
    labels, min_sq_dist = assign(X, centers, x_sq)
    converged, n_iter = False, 0
    for n_iter in range(1, max_iter + 1):
        if callback is not None:
            callback(n_iter, float(weights @ min_sq_dist))
        new_centers = _update_centers(X, weights, labels, centers, min_sq_dist)
        shift = float(((new_centers - centers) ** 2).sum())
        centers = new_centers
        new_labels, min_sq_dist = assign(X, centers, x_sq)
        if np.array_equal(new_labels, labels) or shift <= tol_abs:
            labels, converged = new_labels, True
            break
        labels = new_labels
    return KMeansResult(centers, labels, float(weights @ min_sq_dist), n_iter, converged)
