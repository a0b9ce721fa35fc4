#!/usr/bin/env python3
"""Compress an image by clustering its pixel colours, and decompress it again.

  python3 hw2.py --compress photo.jpg --model kmeans --clusters 20 --output c.npz
  python3 hw2.py --decompress c.npz --output photo.png

Compressing replaces every pixel by one of --clusters representative colours
(the cluster means) and stores, for each pixel, which one: a codebook of three
arrays, decoded by ``means[assignments].reshape(img_shape)``.  It prints
``Reconstruction error is <float>``, the mean Euclidean distance between each
pixel and its cluster's mean.
"""
import argparse
import os
import sys
import time

import numpy as np

import codec
import kmeans

MAX_CLUSTERS = 1 << 16
EXIT_FILE, EXIT_USAGE = 1, 2

MODELS = {
    "kmeans": "k-means: each colour goes to the nearest of k centres (k-means++ start)",
    "mixture": "Gaussian mixture fitted by EM: soft clusters with their own shape",
}
# Dashes a PDF may turn "--" into; pasted arguments starting with one are read as "--".
_PASTED_DASHES = ("\u2013", "\u2014", "\u2012", "\u2015", "\u2212")


def main(argv=None):
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 for a file that cannot be read or written,
        2 for a bad command line.
    """
    parser = build_parser()
    args = parser.parse_args(normalize_dashes(sys.argv[1:] if argv is None else argv))
    check_args(parser, args)
    report = Reporter(verbose=args.verbose, quiet=args.quiet)
    try:
        if args.compress is not None:
            compress(args, report)
        else:
            decompress(args, report)
    except codec.CodecError as exc:
        report.clear()
        print(f"hw2: error: {exc}", file=sys.stderr)
        return EXIT_FILE
    except MemoryError:
        report.clear()
        print("hw2: error: out of memory; try a smaller image or fewer --clusters",
              file=sys.stderr)
        return EXIT_FILE
    except KeyboardInterrupt:
        report.clear()
        print("hw2: interrupted; no output written", file=sys.stderr)
        return 130
    return 0


def build_parser():
    """The argument parser: the assignment's flags, plus a few optional extras."""
    parser = argparse.ArgumentParser(
        prog="hw2.py",
        description="Compress an image by clustering its pixel colours (vector "
                    "quantization), or decompress such a codebook back to an image.",
        epilog="examples:\n"
               "  python3 hw2.py --compress photo.jpg --model kmeans --clusters 20 "
               "--output c.npz\n"
               "  python3 hw2.py --decompress c.npz --output photo.jpg\n\n"
               "exit status: 0 success, 1 a file cannot be read or written, "
               "2 a bad command line",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compress", metavar="IMAGE",
                        help="image to compress (JPEG, PNG, GIF, TIFF, ... any Pillow reads)")
    parser.add_argument("--decompress", metavar="CODEBOOK",
                        help="codebook (.npz) to turn back into an image")
    parser.add_argument("--clusters", type=int, default=20, metavar="K",
                        help="number of colours to keep (default: 20)")
    parser.add_argument("--model", choices=sorted(MODELS), default="kmeans",
                        help="; ".join(f"{name}: {text}" for name, text in MODELS.items())
                             + " (default: kmeans)")
    parser.add_argument("--output", required=True, metavar="PATH",
                        help="where to write: the codebook when compressing (written at "
                             "exactly this path), the image when decompressing (its "
                             "extension picks the format)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; the same seed gives the same codebook "
                             "(default: 0)")
    parser.add_argument("--init", choices=sorted(kmeans.INITS), default="k-means++",
                        help="how k-means picks its first centres: k-means++ (default) or "
                             "random data points (the plain algorithm)")
    chatter = parser.add_mutually_exclusive_group()
    chatter.add_argument("-v", "--verbose", action="store_true",
                         help="print one line per iteration on stderr")
    chatter.add_argument("-q", "--quiet", action="store_true",
                         help="print nothing but the result line")
    return parser


def normalize_dashes(argv):
    """Read arguments that start with a pasted en or em dash as ``--`` options.

    Parameters
    ----------
    argv : list of str

    Returns
    -------
    list of str
    """
    fixed = []
    for arg in argv:
        stripped = arg.lstrip("".join(_PASTED_DASHES) + "-")
        if arg[:1] in _PASTED_DASHES and stripped[:1].isalpha():
            arg = "--" + stripped
        fixed.append(arg)
    return fixed


def check_args(parser, args):
    """Check what can be checked before any work starts (exits 2 via parser.error)."""
    if (args.compress is None) == (args.decompress is None):
        parser.error("give exactly one of --compress IMAGE or --decompress CODEBOOK")
    if not 1 <= args.clusters <= MAX_CLUSTERS:
        parser.error(f"argument --clusters: {args.clusters} is not between 1 and {MAX_CLUSTERS}")
    if args.seed < 0:
        parser.error(f"argument --seed: {args.seed} is negative")


