#!/usr/bin/env python3
"""Benchmark hw2.py beside pngquant, scikit-learn and Pillow: its targets for speed,
quality and memory, each with its measured value and HOLDS or MISSED.

  pip install -r bench/requirements.txt
  python3 bench/bench.py                 # full run, writes bench/results.md (10-20 min)
  python3 bench/bench.py --quick         # small photos at k=20 and 256 only
  python3 bench/bench.py --kmeans-quality  # k-means against scikit-learn's best of ten at k=8, 20, 64
  python3 bench/bench.py --baseline /work/wt/baseline
      # fits that checkout's gmm.py ("today's" mixture) and writes bench/mixture_baseline.json

Every command runs in its own child process; its wall time and its peak
resident memory come from ``os.wait4`` on that child alone.  Candidates:

* ``hw2 kmeans`` / ``hw2 mixture``: ``python3 hw2.py --compress IN.png
  --clusters K --model M --output OUT.npz``, the whole command;
* ``pngquant``: ``pngquant --nofs --speed 1 K --force --output OUT.png
  IN.png``, the whole command (k <= 256 only; skipped when not on PATH);
* ``sklearn KMeans`` (``n_init=1`` or ``10``) and ``GaussianMixture``,
  ``Pillow quantize``: the fit alone, timed inside a child process.

Every photo is first saved as a PNG in bench/photos/ (not committed), and
every candidate reads that file.  Each result is scored here the same way
against the pixels as hw2.py reads them: the RGB mean squared error (the
k-means objective per pixel) and the mean Euclidean error.

The mixture's log-likelihood per pixel is computed by this script alone
(:func:`mixture_log_likelihood`, from the weights, means and covariances that
``gmm.fit_gmm`` returns), for today's code (``--baseline``, saved in
bench/mixture_baseline.json) and for the code under test alike.
"""
import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from typing import NamedTuple

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PHOTOS = os.path.join(HERE, "photos")
RESULTS = os.path.join(HERE, "results.md")
BASELINE_JSON = os.path.join(HERE, "mixture_baseline.json")
SAMPLE = os.path.join(ROOT, "samples", "rocket.jpg")
SKIMAGE_PHOTOS = ("chelsea", "coffee", "astronaut")
BIG_SIZE = (4000, 2670)  # 10.7 MP, 6.25 times the sample's 640x427
NOISY = "rocket_noisy_10.7mp.png"
BICUBIC = "rocket_10.7mp.jpg"
MIN_NOISY_COLOURS = 450_000
K_TARGETS = (20, 256)
K_SWEEP = (2, 4, 8, 16, 20, 32, 64, 128, 256)
K_LARGE = (1024, 4096)
PNGQUANT_MAX_K = 256
SEEDS_SMALL = (0, 1, 2, 3, 4)
REG_COVAR = 1.0 / 12.0  # gmm.py's default, for scikit-learn's GaussianMixture
TIMEOUT = 300
# hw2 and pngquant: the fastest of up to REPEATS runs, repeated while under REPEAT_BUDGET s.
REPEATS = 3
REPEAT_BUDGET = 10.0
# Runs at k = 1024 and 4096 are stopped here; their target is 10 s.
TIMEOUT_LARGE_K = 40
# The baseline's mixture at k = 256 on the noisy photo is kept when it takes less.
BASELINE_MAX_SECONDS = 60


# ---------------------------------------------------------------- photos

class Photo:
    """A photo of the bench: its PNG (what every candidate reads) and its pixels."""

    def __init__(self, label, png):
        self.label, self.png, self.name = label, png, os.path.basename(png)
        with Image.open(png) as image:
            self.pixels = np.asarray(image.convert("RGB"))
        self.n_pixels = self.pixels.shape[0] * self.pixels.shape[1]
        flat = self.pixels.reshape(-1, 3)
        keys = (flat[:, 0].astype(np.int32) << 16) | (flat[:, 1].astype(np.int32) << 8) | flat[:, 2]
        keys, self.counts = np.unique(keys, return_counts=True)
        self.colours = np.stack([keys >> 16, (keys >> 8) & 255, keys & 255], axis=1).astype(
            np.float64)
        self.sha256 = hashlib.sha256(self.pixels.tobytes()).hexdigest()[:16]

    def describe(self):
        height, width = self.pixels.shape[:2]
        return (f"{self.name} ({self.label}): {width}x{height} = {self.n_pixels / 1e6:.2f} MP, "
                f"{len(self.colours):,} distinct colours")


def as_png(source, name):
    """``source`` saved as bench/photos/<name>.png, from the pixels as hw2.py reads it."""
    path = os.path.join(PHOTOS, name + ".png")
    if not os.path.exists(path):
        sys.path.insert(0, ROOT)
        import codec
        pixels = codec.read_image(source)
        assert pixels.ndim == 3 and pixels.shape[2] == 3, f"{source} is not RGB"
        os.makedirs(PHOTOS, exist_ok=True)
        Image.fromarray(pixels).save(path + ".tmp", format="PNG", compress_level=1)
        os.replace(path + ".tmp", path)
    return path


def upscaled(noise_sigma=2.0):
    """The sample upscaled (bicubic) to 4000x2670, with Gaussian noise (seed 0), uint8."""
    with Image.open(SAMPLE) as image:
        big = np.asarray(image.convert("RGB").resize(BIG_SIZE, Image.BICUBIC))
    rng = np.random.default_rng(0)
    out = np.empty_like(big)
    for start in range(0, big.shape[0], 256):  # in strips, to keep the float copy small
        strip = big[start:start + 256].astype(np.float32)
        strip += rng.normal(0.0, noise_sigma, strip.shape).astype(np.float32)
        out[start:start + 256] = np.clip(np.rint(strip), 0, 255)
    return out


