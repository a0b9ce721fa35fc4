#!/usr/bin/env python3
"""hw2's --dither beside pngquant and Pillow: error, blurred error and time.

  python3 bench/dither.py        # writes bench/dither.md (about 2 minutes on 2 cores)

Photos: the bench's four small ones and the 10.7 MP upscaled sample (bench/photos/,
made by bench.py's helpers on first use).  At k = 8, 16, 20 and 64 on each small photo:

* ``hw2``: ``python3 hw2.py --compress IN.png --clusters K --output OUT.npz``, without and
  with ``--dither``, scored from the codebook as ``--decompress`` writes it (means rounded);
* ``pngquant --speed 1 K`` (Floyd-Steinberg by default) and ``pngquant --nofs --speed 1 K``;
* ``Pillow quantize``: ``Image.quantize(K)`` (median cut, Floyd-Steinberg by default), fit
  and mapping timed in this process.

Commands are timed whole, each in its own process (bench.measured), the fastest of two runs.
Scores over every pixel: the mean Euclidean error, and the blurred error: the same after a
Gaussian blur of radius 1.5 (Pillow's ImageFilter.GaussianBlur) on both images, a plain
stand-in for what an eye integrates at viewing distance.

Then how often Pillow's palette mapping without diffusion differs from hw2's nearest mean
(k=20), and at 10.7 MP what --dither adds: the whole command at k=20 (runs interleaved,
fastest of three each), and its parts timed in this process.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageFilter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]
import bench  # noqa: E402  (the photos and the timed runs)
import codec  # noqa: E402

RESULTS = os.path.join(HERE, "dither.md")
CLUSTERS = (8, 16, 20, 64)
BLUR_RADIUS = 1.5
RUNS = 2
BIG_RUNS = 3
BIG_CLUSTERS = 20


def blurred(pixels):
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(BLUR_RADIUS)))


def mean_distance(a, b):
    """Mean Euclidean distance between two uint8 RGB images of one shape."""
    diff = a.reshape(-1, 3).astype(np.float64) - b.reshape(-1, 3)
    return float(np.sqrt(np.einsum("ij,ij->i", diff, diff)).mean())


def scores(original, result):
    """(error, blurred error) of a uint8 RGB result against the original."""
    return mean_distance(original, result), mean_distance(blurred(original), blurred(result))


def timed(cmd, out):
    """Seconds of the fastest of RUNS runs of ``cmd`` (each writes ``out``)."""
    return min(bench.measured(cmd).seconds for _ in range(RUNS))


def hw2(photo, k, out, *flags):
    seconds = timed(bench.hw2_command(photo.png, k, "kmeans", out) + list(flags), out)
    with np.load(out) as book:
        means, assignments = book["means"], book["assignments"]
    result = np.clip(np.rint(means), 0, 255).astype(np.uint8)[assignments]
    return scores(photo.pixels, result.reshape(photo.pixels.shape)) + (seconds,), \
        means, os.path.getsize(out)


def pngquant(photo, k, out, *flags):
    seconds = timed(["pngquant", *flags, "--speed", "1", str(k), "--force", "--output", out,
                     photo.png], out)
    with Image.open(out) as image:
        return scores(photo.pixels, np.asarray(image.convert("RGB"))) + (seconds,)


def pillow(photo, k):
    best = None
    for _ in range(RUNS):
        started = time.perf_counter()
        image = Image.fromarray(photo.pixels).quantize(k).convert("RGB")
        seconds = time.perf_counter() - started
        best = seconds if best is None else min(best, seconds)
    return scores(photo.pixels, np.asarray(image)) + (best,)


def undiffused_mapping(pixels, means):
    """Pillow's palette mapping without diffusion, the palette built as codec builds it."""
    copies = np.resize(np.arange(len(means), dtype=np.uint8), 256)
    palette = Image.new("P", (1, 1))
    palette.putpalette(codec.decode(copies, means, (256, -1)).tobytes())
    indices = Image.fromarray(pixels).quantize(palette=palette, dither=Image.Dither.NONE)
    return copies[np.asarray(indices).reshape(-1)]


