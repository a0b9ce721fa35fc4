#!/usr/bin/env python3
"""Time and peak memory of hw2.py on images past Pillow's 89 MP guard, up to a gigapixel.

  python3 bench/memory.py            # makes the photos (once), runs each case once, writes the table
  python3 bench/memory.py --photos   # only makes the photos in bench/photos/

Photos (made on first use in bench/photos/, not committed):

* ``rocket_10.7mp.jpg``: the bench's 10.7 MP photo (bench.py makes it), the reference;
* ``rocket_116mp.jpg``: the sample upscaled (bicubic) to 13200x8807 with Gaussian noise
  (sigma 2, seed 0), JPEG quality 92: a phone's 108-200 MP photo;
* ``rocket_1.07gp.jpg``: ``rocket_10.7mp.jpg`` tiled 10 x 10 (40000x26700), JPEG quality 92.

Each command runs once (the gigapixel ones take minutes and several GB) in a child of a
small wrapper process (bench.py's ``measured``: ``os.wait4`` gives that child's wall time
and peak resident memory).  The table, with bytes a pixel (peak over pixels) and time a
pixel against the 10.7 MP photo's at the same k, replaces the section "Memory: images to a
gigapixel" of bench/results.md.
"""
import argparse
import os
import re
import sys
import tempfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (the photos and the measuring wrapper)

HEADING = "## Memory: images to a gigapixel"
BOUND = (6, 200)  # the target: peak at most 6 bytes a pixel + 200 MB (RGB, k <= 256)
P116, GIGA = "rocket_116mp.jpg", "rocket_1.07gp.jpg"
SIZE_116 = (13200, 8807)
TILES = 10


def photo_116():
    """The sample upscaled to 13200x8807 with noise (sigma 2, seed 0), JPEG quality 92."""
    path = os.path.join(bench.PHOTOS, P116)
    if not os.path.exists(path):
        with Image.open(bench.SAMPLE) as image:
            big = np.asarray(image.convert("RGB").resize(SIZE_116, Image.BICUBIC))
        rng = np.random.default_rng(0)
        out = np.empty_like(big)
        for start in range(0, big.shape[0], 256):
            strip = big[start:start + 256].astype(np.float32)
            strip += rng.normal(0.0, 2.0, strip.shape).astype(np.float32)
            out[start:start + 256] = np.clip(np.rint(strip), 0, 255)
        del big
        Image.fromarray(out).save(path + ".tmp", format="JPEG", quality=92)
        os.replace(path + ".tmp", path)
    return path


def photo_giga():
    """The 10.7 MP JPEG tiled 10 x 10 (1.07 GP), JPEG quality 92."""
    path = os.path.join(bench.PHOTOS, GIGA)
    if not os.path.exists(path):
        tile_path = bench.bicubic_photo().png
        with Image.open(tile_path) as tile:
            tile.load()
            canvas = Image.new("RGB", (tile.width * TILES, tile.height * TILES))
            for row in range(TILES):
                for column in range(TILES):
                    canvas.paste(tile, (column * tile.width, row * tile.height))
        canvas.save(path + ".tmp", format="JPEG", quality=92)
        os.replace(path + ".tmp", path)
    return path


def hw2(*args):
    return [sys.executable, os.path.join(bench.ROOT, "hw2.py"), *args, "-q"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", action="store_true", help="only make the photos")
    args = parser.parse_args()
    reference = os.path.join(bench.PHOTOS, bench.BICUBIC)
    bench.bicubic_photo()
    photos = [("10.7 MP JPEG (reference)", reference), ("116 MP JPEG", photo_116()),
              ("1.07 GP JPEG", photo_giga())]
    if args.photos:
        return
    Image.MAX_IMAGE_PIXELS = None  # this script's own Image.open reads the sizes of the photos
    rows, per_pixel = [], {}
    with tempfile.TemporaryDirectory(prefix="memory-") as tmp:
        book, back = os.path.join(tmp, "c.npz"), os.path.join(tmp, "back.png")
        for label, photo in photos:
            with Image.open(photo) as image:  # the header only
                n_pixels = image.width * image.height
            for task, cmd in (("--compress, k=256", hw2("--compress", photo, "--clusters", "256",
                                                       "--output", book)),
                              ("--decompress to .png", hw2("--decompress", book, "--output", back))):
                run = bench.measured(cmd, timeout=3600)
                per_pixel.setdefault(task, run.seconds / n_pixels)
                bound = (BOUND[0] * n_pixels + BOUND[1] * 2 ** 20) / 2 ** 20
                rows.append(f"| {label} | {task} | {run.seconds:.1f} | {run.rss:,.0f} | "
                            f"{run.rss * 2 ** 20 / n_pixels:.2f} | {bound:,.0f} | "
                            f"{'HOLDS' if run.rss <= bound else 'MISSED'} | "
                            f"{run.seconds / n_pixels / per_pixel[task]:.2f} |")
                print(rows[-1], flush=True)
    table = "\n".join([
        HEADING, "",
        "One run each of `python3 bench/memory.py` (peak resident memory of the command alone, "
        "from os.wait4 in a small wrapper; bytes a pixel = peak / pixels; time a pixel relative "
        "to the 10.7 MP photo's for the same command; target: a peak of at most 6 bytes a pixel "
        "+ 200 MB, and time a pixel at most 1.3).", "",
        "| image | command | time (s) | peak (MB) | bytes a pixel | 6 B/px + 200 MB | peak | "
        "time a pixel / 10.7 MP's |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |", *rows, ""])
    with open(bench.RESULTS) as handle:
        text = handle.read()
    section = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.M | re.S)
    text = section.sub(lambda _: table + "\n", text) if section.search(text) else \
        text.rstrip("\n") + "\n\n" + table
    with open(bench.RESULTS, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