def small_photos():
    """PNG copies of the sample and of scikit-image's chelsea, coffee, astronaut."""
    paths = [as_png(SAMPLE, "rocket")]
    import skimage.data
    for name in SKIMAGE_PHOTOS:
        path = os.path.join(PHOTOS, name + ".png")
        if not os.path.exists(path):
            os.makedirs(PHOTOS, exist_ok=True)
            Image.fromarray(getattr(skimage.data, name)()).save(path, format="PNG")
        paths.append(path)
    return [Photo("~0.3 MP", path) for path in paths]


def bicubic_photo():
    """The sample upscaled with noise and saved as JPEG (as the bench always did), as PNG."""
    jpeg = os.path.join(PHOTOS, BICUBIC)
    if not os.path.exists(jpeg):
        os.makedirs(PHOTOS, exist_ok=True)
        Image.fromarray(upscaled()).save(jpeg, quality=92)
    return Photo("bicubic 10.7 MP, JPEG", as_png(jpeg, BICUBIC.rsplit(".", 1)[0]))


def noisy_photo():
    """The sample upscaled with noise (sigma 2), saved as PNG so the noise survives."""
    path = os.path.join(PHOTOS, NOISY)
    if not os.path.exists(path):
        os.makedirs(PHOTOS, exist_ok=True)
        Image.fromarray(upscaled()).save(path + ".tmp", format="PNG", compress_level=1)
        os.replace(path + ".tmp", path)
    photo = Photo("noisy 10.7 MP", path)
    assert len(photo.colours) >= MIN_NOISY_COLOURS, photo.describe()
    return photo


# ---------------------------------------------------------------- running

class TimedOut(Exception):
    pass


# Runs one command and writes its wall time and peak RSS to the file argv[1].  A small
# process of its own (python -S, about 10 MB): Linux carries a process's peak RSS over
# fork and exec, so a child forked by this script (hundreds of MB) would report ours.
_WRAPPER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"seconds": time.perf_counter() - started, "rss": usage.ru_maxrss / 1024,
               "cpu": usage.ru_utime + usage.ru_stime,
               "status": os.waitstatus_to_exitcode(status)}, out)
