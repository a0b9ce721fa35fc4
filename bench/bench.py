#!/usr/bin/env python3
"""Benchmark hw2.py beside scikit-learn and Pillow on real photos.

  pip install -r bench/requirements.txt
  python3 bench/bench.py            # full run: small photos, a 10.7 MP photo, scaling tables
  python3 bench/bench.py --quick    # small photos only

Every candidate runs in its own child process, so the time and the peak memory
(maximum resident set size, from ``os.wait4``) are its own.  The candidates:

* ``hw2 --model kmeans`` / ``--model mixture``: the command line end to end
  (Python start-up, reading, fitting, writing the codebook);
* ``ours: kmeans fit`` / ``ours: mixture fit``: our fits alone, timed around
  the call, on the distinct colours as hw2.py does it;
* ``sklearn KMeans`` (``n_init=1`` and ``10``) and ``GaussianMixture`` (full
  covariances, the same ``reg_covar`` as gmm.py), timed around ``fit`` on
  every pixel as float64;
* ``Pillow quantize``: median cut, with and without its k-means refinement;
* and, once per photo, ``python3 -c "import numpy, PIL.Image"``: the start-up
  every run of hw2.py pays before it reads a pixel.

Every result is scored here, the same way, against the pixels as hw2.py reads
them: the k-means objective (mean squared distance to the assigned colour),
the mean Euclidean error (what hw2.py prints), and the size of the codebook
(``np.savez_compressed`` of assignments, means, img_shape) next to the input
file and two palette PNGs (PNG-8) of the same labels: saved with Pillow's
defaults (zlib level 6, as ``np.savez_compressed`` uses) and with
``optimize=True`` (level 9 and the best filter choice).

Generated photos (upscaled, with a little noise) go to bench/photos/, which
is not committed.  Results go to bench/results.md.
"""
import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PHOTOS = os.path.join(HERE, "photos")
SKIMAGE_PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png")
# (name, width, height) of the photos made by upscaling the sample.
SIZES = (("rocket_2.7mp.jpg", 2000, 1335), ("rocket_10.7mp.jpg", 4000, 2670),
         ("rocket_42.7mp.jpg", 8000, 5340))
K_SWEEP = (2, 4, 8, 16, 32, 64, 128, 256)
# Small photos (the first ones) on which scikit-learn's GaussianMixture also runs.
MIXTURE_REFERENCES = 2
TIMEOUT = 300
# What every run of hw2.py pays before any work: the interpreter and its imports.
STARTUP = [sys.executable, "-c", "import numpy, PIL.Image"]


# ---------------------------------------------------------------- photos

def small_photos():
    """The sample photo and the photos scikit-image ships (about 0.3 MP each)."""
    paths = [os.path.join(ROOT, "samples", "rocket.jpg")]
    try:
        import skimage.data
        folder = os.path.dirname(skimage.data.__file__)
        paths += [os.path.join(folder, name) for name in SKIMAGE_PHOTOS
                  if os.path.exists(os.path.join(folder, name))]
    except ImportError:
        print("bench: scikit-image is not installed; only the sample photo", file=sys.stderr)
    return paths


def upscaled_photo(name, width, height):
    """The sample photo upscaled (bicubic) with Gaussian noise (sigma 2), as a JPEG.

    A phone-sized photo with realistic colour statistics: the noise gives it
    hundreds of thousands of distinct colours, as a real one has.
    """
    path = os.path.join(PHOTOS, name)
    if os.path.exists(path):
        return path
    os.makedirs(PHOTOS, exist_ok=True)
    with Image.open(os.path.join(ROOT, "samples", "rocket.jpg")) as image:
        big = np.asarray(image.convert("RGB").resize((width, height), Image.BICUBIC))
    rng = np.random.default_rng(0)
    out = np.empty_like(big)
    for start in range(0, height, 256):  # in strips, to keep the float copy small
        strip = big[start:start + 256].astype(np.float32)
        strip += rng.normal(0.0, 2.0, strip.shape).astype(np.float32)
        out[start:start + 256] = np.clip(np.rint(strip), 0, 255)
    Image.fromarray(out).save(path, quality=92)
    return path


