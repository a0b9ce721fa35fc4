#!/usr/bin/env python3
"""Make the README's pictures and results table for the sample photo.

  python3 tools/make_figures.py            # writes docs/*.jpg, prints the table

It runs ``hw2.py`` as a user would (a separate process per run, timed end to
end), rebuilds each picture from the codebook the way a grader would
(``means[assignments].reshape(img_shape)``) and draws the figures with Pillow
alone:

* ``docs/side_by_side.jpg``: the original, k-means and the mixture at k=20;
* ``docs/kmeans_strip.jpg``: k-means at k = 2, 4, 8, 16, 32;
* ``docs/dither_sky.png``: a crop of the sky, original, k=8 and k=8 with ``--dither``,
  enlarged with nearest-neighbour so that the bands and the dots show.

Then it prints a markdown table (model, k, reconstruction error, codebook
size, ratio to the input file, time) for the README.  Times depend on the
machine and on what else runs on it.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

ROOT = Path(__file__).resolve().parent.parent
STRIP_CLUSTERS = (2, 4, 8, 16, 32)
SIDE_BY_SIDE_CLUSTERS = 20
JPEG_QUALITY = 85
GAP, LABEL_HEIGHT, FONT_SIZE = 6, 24, 15
RESULT = re.compile(r"^Reconstruction error is (\S+)$")
MODEL_NAMES = {"kmeans": "k-means", "mixture": "Gaussian mixture"}
# The dither figure: k, the crop of the sample's sky (left, top, right, bottom) and its zoom.
DITHER_CLUSTERS, DITHER_CROP, DITHER_ZOOM = 8, (345, 130, 435, 370), 3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=str(ROOT / "samples" / "rocket.jpg"),
                        help="photo to compress (default: samples/rocket.jpg)")
    parser.add_argument("--out-dir", default=str(ROOT / "docs"),
                        help="where the pictures go (default: docs/)")
    parser.add_argument("--models", default="kmeans,mixture",
                        help="comma-separated models to run (default: kmeans,mixture)")
    parser.add_argument("--width", type=int, default=1100,
                        help="width of each figure in pixels (default: 1100)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each command; the table shows the fastest "
                             "(default: 3)")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    original = read_upright(args.image)

    runs = {}
    with tempfile.TemporaryDirectory() as scratch:
        for model in models:
            for k in sorted(set(STRIP_CLUSTERS) | {SIDE_BY_SIDE_CLUSTERS}):
                runs[model, k] = run_hw2(args.image, model, k, Path(scratch), args.repeat)
        if "kmeans" in models:
            runs["kmeans", DITHER_CLUSTERS, "--dither"] = run_hw2(
                args.image, "kmeans", DITHER_CLUSTERS, Path(scratch), args.repeat, "--dither")

    panels = [(original, "original")]
    panels += [panel(runs, model, SIDE_BY_SIDE_CLUSTERS) for model in models]
    save_figure(row_of_panels(panels, args.width), out_dir / "side_by_side.jpg")
    if "kmeans" in models:
        strip = [panel(runs, "kmeans", k) for k in STRIP_CLUSTERS]
        save_figure(row_of_panels(strip, args.width), out_dir / "kmeans_strip.jpg")
        save_figure(dither_figure(original, runs), out_dir / "dither_sky.png")
    print(results_table(runs, os.path.getsize(args.image)))
    return 0


def panel(runs, model, n_clusters):
    """A run's picture and its label: model, k and reconstruction error."""
    run = runs[model, n_clusters]
    return run["image"], f"{MODEL_NAMES[model]}, k={n_clusters}: error {run['error']:.1f}"


