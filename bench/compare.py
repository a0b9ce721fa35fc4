"""Two checkouts of hw2.py side by side: whole-command time and RGB MSE, runs interleaved.

    python3 bench/compare.py OLD_DIR [NEW_DIR] [--big] [--reps 3]

Each case (photo, k, model) runs OLD and NEW in turn, ``--reps`` times; the fastest
wall time of each is kept, and the MSE (the k-means objective per pixel) is computed from
the first codebook of each.  Photos come from bench/photos/ (made by bench.py): the four
small ones at k=20 and 256 with both models, and with --big the noisy 10.7 MP photo too.
The machine is shared and noisy: read the ratios of one run, and repeat the run.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
PHOTOS = os.path.join(HERE, "photos")


def mse(photo, book):
    with Image.open(photo) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)
    with np.load(book) as archive:
        rebuilt = archive["means"][archive["assignments"]].reshape(len(pixels), -1)
    return float(((pixels - rebuilt[:, :3]) ** 2).sum(axis=1).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new", nargs="?", default=os.path.dirname(HERE))
    parser.add_argument("--big", action="store_true", help="add the noisy 10.7 MP photo")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    names = ["rocket", "chelsea", "coffee", "astronaut"] + ["rocket_noisy_10.7mp"] * args.big
    cases = [(name, k, model) for name in names for k in (20, 256) for model in ("kmeans", "mixture")]
    ratios = []
    with tempfile.TemporaryDirectory() as folder:
        for name, k, model in cases:
            photo, best, error = os.path.join(PHOTOS, name + ".png"), {}, {}
            for rep in range(args.reps):
                for tree in ("old", "new"):
                    book = os.path.join(folder, tree + ".npz")
                    start = time.perf_counter()
                    subprocess.run([sys.executable, os.path.join(getattr(args, tree), "hw2.py"),
                                    "--compress", photo, "--clusters", str(k), "--model", model,
                                    "--output", book, "-q"], check=True, stdout=subprocess.DEVNULL)
                    best[tree] = min(best.get(tree, np.inf), time.perf_counter() - start)
                    if rep == 0:
                        error[tree] = mse(photo, book)
            ratios.append((best["new"] / best["old"], error["new"] / error["old"]))
            print(f"{name:20s} {k:4d} {model:8s} old {best['old']:.2f} s new {best['new']:.2f} s "
                  f"ratio {ratios[-1][0]:.3f} | MSE old {error['old']:.3f} new {error['new']:.3f} "
                  f"ratio {ratios[-1][1]:.4f}", flush=True)
    time_ratio, mse_ratio = np.array(ratios).T
    print(f"geometric mean: time {np.exp(np.log(time_ratio).mean()):.3f} (max "
          f"{time_ratio.max():.3f}), MSE {np.exp(np.log(mse_ratio).mean()):.4f} (max "
          f"{mse_ratio.max():.4f})")


if __name__ == "__main__":
    main()