def read_pixels(path):
    """The pixels as hw2.py reads them, shape (H, W, C) uint8."""
    sys.path.insert(0, ROOT)
    import codec
    return codec.read_image(path)


# ---------------------------------------------------------------- workers

def worker(task):
    """Run one candidate in this (child) process; save its labels and means.

    Prints one JSON line: the seconds the timed part took, plus extras.
    """
    name, image, k, out = task["name"], task["image"], task["k"], task["out"]
    extra = {}
    if name.startswith("ours"):
        sys.path.insert(0, ROOT)
        import codec
        import kmeans
        pixels = codec.read_image(image)
        colours, counts, inverse = codec.distinct_colours(pixels.reshape(-1, pixels.shape[-1]))
        X = colours.astype(np.float64)
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        if name == "ours: kmeans fit":
            fit = kmeans.kmeans(X, k, sample_weight=counts, rng=rng,
                                n_init=kmeans.auto_n_init(len(X), k), polish=True)
            seconds = time.perf_counter() - started
            means, labels = fit.centers, fit.labels
        else:
            import gmm
            fit = gmm.fit_gmm(X, k, sample_weight=counts, rng=rng)
            seconds = time.perf_counter() - started
            means, labels = fit.means, gmm.predict(X, fit)
            extra["loglik"] = float(gmm.score(X, fit, counts))
        extra["n_iter"] = int(fit.n_iter)
        labels = labels[inverse]
    elif name.startswith("sklearn"):
        pixels = read_pixels(image)
        X = pixels.reshape(-1, pixels.shape[-1]).astype(np.float64)
        if name.startswith("sklearn KMeans"):
            from sklearn.cluster import KMeans
            model = KMeans(n_clusters=k, n_init=task["n_init"], random_state=0)
            started = time.perf_counter()
            model.fit(X)
            seconds = time.perf_counter() - started
            means, labels = model.cluster_centers_, model.labels_
            extra["n_iter"] = int(model.n_iter_)
        else:
            sys.path.insert(0, ROOT)
            import gmm
            from sklearn.mixture import GaussianMixture
            model = GaussianMixture(k, covariance_type="full", reg_covar=gmm.REG_COVAR,
                                    random_state=0)
            started = time.perf_counter()
            model.fit(X)
            seconds = time.perf_counter() - started
            means, labels = model.means_, model.predict(X)
            extra["loglik"] = float(model.score(X))
            extra["n_iter"] = int(model.n_iter_)
    else:  # Pillow
        with Image.open(image) as opened:
            rgb = opened.convert("RGB")
            rgb.load()
        started = time.perf_counter()
        quantized = rgb.quantize(k, method=Image.Quantize.MEDIANCUT, kmeans=task["kmeans"])
        seconds = time.perf_counter() - started
        labels = np.asarray(quantized).reshape(-1)
        palette = np.asarray(quantized.getpalette()[:3 * k], dtype=np.float64)
        means = palette.reshape(-1, 3)
    np.savez(out, labels=np.asarray(labels), means=np.asarray(means, dtype=np.float64))
    print(json.dumps({"seconds": seconds, **extra}))


def run_child(cmd):
    """Run ``cmd`` from the project's root; return its stdout (raise if it fails)."""
    child = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {child.stderr.strip()[-500:]}")
    return child.stdout


def measured(cmd):
    """Run ``cmd`` in a child; return (wall seconds, peak RSS MB, stdout)."""
    wrapper = [sys.executable, os.path.abspath(__file__), "--measure", "--"] + cmd
    lines = run_child(wrapper).splitlines()
    peak = json.loads(lines[-1])
    return peak["seconds"], peak["max_rss_mb"], "\n".join(lines[:-1])


def measure(cmd):
    """The ``--measure`` wrapper: run cmd, then print its wall time and peak RSS.

    ``os.wait4`` gives the resource usage of that one child, so its peak RSS is
    its own, not the largest of all the children this process ever had.
    """
    started = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    stdout = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    sys.stdout.write(stdout)
    print(json.dumps({"seconds": seconds, "max_rss_mb": usage.ru_maxrss / 1024.0}))
    return os.waitstatus_to_exitcode(status)