def compress(args, report):
    """Cluster the colours of ``args.compress`` and write the codebook to ``args.output``."""
    started = time.perf_counter()
    codec.check_output_path(args.output, input_path=args.compress)
    pixels = codec.read_image(args.compress)
    img_shape = pixels.shape
    flat = pixels.reshape(img_shape[0] * img_shape[1], -1)
    del pixels
    colours, counts, inverse = codec.distinct_colours(flat)
    del flat
    means, labels, fit = fit_colours(colours, counts, args, report)
    assignments = labels.astype(codec.label_dtype(len(means)))[inverse]
    del inverse
    error = codec.reconstruction_error(colours, counts, means, labels)
    codec.write_codebook(args.output, assignments, means, img_shape)
    print(f"Reconstruction error is {error}")
    report.summary(compress_summary(args, len(colours), len(means), fit,
                                    time.perf_counter() - started))


def fit_colours(colours, counts, args, report):
    """Fit the chosen model on the distinct colours, weighted by their counts.

    Returns
    -------
    means : ndarray of shape (n_clusters, n_channels), float64
    labels : ndarray of shape (n_colours,)
        Cluster of each distinct colour.
    fit : kmeans.KMeansResult or gmm.GMMResult or None
        None when the image has no more colours than clusters (lossless).
    """
    X = colours.astype(np.float64)
    if len(colours) <= args.clusters:
        return X, np.arange(len(colours)), None
    rng = np.random.default_rng(args.seed)
    progress = report.progress_callback(args.model)
    if args.model == "mixture":
        import gmm
        fit = gmm.fit_gmm(X, args.clusters, sample_weight=counts, rng=rng, callback=progress)
        labels = gmm.predict(X, fit)
    else:
        fit = kmeans.kmeans(X, args.clusters, sample_weight=counts, init=args.init,
                            n_init=kmeans.auto_n_init(len(X), args.clusters), rng=rng,
                            callback=progress)
        labels = fit.labels
    report.clear()
    return fit.means if args.model == "mixture" else fit.centers, labels, fit


def compress_summary(args, n_colours, n_means, fit, seconds):
    """One line for stderr describing a finished compression."""
    out_size, in_size = os.path.getsize(args.output), os.path.getsize(args.compress)
    if fit is None:
        clusters = (f"{n_means} clusters (the image has only {n_colours} distinct "
                    f"colours: lossless)")
    else:
        state = "converged" if fit.converged else "stopped at the iteration limit"
        clusters = f"{n_means} clusters, {fit.n_iter} iterations, {state}"
    return (f"wrote {args.output}: {human_size(out_size)} from {human_size(in_size)} "
            f"({out_size / max(in_size, 1):.0%} of the input); {args.model}, {clusters}; "
            f"{seconds:.2f} s")


def decompress(args, report):
    """Rebuild the image in ``args.decompress`` and write it to ``args.output``."""
    codec.image_format_for(args.output)
    codec.check_output_path(args.output, input_path=args.decompress)
    assignments, means, img_shape = codec.read_codebook(args.decompress)
    pixels = codec.decode(assignments, means, img_shape)
    if codec.write_image(args.output, pixels):
        report.note(f"note: {args.output}'s format has no transparency; "
                    "the image was composited on white")
    height, width = pixels.shape[:2]
    report.summary(f"wrote {args.output}: {width}x{height} "
                   f"{codec.image_format_for(args.output)} image, "
                   f"{human_size(os.path.getsize(args.output))}")


def human_size(n_bytes):
    """``1234567`` -> ``'1.2 MB'``."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000


class Reporter:
    """Everything the program says on stderr besides errors.

    Parameters
    ----------
    verbose : bool
        One line per iteration, even when stderr is not a terminal.
    quiet : bool
        Nothing at all.
    stream : file, optional
        Where to write (default ``sys.stderr``).
    """

    def __init__(self, verbose=False, quiet=False, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.verbose, self.quiet = verbose, quiet
        self.live = not quiet and not verbose and _isatty(self.stream)
        self._shown = False

    def progress_callback(self, model):
        """A ``callback(iteration, value)`` for the fitting functions, or None."""
        if self.quiet or not (self.verbose or self.live):
            return None
        what = "log-likelihood per pixel" if model == "mixture" else "objective"
        started, last = time.perf_counter(), [0.0]

        def callback(iteration, value):
            now = time.perf_counter()
            line = f"{model}: iteration {iteration}, {what} {value:.6g}, {now - started:.1f} s"
            if self.verbose:
                print(line, file=self.stream, flush=True)
            elif now - last[0] >= 0.1:
                last[0] = now
                self.stream.write("\r\033[K" + line)
                self.stream.flush()
                self._shown = True
        return callback

    def clear(self):
        """Erase the progress line, if one is showing."""
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False

    def note(self, message):
        """A line on stderr, unless quiet."""
        if not self.quiet:
            print(f"hw2: {message}", file=self.stream)

    summary = note


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