def mapping_row(photo, means):
    """How Pillow's undiffused mapping compares with each pixel's nearest mean."""
    flat = photo.pixels.reshape(-1, 3).astype(np.float64)
    nearest = np.empty(len(flat), dtype=np.intp)
    best = np.empty(len(flat))
    for rows in np.array_split(np.arange(len(flat)), 16):
        distance = np.linalg.norm(flat[rows, None] - means[None], axis=2)
        nearest[rows], best[rows] = distance.argmin(axis=1), distance.min(axis=1)
    pillow_map = undiffused_mapping(photo.pixels, means)
    theirs = np.linalg.norm(flat - means[pillow_map], axis=1)
    differ = pillow_map != nearest
    return (f"| {photo.name} | {differ.mean():.2%} | {best.mean():.3f} | {theirs.mean():.3f} | "
            f"{(theirs - best)[differ].max() if differ.any() else 0:.2f} |")


def cell(score):
    error, blur, seconds = score
    return f"{error:.2f} / {blur:.2f} ({seconds:.2f} s)"


def small_photo_tables(photos, scratch):
    rows, mapping, ratios, gaps = [], [], [], []
    for photo in photos:
        for k in CLUSTERS:
            plain, means, plain_size = hw2(photo, k, os.path.join(scratch, "plain.npz"))
            dithered, _, size = hw2(photo, k, os.path.join(scratch, "dither.npz"), "--dither")
            fs = pngquant(photo, k, os.path.join(scratch, "fs.png"))
            nofs = pngquant(photo, k, os.path.join(scratch, "nofs.png"), "--nofs")
            ratio = dithered[1] / plain[1]
            if k >= 16:
                ratios.append(ratio)
            gaps.append(dithered[1] / fs[1])
            rows.append(f"| {photo.name} | {k} | {cell(plain)} | {cell(dithered)} | "
                        f"{ratio:.3f} | {size / plain_size:.2f} | {cell(fs)} | {cell(nofs)} | {cell(pillow(photo, k))} | "
                        f"{gaps[-1]:.3f} |")
            print(rows[-1], flush=True)
            if k == BIG_CLUSTERS:
                mapping.append(mapping_row(photo, means))
    return rows, mapping, ratios, gaps


def big_photo_rows(scratch):
    """What --dither adds at 10.7 MP: whole commands, interleaved, and the parts."""
    photo = bench.bicubic_photo()
    outs = {flag: os.path.join(scratch, f"big{flag}.npz") for flag in ("", "--dither")}
    seconds = {flag: [] for flag in outs}
    for _ in range(BIG_RUNS):
        for flag, out in outs.items():
            command = bench.hw2_command(photo.png, BIG_CLUSTERS, "kmeans", out)
            seconds[flag].append(bench.measured(command + [flag] * bool(flag)).seconds)
    with np.load(outs[""]) as book:
        means, nearest = book["means"], book["assignments"]
    parts = {}
    for _ in range(BIG_RUNS):
        reader = codec.ImageReader(photo.png)  # decoded: not part of what --dither adds
        started = time.perf_counter()
        mapped = None

        def mapped_at(done):  # codec.dither's error pass starts once the mapping is done
            nonlocal mapped
            mapped = mapped or time.perf_counter()
        labels, _ = codec.dither(reader, means, mapped_at)
        measured = time.perf_counter()
        np.savez_compressed(os.path.join(scratch, "parts.npz"), assignments=labels)
        written = time.perf_counter()
        np.savez_compressed(os.path.join(scratch, "parts.npz"), assignments=nearest)
        for name, value in (("codec.dither: Pillow's mapping", mapped - started),
                            ("codec.dither: the error, a strip at a time", measured - mapped),
                            ("np.savez_compressed: dithered assignments", written - measured),
                            ("np.savez_compressed: nearest-mean assignments",
                             time.perf_counter() - written)):
            parts[name] = min(parts.get(name, value), value)
    sizes = {flag: os.path.getsize(out) for flag, out in outs.items()}
    return photo, min(seconds[""]), min(seconds["--dither"]), parts, sizes