# ---------------------------------------------------------------- scoring

def score(pixels, labels, means, img_shape):
    """Objective, mean error, codebook bytes and PNG-8 bytes (two ways) of one result."""
    flat = pixels.reshape(-1, pixels.shape[-1])
    objective = error = 0.0
    for start in range(0, len(flat), 1 << 20):
        diff = flat[start:start + (1 << 20)] - means[labels[start:start + (1 << 20)]]
        sq = np.einsum("ij,ij->i", diff, diff)
        objective += float(sq.sum())
        error += float(np.sqrt(sq).sum())
    n_pixels = len(flat)
    assignments = labels.astype(np.uint8 if len(means) <= 256 else np.uint16)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, assignments=assignments, means=means,
                        img_shape=np.asarray(img_shape, dtype=np.int64))
    png = png_optimized = None
    if len(means) <= 256:
        image = Image.frombytes("P", (img_shape[1], img_shape[0]), assignments.tobytes())
        image.putpalette(np.clip(np.rint(means), 0, 255).astype(np.uint8).reshape(-1).tolist())
        png, png_optimized = (len(_png_bytes(image, optimize)) for optimize in (False, True))
    return {"objective": objective / n_pixels, "error": error / n_pixels,
            "codebook": len(buffer.getvalue()), "png8": png, "png8_opt": png_optimized}


def _png_bytes(image, optimize):
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=optimize)
    return out.getvalue()


def hw2_command(image, k, model, out):
    """The command line that compresses ``image`` into ``out``, quietly."""
    return [sys.executable, "hw2.py", "--compress", image, "--clusters", str(k),
            "--model", model, "--output", out, "-q"]


def run_candidate(name, image, k, tmp, pixels, **options):
    """Run one candidate on one image; return its row of measurements."""
    out = os.path.join(tmp, "result.npz")
    if name.startswith("hw2"):
        model = name.split()[-1]
        seconds, rss, stdout = measured(hw2_command(image, k, model, out))
        with np.load(out) as codebook:
            labels, means = codebook["assignments"], codebook["means"]
        extra = {"printed": float(stdout.split()[-1])}
        codebook_bytes = os.path.getsize(out)
    else:
        task = {"name": name, "image": image, "k": k, "out": out, **options}
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(task)]
        seconds_wall, rss, stdout = measured(cmd)
        extra = json.loads(stdout.splitlines()[-1])
        seconds = extra.pop("seconds")
        with np.load(out) as saved:
            labels, means = saved["labels"], saved["means"]
        codebook_bytes = None
    row = {"name": name, "seconds": seconds, "rss": rss, **extra,
           **score(pixels.astype(np.float64) if pixels.size < 2e7 else pixels, labels,
                   means, pixels.shape)}
    if codebook_bytes is not None:
        row["codebook"] = codebook_bytes
    print(f"  {name}: {seconds:.2f} s, {rss:.0f} MB, objective {row['objective']:.2f}",
          file=sys.stderr, flush=True)
    return row


# ---------------------------------------------------------------- tables

def fmt_bytes(n):
    return "" if n is None else f"{n / 1000:.1f} KB" if n < 1e6 else f"{n / 1e6:.2f} MB"