"""


class Run(NamedTuple):
    seconds: float  # wall clock
    rss: float  # peak resident set size, MB
    cpu: float  # user + system seconds
    stdout: str


def measured(cmd, timeout=TIMEOUT):
    """Run ``cmd`` from the project's root; return its Run.

    ``os.wait4`` (in a small wrapper process) gives the resource usage of that
    one child, so the peak RSS is its own.  Raises TimedOut after ``timeout``
    seconds (the child is killed).
    """
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        usage_file = os.path.join(tmp, "usage.json")
        with open(os.path.join(tmp, "stdout"), "w+") as out, \
                open(os.path.join(tmp, "stderr"), "w+") as err:
            wrapper = subprocess.Popen([sys.executable, "-S", "-c", _WRAPPER, usage_file] + cmd,
                                       cwd=ROOT, stdout=out, stderr=err, start_new_session=True)
            try:
                wrapper.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(wrapper.pid, 9)  # the wrapper and the command it runs
                wrapper.wait()
                raise TimedOut(f"stopped after {timeout} s") from None
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        with open(usage_file) as handle:
            usage = json.load(handle)
    if usage["status"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({usage['status']}):\n{stderr[-800:]}")
    return Run(usage["seconds"], usage["rss"], usage["cpu"], stdout)


def fastest(cmd, out, timeout=TIMEOUT):
    """The fastest of up to REPEATS runs of ``cmd``: repeated while they take under
    REPEAT_BUDGET seconds in all, so that short runs, the most disturbed by other
    processes, are timed more than once.  Returns (Run, number of runs)."""
    runs = []
    while not runs or (len(runs) < REPEATS and sum(run.seconds for run in runs) < REPEAT_BUDGET):
        if os.path.exists(out):
            os.remove(out)
        runs.append(measured(cmd, timeout))
    return min(runs, key=lambda run: run.seconds), len(runs)


def short(exc):
    """The last line of an error, short enough for a table cell."""
    lines = [line for line in str(exc).splitlines() if line.strip()] or ["failed"]
    return lines[-1][-150:].replace("|", "/")


def hw2_command(image, k, model, out):
    return [sys.executable, "hw2.py", "--compress", image, "--clusters", str(k),
            "--model", model, "--output", out]


def pngquant_command(image, k, out):
    return ["pngquant", "--nofs", "--speed", "1", str(k), "--force", "--output", out, image]


def errors(pixels, palette, labels):
    """(RGB mean squared error, mean Euclidean error) of ``palette[labels]`` vs ``pixels``."""
    flat = pixels.reshape(-1, 3)
    labels = labels.reshape(-1)
    palette = np.asarray(palette, dtype=np.float64)
    squared = distance = 0.0
    step = 1 << 20
    for start in range(0, len(flat), step):
        diff = flat[start:start + step].astype(np.float64) - palette[labels[start:start + step]]
        sq = np.einsum("ij,ij->i", diff, diff)
        squared += float(sq.sum())
        distance += float(np.sqrt(sq).sum())
    return squared / len(flat), distance / len(flat)


def run_row(name, photo, k, timeout=TIMEOUT, **task):
    """Run one candidate on one photo at one k; return its row (None for pngquant if absent)."""
    tmp = tempfile.mkdtemp(prefix="bench-")
    try:
        row = {"name": name, "photo": photo.name, "k": k}
        try:
            if name.startswith("hw2"):
                out = os.path.join(tmp, "out.npz")
                run, row["runs"] = fastest(hw2_command(photo.png, k, name.split()[1], out),
                                           out, timeout)
                with np.load(out) as codebook:
                    palette, labels = codebook["means"], codebook["assignments"]
                row["printed"] = float(run.stdout.split()[-1])
            elif name == "pngquant":
                out = os.path.join(tmp, "out.png")
                run, row["runs"] = fastest(pngquant_command(photo.png, k, out), out, timeout)
                with Image.open(out) as image:
                    assert image.mode == "P", image.mode
                    labels = np.asarray(image)
                    palette = np.asarray(image.getpalette()[:3 * 256]).reshape(-1, 3)
            else:
                out = os.path.join(tmp, "out.npz")
                task = {"name": name, "image": photo.png, "k": k, "out": out, **task}
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(task)]
                run = measured(cmd, timeout)
                row.update(json.loads(run.stdout.splitlines()[-1]))
                with np.load(out) as saved:
                    palette, labels = saved["means"], saved["labels"]
            if not name.startswith(("sklearn", "Pillow")):
                row["bytes"] = os.path.getsize(out)
        except (TimedOut, RuntimeError) as exc:  # a run that fails is a row, not the end
            row.update(seconds=None, note=short(exc), timed_out=isinstance(exc, TimedOut),
                       timeout=timeout)
            print(f"  {photo.name} k={k} {name}: {exc}", file=sys.stderr, flush=True)
            return row
        row.setdefault("seconds", run.seconds)  # a worker's: its fit alone
        row["rss"], row["cpu"] = run.rss, run.cpu
        row["mse"], row["error"] = errors(photo.pixels, palette, labels)
        if "printed" in row and abs(row["printed"] - row["error"]) > 1e-6 * row["error"]:
            row["note"] = f"prints {row['printed']:.6f}, not the mean error"
        print(f"  {photo.name} k={k} {name}: {row['seconds']:.2f} s, {run.rss:.0f} MB, "
              f"MSE {row['mse']:.3f}", file=sys.stderr, flush=True)
        return row
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- workers

def worker(task):
    """Run one reference (or one mixture fit) in this child process; print a JSON line."""
    name, k, out = task["name"], task["k"], task["out"]
    extra = {}
    if name == "mixture fit":
        sys.path.insert(0, task["root"])
        import codec
        import gmm
        pixels = codec.read_image(task["image"])
        colours, counts = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0, return_counts=True)
        X = colours.astype(np.float64)
        started = time.perf_counter()
        # As hw2.py's fit_colours calls it.
        fit = gmm.fit_gmm(X, k, sample_weight=counts, rng=np.random.default_rng(task["seed"]))
        seconds = time.perf_counter() - started
        np.savez(out, means=fit.means, weights=fit.weights, covariances=covariances_of(fit))
        if hasattr(gmm, "score"):  # the module's own number, a cross-check of ours
            extra["gmm_score"] = float(gmm.score(X, fit, counts))
        extra["n_iter"] = int(fit.n_iter)
        print(json.dumps({"seconds": seconds, **extra}))
        return
    with Image.open(task["image"]) as opened:
        rgb = opened.convert("RGB")
        rgb.load()
    if name.startswith("sklearn"):
        X = np.asarray(rgb).reshape(-1, 3).astype(np.float64)
        if name.startswith("sklearn KMeans"):
            from sklearn.cluster import KMeans
            model = KMeans(n_clusters=k, n_init=task["n_init"], random_state=0)
        else:
            from sklearn.mixture import GaussianMixture
            model = GaussianMixture(k, covariance_type="full", reg_covar=REG_COVAR,
                                    random_state=0)
        started = time.perf_counter()
        model.fit(X)
        seconds = time.perf_counter() - started
        if name.startswith("sklearn KMeans"):
            means, labels = model.cluster_centers_, model.labels_
        else:
            means, labels = model.means_, model.predict(X)
            extra["loglik"] = float(model.score(X))
        extra["n_iter"] = int(model.n_iter_)
    else:  # Pillow
        started = time.perf_counter()
        quantized = rgb.quantize(k, method=Image.Quantize.MEDIANCUT, kmeans=task["kmeans"])
        seconds = time.perf_counter() - started
        labels = np.asarray(quantized)
        means = np.asarray(quantized.getpalette()[:3 * 256]).reshape(-1, 3)
    np.savez(out, labels=labels, means=np.asarray(means, dtype=np.float64))
    print(json.dumps({"seconds": seconds, **extra}))


def covariances_of(fit):
    """The covariances of a gmm.GMMResult (or rebuilt from its precision Cholesky factors)."""
    if hasattr(fit, "covariances"):
        return np.asarray(fit.covariances, dtype=np.float64)
    chol = np.asarray(fit.precisions_cholesky, dtype=np.float64)
    return np.linalg.inv(chol @ np.swapaxes(chol, 1, 2))


# ---------------------------------------------------------------- the mixture's score

def mixture_log_likelihood(X, counts, weights, means, covariances):
    """Mean log-likelihood per pixel of a full-covariance Gaussian mixture.

    Written here, apart from either gmm.py, so that today's fit and the new
    one are scored by the same function.

    Parameters
    ----------
    X : ndarray of shape (n_colours, 3)
        Distinct colours.
    counts : ndarray of shape (n_colours,)
        Pixels of each colour.
    weights : ndarray of shape (k,)
    means : ndarray of shape (k, 3)
    covariances : ndarray of shape (k, 3, 3)

    Returns
    -------
    float
        ``sum_i counts_i log(sum_j weights_j N(X_i | means_j, covariances_j)) / sum_i counts_i``.
    """
    lower = np.linalg.cholesky(covariances)
    inverse_lower = np.linalg.inv(lower)
    log_det = 2.0 * np.log(np.diagonal(lower, axis1=1, axis2=2)).sum(axis=1)
    constant = np.log(weights) - 0.5 * (X.shape[1] * np.log(2.0 * np.pi) + log_det)
    total = 0.0
    step = max(1024, (1 << 22) // len(means))
    for start in range(0, len(X), step):
        block = X[start:start + step]
        log_prob = np.empty((len(block), len(means)))
        for j in range(len(means)):
            z = (block - means[j]) @ inverse_lower[j].T
            log_prob[:, j] = constant[j] - 0.5 * np.einsum("ij,ij->i", z, z)
        top = log_prob.max(axis=1)
        log_norm = top + np.log(np.exp(log_prob - top[:, None]).sum(axis=1))
        total += float(counts[start:start + step] @ log_norm)
    return total / float(counts.sum())


def mixture_score(photo, k, seed, root, timeout=TIMEOUT):
    """Fit ``root``'s gmm.fit_gmm on ``photo`` at (k, seed); score it with our function."""
    tmp = tempfile.mkdtemp(prefix="bench-")
    try:
        out = os.path.join(tmp, "fit.npz")
        task = {"name": "mixture fit", "image": photo.png, "k": k, "out": out, "seed": seed,
                "root": root}
        run = measured(
            [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(task)], timeout)
        result = json.loads(run.stdout.splitlines()[-1])
        with np.load(out) as fit:
            result["loglik"] = mixture_log_likelihood(photo.colours, photo.counts,
                                                      fit["weights"], fit["means"],
                                                      fit["covariances"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.update(photo=photo.name, pixels_sha256=photo.sha256, k=k, seed=seed)
    print(f"  {photo.name} k={k} seed {seed} mixture fit ({root}): "
          f"{result['seconds']:.2f} s, log-likelihood {result['loglik']:.6f}",
          file=sys.stderr, flush=True)
    return result


def mixture_cases(small, big):
    """(photo, k, seeds) on which the mixture's log-likelihood is compared."""
    cases = [(photo, 20, SEEDS_SMALL) for photo in small]
    cases += [(photo, 20, (0,)) for photo in big]
    cases += [(photo, 256, (0,)) for photo in big if photo.name == NOISY]
    return cases


def write_baseline(root, small, big):
    """Fit ``root``'s gmm.py on every case; write bench/mixture_baseline.json."""
    root = os.path.abspath(root)
    commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    entries = []
    for photo, k, seeds in mixture_cases(small, big):
        for seed in seeds:
            try:
                entry = mixture_score(photo, k, seed, root)
            except TimedOut:
                continue
            if k > 20 and entry["seconds"] > BASELINE_MAX_SECONDS:
                continue
            entries.append(entry)
    data = {"made_by": f"python3 bench/bench.py --baseline {root}",
            "baseline_commit": commit,
            "fit": "gmm.fit_gmm(colours float64, k, sample_weight=counts, "
                   "rng=np.random.default_rng(seed)), as hw2.py's fit_colours calls it",
            "loglik": "bench.py mixture_log_likelihood: mean log-likelihood per pixel from the "
                      "fit's weights, means, covariances; gmm_score is the old gmm.score",
            "entries": entries}
    with open(BASELINE_JSON, "w") as handle:
        json.dump(data, handle, indent=1)
        handle.write("\n")
    return data


# ---------------------------------------------------------------- tables

def fmt(value, spec, missing=""):
    return missing if value is None else format(value, spec)


def seconds_text(row):
    if row is None:
        return "n/a"
    if row["seconds"] is None:
        return f"> {row['timeout']}" if row["timed_out"] else "failed"
    return f"{row['seconds']:.2f}"


def rows_table(rows):
    lines = ["| candidate | k | time (s) | runs | CPU (s) | peak RSS (MB) | RGB MSE | "
             "mean error | output | note |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['k']} | {seconds_text(row)} | "
                     f"{row.get('runs', 1)} | {fmt(row.get('cpu'), '.2f')} | "
                     f"{fmt(row.get('rss'), '.0f')} | {fmt(row.get('mse'), '.3f')} | "
                     f"{fmt(row.get('error'), '.4f')} | "
                     f"{fmt(row.get('bytes'), ',d')} | {row.get('note', '')} |")
    return "\n".join(lines) + "\n"


def sweep_table(rows, photo_names):
    """Time and MSE per k for both models beside pngquant."""
    def cell(name, photo, k):
        row = find(rows, name, photo, k)
        if row is None:
            return "n/a | n/a"
        return f"{seconds_text(row)} | {fmt(row.get('mse'), '.3f')}"
    lines = ["| photo | k | hw2 kmeans time (s) | kmeans MSE | hw2 mixture time (s) | "
             "mixture MSE | pngquant time (s) | pngquant MSE | kmeans / pngquant time |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for photo, ks in photo_names:
        for k in ks:
            ratio = time_ratio(rows, ("hw2 kmeans", photo, k), ("pngquant", photo, k))
            lines.append(f"| {photo} | {k} | {cell('hw2 kmeans', photo, k)} | "
                         f"{cell('hw2 mixture', photo, k)} | {cell('pngquant', photo, k)} | "
                         f"{fmt(ratio, '.2f', 'n/a')} |")
    return "\n".join(lines) + "\n"


def find(rows, name, photo, k):
    for row in rows:
        if row["name"] == name and row["photo"] == photo and row["k"] == k:
            return row
    return None


def time_ratio(rows, top, bottom):
    a, b = find(rows, *top), find(rows, *bottom)
    if a is None or b is None or a["seconds"] is None or b["seconds"] is None:
        return None
    return a["seconds"] / b["seconds"]


# ---------------------------------------------------------------- targets

def targets(rows, small, big, mixture_lines, has_pngquant):
    """(target, measured, HOLDS/MISSED) for each target this run measured."""
    out = []

    def add(text, value, holds, spec=".3f"):
        shown = "not measured" if value is None else format(value, spec)
        verdict = "n/a" if holds is None else "HOLDS" if holds else "MISSED"
        out.append((text, shown, verdict))

    def at_most(text, value, limit):
        add(text, value, None if value is None else value <= limit)

    noisy = NOISY if any(p.name == NOISY for p in big) else None
    if noisy:
        at_most("noisy 10.7 MP, k=20: hw2 kmeans end to end / sklearn KMeans(n_init=1) fit "
                "<= 0.1", time_ratio(rows, ("hw2 kmeans", noisy, 20),
                                     ("sklearn KMeans n_init=1", noisy, 20)), 0.1)
        if has_pngquant:
            at_most("noisy 10.7 MP, k=256: hw2 kmeans / pngquant --speed 1 <= 0.6",
                    time_ratio(rows, ("hw2 kmeans", noisy, 256), ("pngquant", noisy, 256)), 0.6)
        at_most("noisy 10.7 MP, k=256: hw2 mixture / hw2 kmeans <= 2",
                time_ratio(rows, ("hw2 mixture", noisy, 256), ("hw2 kmeans", noisy, 256)), 2)
        at_most("noisy 10.7 MP, growth k=20 -> 256: kmeans <= 2.5x",
                time_ratio(rows, ("hw2 kmeans", noisy, 256), ("hw2 kmeans", noisy, 20)), 2.5)
        at_most("noisy 10.7 MP, growth k=20 -> 256: mixture <= 4x",
                time_ratio(rows, ("hw2 mixture", noisy, 256), ("hw2 mixture", noisy, 20)), 4)
    if has_pngquant:
        for model in ("kmeans", "mixture"):
            ratios = [time_ratio(rows, (f"hw2 {model}", p.name, k), ("pngquant", p.name, k))
                      for p in small for k in K_TARGETS]
            ratios = [r for r in ratios if r is not None]
            worst = max(ratios) if ratios else None
            text = (f"~0.3 MP photos, k=20 and 256: hw2 {model} / pngquant <= 1.5 "
                    f"(worst of {len(ratios)})")
            if model == "kmeans":
                at_most(text, worst, 1.5)
            else:
                add(text + " (reported, not a target)", worst, None)
        for model in ("kmeans", "mixture"):
            gaps = []
            for row in rows:
                if row["name"] == f"hw2 {model}" and row.get("mse") is not None:
                    png = find(rows, "pngquant", row["photo"], row["k"])
                    if png is not None and png.get("mse") is not None:
                        gaps.append(row["mse"] / png["mse"])
            worst = max(gaps) if gaps else None
            text = (f"RGB MSE hw2 {model} / pngquant <= 1 at every k "
                    f"(worst of {len(gaps)} photo-k pairs)")
            if model == "kmeans":
                at_most(text, worst, 1.0)
            else:
                add(text + " (reported, not a target)", worst, None)
    gaps = []
    for photo in small:
        ours, sk = find(rows, "hw2 kmeans", photo.name, 20), find(
            rows, "sklearn KMeans n_init=10", photo.name, 20)
        if ours and sk and ours.get("mse") is not None and sk.get("mse") is not None:
            gaps.append(ours["mse"] - sk["mse"])
    at_most(f"k=20: kmeans objective - sklearn best of 10 <= 0 "
            f"(worst of {len(gaps)} photos)", max(gaps) if gaps else None, 0.0)
    diffs = [line["difference"] for line in mixture_lines if line.get("difference") is not None]
    if diffs:
        add(f"mixture log-likelihood per pixel - today's >= -0.01 (worst of {len(diffs)} "
            "photo-k-seed cases)", min(diffs), min(diffs) >= -0.01, "+.4f")
    else:
        add("mixture log-likelihood per pixel - today's >= -0.01", None, None)
    for model in ("kmeans", "mixture"):
        peaks = [row["rss"] for row in rows if row["name"] == f"hw2 {model}"
                 and row.get("rss") is not None and any(p.name == row["photo"] for p in big)]
        at_most(f"peak RSS at 10.7 MP, hw2 {model} <= 300 MB (MB, largest of {len(peaks)} runs)",
                max(peaks) if peaks else None, 300)
    lines = ["| target | measured | verdict |", "| --- | ---: | --- |"]
    lines += [f"| {text} | {value} | {verdict} |" for text, value, verdict in out]
    return "\n".join(lines) + "\n"


def compare_mixtures(small, big):
    """The new code's log-likelihood beside today's (bench/mixture_baseline.json)."""
    if not os.path.exists(BASELINE_JSON):
        return [], "No bench/mixture_baseline.json: run `--baseline DIR` first.\n"
    with open(BASELINE_JSON) as handle:
        baseline = json.load(handle)
    photos = {photo.name: photo for photo in small + big}
    lines = []
    for entry in baseline["entries"]:
        photo = photos.get(entry["photo"])
        if photo is None:
            continue
        line = {"photo": photo.name, "k": entry["k"], "seed": entry["seed"],
                "today": entry["loglik"], "today_seconds": entry["seconds"]}
        if photo.sha256 != entry["pixels_sha256"]:
            line["note"] = "photo differs from the baseline's"
        else:
            try:
                new = mixture_score(photo, entry["k"], entry["seed"], ROOT)
                line.update(new=new["loglik"], new_seconds=new["seconds"],
                            difference=new["loglik"] - entry["loglik"])
            except (TimedOut, RuntimeError) as exc:
                line["note"] = short(exc)
        lines.append(line)
    table = ["| photo | k | seed | today's log-lik./pixel | this code's | difference | "
             "today's fit (s) | this fit (s) | note |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for line in lines:
        table.append(f"| {line['photo']} | {line['k']} | {line['seed']} | {line['today']:.4f} | "
                     f"{fmt(line.get('new'), '.4f')} | {fmt(line.get('difference'), '+.4f')} | "
                     f"{line['today_seconds']:.2f} | {fmt(line.get('new_seconds'), '.2f')} | "
                     f"{line.get('note', '')} |")
    source = (f"Today's: `{baseline['made_by']}` (commit {baseline['baseline_commit'][:7]}); "
              "both fits are `gmm.fit_gmm` on the distinct colours as hw2.py calls it, both "
              "scored by bench.py's `mixture_log_likelihood`.\n\n")
    return lines, source + "\n".join(table) + "\n"


# ---------------------------------------------------------------- k-means against scikit-learn's best of ten

QUALITY_KS = (8, 20, 64)
QUALITY_SEEDS = (0, 1, 2, 3, 4)
QUALITY_TIME_K = 20
QUALITY_HEADER = "### k-means against scikit-learn's best of ten"
# scikit-learn's best-of-10 objective per (photo, k) is deterministic (random_state=0) and
# slow (up to a minute): kept here between runs, keyed by the pixels' hash and the version.
REFERENCE_CACHE = os.path.join(PHOTOS, "sklearn_best_of_10.json")
NOISE_PHOTO_SIGMA = 8.0
# Photos shipped inside scikit-image's data folder (no download): (file, name, kind).  Licences
# from the docstrings of skimage.data's functions; logo and colorwheel are scikit-image's own
# (BSD-3-Clause, its LICENSE.txt "Files: *").
SKIMAGE_EXTRA = (
    ("hubble_deep_field.jpg", "hubble", "night sky, stars (NASA, public domain)"),
    ("logo.png", "logo", "flat graphic, RGBA on white (scikit-image, BSD-3-Clause)"),
    ("ihc.png", "ihc", "microscopy, stained tissue (CMMI, no known copyright restrictions)"),
    ("retina.jpg", "retina", "fundus photo, dark surround, halved to 706x706 (Haggstrom, CC0)"),
    ("coins.png", "coins", "grey, low contrast (Brooklyn Museum, no known restrictions)"),
    ("camera.png", "camera", "grey portrait outdoors (Lav Varshney, CC0)"),
    ("color.png", "colorwheel", "synthetic colour wheel (scikit-image, BSD-3-Clause)"),
)


def quality_photos():
    """The bench's four small photos, seven more from scikit-image, and a noisy phone-like one."""
    import skimage.data
    photos = small_photos()
    for photo in photos:
        photo.label = "bench"
    folder = os.path.dirname(skimage.data.__file__)
    for filename, name, kind in SKIMAGE_EXTRA:
        path = os.path.join(PHOTOS, name + ".png")
        if not os.path.exists(path):
            with Image.open(os.path.join(folder, filename)) as image:
                image.load()
                if name == "retina":
                    image = image.reduce(2)
                if image.mode == "RGBA":
                    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                    image = Image.alpha_composite(white, image)
                Image.fromarray(np.asarray(image.convert("RGB"))).save(path, format="PNG")
        photos.append(Photo(kind, path))
    path = os.path.join(PHOTOS, "astronaut_noisy.png")
    if not os.path.exists(path):
        rng = np.random.default_rng(0)
        pixels = skimage.data.astronaut().astype(np.float64)
        pixels += rng.normal(0.0, NOISE_PHOTO_SIGMA, pixels.shape)
        Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)).save(path)
    photos.append(Photo(f"astronaut + Gaussian noise sigma {NOISE_PHOTO_SIGMA:g} (seed 0), "
                        "a noisy phone-like portrait", path))
    return photos


def sklearn_best(photo, k, cache):
    """scikit-learn's KMeans(n_init=10, random_state=0) objective on ``photo`` (cached)."""
    import sklearn
    key = f"{photo.sha256}:{k}:{sklearn.__version__}"
    if key not in cache:
        row = run_row("sklearn KMeans n_init=10", photo, k, n_init=10)
        cache[key] = {"photo": photo.name, "k": k, "mse": row["mse"], "seconds": row["seconds"]}
        with open(REFERENCE_CACHE, "w") as handle:
            json.dump(cache, handle, indent=1)
    return cache[key]["mse"]


# The command line with its fit replaced by a no-op (the first k colours, every colour in
# cluster 0): what start-up, reading, counting colours and writing cost on their own.
_NO_FIT = """
import sys
sys.path.insert(0, '.')
import numpy as np, hw2, kmeans
kmeans.kmeans = lambda X, k, **kw: kmeans.KMeansResult(X[:k].copy(), np.zeros(len(X), np.intp),
                                                        0.0, 0, True)
sys.exit(hw2.main(sys.argv[1:]))
"""


def quality_rows(photo, cache):
    """Ours (seeds 0-4) and scikit-learn's best of ten at each k; the times at k=20."""
    rows = []
    tmp = tempfile.mkdtemp(prefix="bench-")
    out = os.path.join(tmp, "out.npz")
    try:
        for k in QUALITY_KS:
            row = {"photo": photo.name, "k": k, "sklearn": sklearn_best(photo, k, cache),
                   "ours": []}
            for seed in QUALITY_SEEDS:
                cmd = hw2_command(photo.png, k, "kmeans", out) + ["--seed", str(seed)]
                if k == QUALITY_TIME_K and seed == 0:
                    run, _ = fastest(cmd, out)
                    row["seconds"] = run.seconds
                else:
                    measured(cmd)
                with np.load(out) as codebook:
                    row["ours"].append(errors(photo.pixels, codebook["means"],
                                              codebook["assignments"])[0])
                os.remove(out)
            if k == QUALITY_TIME_K:
                floor = [sys.executable, "-c", _NO_FIT] + hw2_command(photo.png, k, "kmeans",
                                                                      out)[2:]
                row["floor"] = fastest(floor, out)[0].seconds
                row["sklearn_seconds"] = min(run_row("sklearn KMeans n_init=1", photo, k,
                                                     n_init=1)["seconds"] for _ in range(3))
            rows.append(row)
            print(f"  {photo.name} k={k}: ours {np.mean(row['ours']):.3f} (worst "
                  f"{max(row['ours']):.3f}), sklearn {row['sklearn']:.3f}", file=sys.stderr,
                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def geometric_mean(values):
    return float(np.exp(np.mean(np.log(values))))


def quality_tables(rows, photos):
    """The k=20 table (objectives and times), the other k's ratios, and the verdicts."""
    described = {photo.name: photo for photo in photos}
    lines = [f"#### k={QUALITY_TIME_K}", "",
             "| photo | what | ours mean | ours worst | sklearn best of 10 | mean / best | "
             "worst / best | hw2 CLI (s) | no-fit CLI (s) | sklearn n_init=1 fit (s) | "
             "CLI / sklearn |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    at_20 = [row for row in rows if row["k"] == QUALITY_TIME_K]
    for row in at_20:
        photo = described[row["photo"]]
        lines.append(f"| {photo.describe().split(' (')[0]} | {photo.label} | "
                     f"{np.mean(row['ours']):.3f} | {max(row['ours']):.3f} | "
                     f"{row['sklearn']:.3f} | {np.mean(row['ours']) / row['sklearn']:.4f} | "
                     f"{max(row['ours']) / row['sklearn']:.4f} | {row['seconds']:.2f} | "
                     f"{row['floor']:.2f} | {row['sklearn_seconds']:.2f} | "
                     f"{row['seconds'] / row['sklearn_seconds']:.2f} |")
    lines += ["", "#### Every k: ours over scikit-learn's best of ten", "",
              "| photo | " + " | ".join(f"k={k} mean / best | k={k} worst / best"
                                        for k in QUALITY_KS) + " |",
              "| --- |" + " ---: | ---: |" * len(QUALITY_KS)]
    for photo in photos:
        cells = []
        for k in QUALITY_KS:
            row = next(r for r in rows if r["photo"] == photo.name and r["k"] == k)
            cells += [f"{np.mean(row['ours']) / row['sklearn']:.4f}",
                      f"{max(row['ours']) / row['sklearn']:.4f}"]
        lines.append(f"| {photo.name} | " + " | ".join(cells) + " |")
    means = {k: geometric_mean([np.mean(r["ours"]) / r["sklearn"] for r in rows if r["k"] == k])
             for k in QUALITY_KS}
    lines.append("| geometric mean | " + " | ".join(f"{means[k]:.4f} | " for k in QUALITY_KS)
                 + " |")
    worst_20 = max(max(r["ours"]) / r["sklearn"] for r in at_20)
    time_ratio = geometric_mean([r["seconds"] / r["sklearn_seconds"] for r in at_20])
    floor_ratio = geometric_mean([r["floor"] / r["sklearn_seconds"] for r in at_20])
    verdict = lambda holds: "HOLDS" if holds else "MISSED"
    targets = ["| target | measured | verdict |", "| --- | ---: | --- |",
               f"| k={QUALITY_TIME_K}: every photo and seed, ours / sklearn best of 10 <= 1 "
               f"(worst of {len(at_20) * len(QUALITY_SEEDS)}) | {worst_20:.4f} | "
               f"{verdict(worst_20 <= 1)} |"]
    targets += [f"| k={k}: ours (mean of seeds) / sklearn best of 10, geometric mean over "
                f"photos <= 1 | {means[k]:.4f} | {verdict(means[k] <= 1)} |"
                for k in QUALITY_KS if k != QUALITY_TIME_K]
    targets += [f"| k={QUALITY_TIME_K}: hw2 CLI / sklearn KMeans(n_init=1) fit, geometric mean "
                f"<= 1 | {time_ratio:.3f} | {verdict(time_ratio <= 1)} |",
                f"| k={QUALITY_TIME_K}: the no-fit CLI / sklearn fit, geometric mean (the floor, "
                f"reported) | {floor_ratio:.3f} | n/a |"]
    return "\n".join(targets) + "\n\n" + "\n".join(lines) + "\n"


def kmeans_quality(output):
    """Run the k-means quality section and put it in place of the old one in ``output``."""
    started = time.perf_counter()
    load_at_start = ", ".join(f"{load:.2f}" for load in os.getloadavg())
    photos = quality_photos()
    cache = {}
    if os.path.exists(REFERENCE_CACHE):
        with open(REFERENCE_CACHE) as handle:
            cache = json.load(handle)
    rows = []
    for photo in photos:
        print(photo.describe(), file=sys.stderr, flush=True)
        rows += quality_rows(photo, cache)
    section = "\n".join([
        QUALITY_HEADER, "",
        f"Made by `python3 bench/bench.py --kmeans-quality` on {environment()}.", "",
        "Objective: the RGB mean squared error over every pixel (the k-means objective per "
        "pixel), computed by bench.py. Ours: `hw2.py --compress --seed S` for S = 0..4, each "
        "scored from its codebook (mean and worst of the five). scikit-learn: "
        "`KMeans(n_clusters=k, n_init=10, random_state=0).fit` on every pixel. Times at "
        f"k={QUALITY_TIME_K}: the whole hw2 command (seed 0) and the no-fit command (the same "
        "with `kmeans.kmeans` replaced by a no-op: start-up, reading, counting, writing), each "
        f"the fastest of up to {REPEATS}; scikit-learn's `KMeans(n_init=1, random_state=0)` "
        "fit alone, the fastest of 3.", "",
        "Photos:\n" + "".join(f"- {photo.describe()}\n" for photo in photos),
        quality_tables(rows, photos),
        f"Time: {time.perf_counter() - started:.0f} s. Load average at the start: "
        f"{load_at_start}; at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}.", ""])
    text = open(output).read() if os.path.exists(output) else ""
    if QUALITY_HEADER in text:
        before, rest = text.split(QUALITY_HEADER, 1)
        after = rest.split("\n### ", 1)
        text = before + section + ("\n### " + after[1] if len(after) > 1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(output, "w") as handle:
        handle.write(text)
    print(section)
    return 0


# ---------------------------------------------------------------- main

def small_photo_rows(photo, full, has_pngquant):
    """hw2 and pngquant at k=20 and 256; the references at k=20."""
    rows = []
    for k in K_TARGETS:
        names = ["hw2 kmeans", "hw2 mixture"] + (["pngquant"] if has_pngquant else [])
        rows += [run_row(name, photo, k) for name in names]
    rows.append(run_row("sklearn KMeans n_init=10", photo, 20, n_init=10))
    rows.append(run_row("Pillow quantize median cut", photo, 20, kmeans=0))
    rows.append(run_row("Pillow quantize median cut + kmeans", photo, 20, kmeans=10))
    if full and photo.name == "chelsea.png":  # scikit-learn's mixture takes 10-30 s a photo
        rows.append(run_row("sklearn GaussianMixture full", photo, 20))
    return rows


def environment():
    import PIL
    try:
        import sklearn
        sk = sklearn.__version__
    except ImportError:
        sk = "not installed"
    png = subprocess.run(["pngquant", "--version"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("pngquant") else "absent"
    commit = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %s"],
                            capture_output=True, text=True).stdout.strip()
    return (f"Python {platform.python_version()}, NumPy {np.__version__}, Pillow "
            f"{PIL.__version__}, scikit-learn {sk}, pngquant {png}; {os.cpu_count()} cores "
            f"({platform.machine()}); code at `{commit[:90]}`; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(json.loads(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small photos at k=20 and 256 only (no 10.7 MP photo, no sweep)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="fit DIR's gmm.py (today's code) on the bench photos and write "
                             "bench/mixture_baseline.json, then stop")
    parser.add_argument("--kmeans-quality", action="store_true",
                        help="k-means only: ours (seeds 0-4) against scikit-learn's best of ten "
                             "at k=8, 20, 64 on twelve photos, and the times at k=20; "
                             "replaces that section of the output")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)
    if args.kmeans_quality:
        return kmeans_quality(args.output)
    started = time.perf_counter()
    load_at_start = ", ".join(f"{load:.2f}" for load in os.getloadavg())
    small = small_photos()
    big = [] if args.quick else [bicubic_photo(), noisy_photo()]
    if args.baseline:
        write_baseline(args.baseline, small, big)
        print(f"wrote {BASELINE_JSON} in {time.perf_counter() - started:.0f} s")
        return 0
    has_pngquant = shutil.which("pngquant") is not None
    command = "python3 bench/bench.py" + (" --quick" if args.quick else "")
    parts = [f"### Benchmark ({'quick' if args.quick else 'full'} run)", "",
             f"Made by `{command}` on {environment()}.", "",
             "Time: wall seconds of the whole command for hw2 and pngquant (start-up, reading, "
             f"fit, writing; the fastest of up to {REPEATS} runs, repeated while they take under "
             f"{REPEAT_BUDGET:.0f} s in all: column runs), of the fit alone for scikit-learn and "
             "Pillow. CPU: user + system seconds of the whole process (all its threads). Peak "
             "RSS: the candidate's own process (`os.wait4`). RGB MSE (the k-means objective per pixel) "
             "and mean Euclidean error: computed by bench.py over every pixel of the PNG both "
             "commands read. Output: bytes of the file the command wrote.", ""]
    if not has_pngquant:
        parts.append("**pngquant is not on PATH: its rows and targets are skipped** "
                     "(Debian package `pngquant`).\n")
    parts.append("Photos:\n" + "".join(f"- {photo.describe()}\n" for photo in small + big))
    targets_at = len(parts)
    rows = []
    for photo in small:
        print(photo.describe(), file=sys.stderr, flush=True)
        photo_rows = small_photo_rows(photo, not args.quick, has_pngquant)
        rows += photo_rows
        parts.append(f"#### {photo.describe()}\n\n{rows_table(photo_rows)}")
    sweep = [(photo.name, K_TARGETS) for photo in small]
    if not args.quick:
        for photo in big:
            print(photo.describe(), file=sys.stderr, flush=True)
            ks = K_SWEEP if photo.name == NOISY else K_TARGETS
            photo_rows = [run_row(name, photo, k) for k in ks for name in
                          ["hw2 kmeans", "hw2 mixture"] + (["pngquant"] if has_pngquant and
                                                           k <= PNGQUANT_MAX_K else [])]
            if photo.name == NOISY:
                photo_rows.append(run_row("sklearn KMeans n_init=1", photo, 20, n_init=1))
            rows += photo_rows
            parts.append(f"#### {photo.describe()}\n\n{rows_table(photo_rows)}")
        large = small[0]
        rows += [run_row(name, large, k, timeout=TIMEOUT_LARGE_K)
                 for k in K_LARGE for name in ("hw2 kmeans", "hw2 mixture")]
        sweep = [(NOISY, K_SWEEP), (large.name, K_LARGE)]
    parts.append("#### Time vs k\n\nEnd to end, each command writing its file; "
                 f"runs at k > 256 are stopped after {TIMEOUT_LARGE_K} s (shown `> "
                 f"{TIMEOUT_LARGE_K}`); pngquant stops at 256.\n\n" + sweep_table(rows, sweep))
    mixture_lines, text = compare_mixtures(small, big)
    parts.append("#### The mixture's log-likelihood per pixel against today's code\n\n" + text)
    parts.insert(targets_at, "#### Targets: speed, quality and memory against pngquant and scikit-learn\n\n"
                 + targets(rows, small, big, mixture_lines, has_pngquant))
    parts.append(f"Total benchmark time: {time.perf_counter() - started:.0f} s. Load average "
                 f"(1, 5, 15 min) at the start: {load_at_start}; at the end: "
                 f"{', '.join(f'{load:.2f}' for load in os.getloadavg())}. Other processes "
                 "share the cores, so times are only comparable within one run.\n")
    text = "\n".join(parts)
    old = open(args.output).read() if os.path.exists(args.output) else ""
    if QUALITY_HEADER in old:  # a section of its own (--kmeans-quality): kept as it was
        text += "\n" + QUALITY_HEADER + old.split(QUALITY_HEADER, 1)[1].split("\n### ", 1)[0]
    with open(args.output, "w") as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