def read_upright(path):
    """The photo as an RGB Pillow image, turned upright per its EXIF orientation."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def run_hw2(image_path, model, n_clusters, scratch, repeat=1, *flags):
    """Compress with ``hw2.py`` (and ``flags``) in a fresh process and rebuild the picture.

    The command runs ``repeat`` times and the fastest time is kept: other
    work on the machine only ever adds to a run's time.

    Returns
    -------
    dict
        ``error`` (float, as printed), ``bytes`` (codebook size), ``seconds``
        (fastest wall time of the whole command) and ``image`` (Pillow image).
    """
    codebook = scratch / f"{model}-{n_clusters}{''.join(flags)}.npz"
    command = [sys.executable, str(ROOT / "hw2.py"), "--compress", str(image_path),
               "--model", model, "--clusters", str(n_clusters), "--output", str(codebook),
               "--quiet", *flags]
    seconds = float("inf")
    for _ in range(max(1, repeat)):
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = min(seconds, time.perf_counter() - started)
        match = RESULT.match(done.stdout.strip())
        if done.returncode != 0 or not match:
            sys.exit(f"make_figures: {' '.join(command)} failed ({done.returncode}):\n"
                     f"{done.stdout}{done.stderr}")
    print(f"{model:8} k={n_clusters:<3} error {float(match.group(1)):7.3f}  {seconds:5.2f} s "
          f"{' '.join(flags)}", file=sys.stderr)
    return {"error": float(match.group(1)), "bytes": os.path.getsize(codebook),
            "seconds": seconds, "image": decode(codebook)}


def decode(codebook):
    """Rebuild an image from a codebook with nothing but NumPy, as a grader would."""
    with np.load(codebook, allow_pickle=False) as data:
        pixels = data["means"][data["assignments"]].reshape(data["img_shape"])
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)).convert("RGB")


def row_of_panels(panels, width):
    """Pictures side by side, each with a label underneath, on a white canvas.

    Parameters
    ----------
    panels : list of (PIL.Image.Image, str)
        Pictures of one size, with their labels.
    width : int
        Width of the whole figure in pixels.

    Returns
    -------
    PIL.Image.Image
    """
    n_panels = len(panels)
    panel_width = (width - GAP * (n_panels + 1)) // n_panels
    source_width, source_height = panels[0][0].size
    panel_height = round(source_height * panel_width / source_width)
    figure = Image.new("RGB", (width, panel_height + LABEL_HEIGHT + 2 * GAP), "white")
    draw = ImageDraw.Draw(figure)
    font = label_font()
    for i, (picture, label) in enumerate(panels):
        left = GAP + i * (panel_width + GAP)
        figure.paste(picture.resize((panel_width, panel_height), Image.LANCZOS), (left, GAP))
        text_width = draw.textlength(label, font=font)
        draw.text((left + (panel_width - text_width) / 2, GAP + panel_height + 4), label,
                  fill="black", font=font)
    return figure


def dither_figure(original, runs):
    """The sky crop: original, k-means at DITHER_CLUSTERS, and the same with --dither.

    Enlarged DITHER_ZOOM times with nearest-neighbour (no smoothing), so the figure
    shows the bands the plain codebook leaves and the dots that replace them.
    """
    plain, dithered = runs["kmeans", DITHER_CLUSTERS], runs["kmeans", DITHER_CLUSTERS, "--dither"]
    k = DITHER_CLUSTERS
    panels = [(original, "original"), (plain["image"], f"k={k}: error {plain['error']:.1f}"),
              (dithered["image"], f"k={k}, --dither: error {dithered['error']:.1f}")]
    width, height = DITHER_CROP[2] - DITHER_CROP[0], DITHER_CROP[3] - DITHER_CROP[1]
    size = (width * DITHER_ZOOM, height * DITHER_ZOOM)
    figure = Image.new("RGB", (len(panels) * (size[0] + GAP) + GAP,
                               size[1] + LABEL_HEIGHT + 2 * GAP), "white")
    draw, font = ImageDraw.Draw(figure), label_font()
    for i, (picture, label) in enumerate(panels):
        left = GAP + i * (size[0] + GAP)
        figure.paste(picture.crop(DITHER_CROP).resize(size, Image.NEAREST), (left, GAP))
        draw.text((left + (size[0] - draw.textlength(label, font=font)) / 2,
                   GAP + size[1] + 4), label, fill="black", font=font)
    return figure


def label_font():
    """Pillow's own font: scalable since Pillow 10.1, a small bitmap font before."""
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def save_figure(figure, path):
    figure.save(path, **({"optimize": True} if path.suffix == ".png" else
                         {"quality": JPEG_QUALITY, "optimize": True}))
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
          f"{figure.width}x{figure.height}, {os.path.getsize(path) / 1000:.0f} KB",
          file=sys.stderr)


def results_table(runs, input_bytes):
    """The README's markdown table, one row per run."""
    lines = ["| model | k | reconstruction error | codebook | ratio to the input | time |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for (model, k, *flags), run in runs.items():
        if flags:
            continue  # the dither figure's run
        lines.append(f"| {model} | {k} | {run['error']:.2f} | {run['bytes'] / 1000:.1f} KB | "
                     f"{run['bytes'] / input_bytes:.0%} | {run['seconds']:.2f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