def photo_table(title, image, rows):
    """One markdown table: every candidate on one photo."""
    size = os.path.getsize(image)
    with Image.open(image) as opened:
        width, height = opened.size
    lines = [f"#### {title}: {os.path.basename(image)}, {width}x{height} "
             f"({width * height / 1e6:.2f} MP), file {fmt_bytes(size)}", "",
             "| candidate | time (s) | peak RSS (MB) | objective (mean sq. dist.) | "
             "mean error | log-lik./pixel | codebook | PNG-8 of the labels (Pillow "
             "defaults) | PNG-8, optimize=True |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        loglik = f"{row['loglik']:.4f}" if "loglik" in row else ""
        lines.append(f"| {row['name']} | {row['seconds']:.2f} | {row['rss']:.0f} | "
                     f"{row['objective']:.3f} | {row['error']:.4f} | {loglik} | "
                     f"{fmt_bytes(row['codebook'])} | {fmt_bytes(row['png8'])} | "
                     f"{fmt_bytes(row['png8_opt'])} |")
    return "\n".join(lines) + "\n"


def checks(image, rows, startup):
    """Lines comparing our runs with the references, for the targets of issue 4.

    ``startup`` is the time Python takes to start and import NumPy and Pillow,
    which every run of hw2.py pays before any work.
    """
    by = {row["name"]: row for row in rows}
    out = []
    cli, sk1 = by.get("hw2 --model kmeans"), by.get("sklearn KMeans n_init=1")
    sk10 = by.get("sklearn KMeans n_init=10")
    if cli and sk1:
        out.append(f"hw2 kmeans end to end / sklearn n_init=1 fit time = "
                   f"{cli['seconds'] / sk1['seconds']:.3f}")
        out.append(f"Python start-up and imports of NumPy and Pillow alone (best of 3) = "
                   f"{startup:.3f} s = {startup / sk1['seconds']:.3f} of the sklearn "
                   f"n_init=1 fit time")
    if cli and sk10:
        out.append(f"objective hw2 - sklearn best of 10 = "
                   f"{cli['objective'] - sk10['objective']:+.3f}")
    mix, gm = by.get("hw2 --model mixture"), by.get("sklearn GaussianMixture full")
    if mix and sk1:
        out.append(f"hw2 mixture end to end / sklearn KMeans n_init=1 fit time = "
                   f"{mix['seconds'] / sk1['seconds']:.3f}")
    ours_gm = by.get("ours: mixture fit")
    if gm and mix:
        out.append(f"sklearn GaussianMixture fit / hw2 mixture end to end = "
                   f"{gm['seconds'] / mix['seconds']:.1f}x")
    if gm and ours_gm and mix:
        out.append(f"log-likelihood per pixel, ours - sklearn = "
                   f"{ours_gm['loglik'] - gm['loglik']:+.4f}; mean error ours / sklearn = "
                   f"{mix['error'] / gm['error']:.3f}")
    for row in rows:
        if row["name"].startswith("hw2") and row["png8"]:
            out.append(f"{row['name']}: codebook / PNG-8 = "
                       f"{row['codebook'] / row['png8']:.3f} (Pillow's defaults), "
                       f"{row['codebook'] / row['png8_opt']:.3f} (optimize=True)")
    return "".join(f"- {line}\n" for line in out if line)


# ---------------------------------------------------------------- main

def candidates(full_references, has_gmm, mixture_reference):
    """(name, options) of the candidates to run on a photo."""
    names = [("hw2 --model kmeans", {}), ("ours: kmeans fit", {})]
    if has_gmm:
        names += [("hw2 --model mixture", {}), ("ours: mixture fit", {})]
    names += [("sklearn KMeans n_init=1", {"n_init": 1})]
    if full_references:
        names += [("sklearn KMeans n_init=10", {"n_init": 10})]
    if has_gmm and mixture_reference:
        names += [("sklearn GaussianMixture full", {})]
    names += [("Pillow quantize median cut", {"kmeans": 0}),
              ("Pillow quantize median cut + kmeans", {"kmeans": 10})]
    return names


def bench_photo(title, image, k, tmp, full_references, has_gmm, mixture_reference):
    print(f"{title}: {image}", file=sys.stderr, flush=True)
    pixels = read_pixels(image)
    rows = [run_candidate(name, image, k, tmp, pixels, **options)
            for name, options in candidates(full_references, has_gmm, mixture_reference)]
    startup = min(measured(STARTUP)[0] for _ in range(3))
    return photo_table(title, image, rows) + "\n" + checks(image, rows, startup)


def scaling_tables(tmp, k):
    """Time and memory of hw2 --model kmeans (and mixture) vs pixels and vs k."""
    has_gmm = os.path.exists(os.path.join(ROOT, "gmm.py"))
    models = ["kmeans", "mixture"] if has_gmm else ["kmeans"]
    images = [os.path.join(ROOT, "samples", "rocket.jpg")] + [
        upscaled_photo(*size) for size in SIZES]
    lines = [f"#### Time and peak memory vs image size (k = {k}, end to end)", "",
             "| image | megapixels | " + " | ".join(
                 f"{m} time (s) | {m} peak RSS (MB) | {m} µs per pixel" for m in models) + " |",
             "| --- | ---: |" + " ---: | ---: | ---: |" * len(models)]
    out = os.path.join(tmp, "scale.npz")
    for image in images:
        with Image.open(image) as opened:
            mp = opened.size[0] * opened.size[1] / 1e6
        cells = []
        for model in models:
            seconds, rss, _ = measured(hw2_command(image, k, model, out))
            cells.append(f"{seconds:.2f} | {rss:.0f} | {seconds / mp:.3f}")
            print(f"  {os.path.basename(image)} {model}: {seconds:.2f} s {rss:.0f} MB",
                  file=sys.stderr, flush=True)
        lines.append(f"| {os.path.basename(image)} | {mp:.2f} | " + " | ".join(cells) + " |")
    image = upscaled_photo(*SIZES[1])
    lines += ["", f"#### Time and peak memory vs k ({os.path.basename(image)}, end to end)", "",
              "| k | " + " | ".join(f"{m} time (s) | {m} peak RSS (MB)" for m in models)
              + " |", "| ---: |" + " ---: | ---: |" * len(models)]
    for n_clusters in K_SWEEP:
        cells = []
        for model in models:
            seconds, rss, _ = measured(hw2_command(image, n_clusters, model, out))
            cells.append(f"{seconds:.2f} | {rss:.0f}")
            print(f"  k={n_clusters} {model}: {seconds:.2f} s {rss:.0f} MB", file=sys.stderr,
                  flush=True)
        lines.append(f"| {n_clusters} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def environment():
    import PIL
    try:
        import sklearn
        sk = sklearn.__version__
    except ImportError:
        sk = "not installed"
    return (f"Python {platform.python_version()}, NumPy {np.__version__}, Pillow "
            f"{PIL.__version__}, scikit-learn {sk}; {os.cpu_count()} cores "
            f"({platform.machine()}); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def load_average():
    """The system's load averages over 1, 5 and 15 minutes, as text."""
    return ", ".join(f"{load:.2f}" for load in os.getloadavg())


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(json.loads(argv[1]))
        return 0
    if argv[:2] == ["--measure", "--"]:
        return measure(argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small photos only, and no n_init=10 or GaussianMixture "
                             "references")
    parser.add_argument("--clusters", type=int, default=20, metavar="K")
    parser.add_argument("--output", default=os.path.join(HERE, "results.md"))
    args = parser.parse_args(argv)
    has_gmm = os.path.exists(os.path.join(ROOT, "gmm.py"))
    command = "python3 bench/bench.py" + (" --quick" if args.quick else "")
    started = time.perf_counter()
    load_at_start = load_average()
    parts = [f"### Benchmark ({'quick' if args.quick else 'full'} run)", "",
             f"Made by `{command}` on {environment()}. Time: seconds (wall clock; for "
             "hw2 the whole command, for the others the fit alone). Peak RSS: of the "
             "candidate's own process. Objective and mean error over every pixel.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        for number, image in enumerate(small_photos()):
            # scikit-learn's GaussianMixture takes minutes a photo: two photos only.
            parts.append(bench_photo("Small photo", image, args.clusters, tmp,
                                     not args.quick, has_gmm,
                                     number < MIXTURE_REFERENCES and not args.quick))
        if not args.quick:
            big = upscaled_photo(*SIZES[1])
            parts.append(bench_photo("Large photo", big, args.clusters, tmp, False, has_gmm,
                                     False))
            parts.append(scaling_tables(tmp, args.clusters))
    parts.append(f"Total benchmark time: {time.perf_counter() - started:.0f} s. Load average "
                 f"(1, 5, 15 min) at the start: {load_at_start}; at the end: {load_average()}; "
                 "other processes share the cores, so times are only comparable within one "
                 "run.\n")
    text = "\n".join(parts)
    with open(args.output, "w") as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