def main():
    if not shutil.which("pngquant"):
        sys.exit("pngquant is not on PATH (apt-get install pngquant)")
    load = os.getloadavg()[0]
    started = time.perf_counter()
    photos = bench.small_photos()
    with tempfile.TemporaryDirectory(prefix="dither-") as scratch:
        rows, mapping, ratios, gaps = small_photo_tables(photos, scratch)
        big, plain_s, dither_s, parts, sizes = big_photo_rows(scratch)
    compute = parts["codec.dither: Pillow's mapping"] + \
        parts["codec.dither: the error, a strip at a time"]
    lines = [
        "# --dither beside pngquant and Pillow",
        "",
        f"Made by `python3 bench/dither.py` ({time.perf_counter() - started:.0f} s; load "
        f"average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; Pillow "
        f"{Image.__version__}, NumPy {np.__version__}; "
        f"{subprocess.run(['pngquant', '--version'], capture_output=True, text=True).stdout.split()[0]}"
        " pngquant). Method: the docstring of bench/dither.py.",
        "",
        "## Targets",
        "",
        "| target | measured | verdict |",
        "| --- | ---: | --- |",
        f"| blurred error with --dither <= 0.85x without, k >= 16 | worst {max(ratios):.3f} | "
        f"{'HOLDS' if max(ratios) <= 0.85 else 'MISSED'} |",
        f"| blurred error with --dither <= pngquant's (it dithers), every k | worst "
        f"{max(gaps):.3f}x, {sum(g <= 1 for g in gaps)} of {len(gaps)} held | "
        f"{'HOLDS' if max(gaps) <= 1 else 'MISSED'} |",
        f"| --dither adds <= 0.3 s at 10.7 MP, k={BIG_CLUSTERS}: mapping and error | "
        f"{compute:.2f} s | {'HOLDS' if compute <= 0.3 else 'MISSED'} |",
        f"| the same, whole command (the codebook's deflate included) | "
        f"{dither_s - plain_s:+.2f} s ({plain_s:.2f} s to {dither_s:.2f} s) | "
        f"{'HOLDS' if dither_s - plain_s <= 0.3 else 'MISSED'} |",
        "",
        "## Small photos",
        "",
        "Each cell: mean Euclidean error / blurred error (radius 1.5) (time). Ratios are of "
        "blurred errors, but for the codebook's size in bytes.",
        "",
        "| photo | k | hw2 | hw2 --dither | dither / plain | codebook dither / plain | pngquant | "
        "pngquant --nofs | Pillow quantize | dither / pngquant |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"## Pillow's palette mapping against the nearest mean (k={BIG_CLUSTERS})",
        "",
        "Pillow finds the nearest palette entry of a colour with the two low bits of each "
        "channel cleared (a 64x64x64 table), so without diffusion it differs from hw2's "
        "nearest mean near ties. Columns: the share of pixels that differ, hw2's error, the "
        "error of Pillow's mapping, the largest extra distance of a pixel that differs.",
        "",
        "| photo | differ | nearest mean | Pillow | worst extra |",
        "| --- | ---: | ---: | ---: | ---: |",
        *mapping,
        "",
        f"## What --dither adds at 10.7 MP ({big.name}, k={BIG_CLUSTERS})",
        "",
        f"Whole command, fastest of {BIG_RUNS} interleaved runs: {plain_s:.2f} s without, "
        f"{dither_s:.2f} s with --dither; codebooks of {sizes['']:,} and "
        f"{sizes['--dither']:,} bytes (dots deflate less well than bands). Its parts, in this "
        f"process (fastest of {BIG_RUNS}):",
        "",
        "| part | seconds |",
        "| --- | ---: |",
        *(f"| {name} | {seconds:.3f} |" for name, seconds in parts.items()),
        "",
    ]
    with open(RESULTS, "w") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
