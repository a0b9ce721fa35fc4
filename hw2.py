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
import re
import sys
import textwrap
import time

import numpy as np

import codec
import kmeans

MAX_CLUSTERS = 1 << 16
EXIT_FILE, EXIT_USAGE = 1, 2

MODELS = {
    "kmeans": "(the default) k-means: each colour goes to the nearest of k centres, "
              "which move to the mean of their colours until they settle (k-means++ start)",
    "mixture": "a Gaussian mixture fitted by EM: k soft clusters, each with its own mean "
               "and covariance; a pixel takes the mean of its most likely cluster",
}
# Dashes a PDF may print instead of "--"; pasted options starting with one are read as "--".
_PASTED_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"
# What follows the dashes of a pasted option: a flag name, maybe "=value".
_OPTION_WORD = re.compile(r"[A-Za-z][A-Za-z-]*(=.*)?", re.DOTALL)


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
        2 for a bad command line.  ``--help`` prints the help and raises
        SystemExit(0), as argparse does.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(normalize_dashes(sys.argv[1:] if argv is None else argv))
        check_args(parser, args)
    except UsageError as exc:
        print(f"hw2: error: {printable(str(exc))}; try 'python3 hw2.py --help'",
              file=sys.stderr)
        return EXIT_USAGE
    report = Reporter(verbose=args.verbose, quiet=args.quiet)
    try:
        if args.compress is not None:
            compress(args, report)
        else:
            decompress(args, report)
    except codec.CodecError as exc:
        report.clear()
        print(f"hw2: error: {printable(str(exc))}", file=sys.stderr)
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
    except BrokenPipeError:
        # stdout was closed early (``| head -c0``): the output file is written; keep
        # Python from printing a traceback when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FILE
    return 0


def build_parser():
    """The argument parser: the assignment's flags, plus a few optional extras."""
    models = "\n".join(textwrap.fill(text, 79, initial_indent=f"  {name:<9}",
                                      subsequent_indent=" " * 11)
                        for name, text in MODELS.items())
    parser = ArgumentParser(
        prog="hw2.py",
        description="Compress an image by clustering its pixel colours (vector quantization)\n"
                    "into a codebook, or decompress a codebook back into an image. Compressing\n"
                    "prints one line, 'Reconstruction error is <float>': the mean distance, in\n"
                    "0..255 colour units, between each pixel and the colour that replaces it.\n\n"
                    "models (--model):\n" + models,
        epilog="examples:\n"
               "  python3 hw2.py --compress photo.jpg --model kmeans --clusters 20 "
               "--output c.npz\n"
               "  python3 hw2.py --decompress c.npz --output photo.jpg\n\n"
               "Flags pasted from a PDF with an en or em dash in place of '--' are accepted.\n\n"
               "exit status:\n"
               "  0    success\n"
               "  1    a file cannot be read or written (missing, not an image, damaged codebook)\n"
               "  2    a bad command line\n"
               "  130  interrupted (Ctrl-C); nothing is written",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compress", metavar="IMAGE",
                        help="image to compress (JPEG, PNG, GIF, TIFF, ... any Pillow reads)")
    parser.add_argument("--decompress", metavar="CODEBOOK",
                        help="codebook (.npz) to turn back into an image")
    parser.add_argument("--clusters", type=int, default=20, metavar="K",
                        help=f"number of colours to keep, 1 to {MAX_CLUSTERS} (default: 20)")
    parser.add_argument("--model", choices=sorted(MODELS), default="kmeans",
                        help="the clustering model, see above (default: kmeans)")
    parser.add_argument("--output", required=True, metavar="PATH",
                        help="where to write: the codebook when compressing (written at "
                             "exactly this path), the image when decompressing (its "
                             "extension picks the format)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="random seed, 0 or more (default: 0); the same seed gives the "
                             "same codebook")
    parser.add_argument("--init", choices=sorted(kmeans.INITS), default="k-means++",
                        help="how k-means picks its first centres: k-means++ (default) or "
                             "random data points (the plain algorithm)")
    chatter = parser.add_mutually_exclusive_group()
    chatter.add_argument("-v", "--verbose", action="store_true",
                         help="print one line per iteration on stderr, even when it is "
                              "not a terminal")
    chatter.add_argument("-q", "--quiet", action="store_true",
                         help="print nothing on stderr but errors; stdout keeps the "
                              "result line")
    return parser


def normalize_dashes(argv):
    """Read options pasted with an en or em dash (``–compress``) as ``--compress``.

    Only an argument whose leading dashes include a typographic one and whose
    rest looks like a flag name (letters and hyphens, maybe ``=value``) is
    changed; negative numbers, file names (``–photo.jpg``) and everything
    after a bare ``--`` are left alone.

    Parameters
    ----------
    argv : list of str

    Returns
    -------
    list of str
    """
    fixed, options_ended = [], False
    for arg in argv:
        rest = arg.lstrip(_PASTED_DASHES + "-")
        leading = arg[:len(arg) - len(rest)]
        if (not options_ended and any(dash in _PASTED_DASHES for dash in leading)
                and _OPTION_WORD.fullmatch(rest)):
            arg = "--" + rest
        options_ended = options_ended or arg == "--"
        fixed.append(arg)
    return fixed


def printable(text):
    """``text`` with control characters (newlines too) escaped, so it stays one line.

    File names and damaged files can hold any character.
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class UsageError(Exception):
    """A bad command line; the message says which argument and why."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose errors reach main() as UsageError instead of exiting."""

    def error(self, message):
        raise UsageError(message)


def check_args(parser, args):
    """Check what can be checked before any work starts (parser.error raises UsageError)."""
    if (args.compress is None) == (args.decompress is None):
        parser.error("give exactly one of --compress IMAGE or --decompress CODEBOOK")
    for flag in ("compress", "decompress", "output"):
        if getattr(args, flag) == "":
            parser.error(f"argument --{flag}: the path is empty")
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
    means, labels, fit, n_starts = fit_colours(colours, counts, args, report)
    assignments = codec.take(labels.astype(codec.label_dtype(len(means))), inverse)
    del inverse
    error = codec.reconstruction_error(colours, counts, means, labels)
    codec.write_codebook(args.output, assignments, means, img_shape)
    print(f"Reconstruction error is {error}")
    report.summary(compress_summary(args, labels, len(means), fit, n_starts,
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
    n_starts : int
        Starts the fit tried, the best one kept: k-means seedings, or EM runs.
    """
    X = colours.astype(np.float64)
    if len(colours) <= args.clusters:
        return X, np.arange(len(colours)), None, 0
    rng = np.random.default_rng(args.seed)
    progress = report.progress_callback(args.model, n_pixels=int(counts.sum()))
    if args.model == "mixture":
        import gmm
        fit = gmm.fit_gmm(X, args.clusters, sample_weight=counts, rng=rng, callback=progress)
        labels, n_starts = gmm.predict(X, fit), fit.n_runs
    else:
        n_pixels = counts.sum()
        # The Reporter takes (iteration, objective summed over pixels); seeding has no value.
        fit = kmeans.kmeans(X, args.clusters, sample_weight=counts, init=args.init, rng=rng,
                            callback=lambda p: None if np.isnan(p.value)
                            else progress(p.iteration, p.value * n_pixels))
        labels, n_starts = fit.labels, fit.n_init
    report.clear()
    return fit.means if args.model == "mixture" else fit.centers, labels, fit, n_starts


def compress_summary(args, labels, n_means, fit, n_starts, seconds):
    """One line for stderr describing a finished compression.

    Parameters
    ----------
    args : argparse.Namespace
        The command line (``output``, ``compress``, ``clusters``, ``model``).
    labels : ndarray of shape (n_colours,)
        Cluster of each distinct colour of the image.
    n_means : int
        Rows in the codebook's ``means``.
    fit : kmeans.KMeansResult or gmm.GMMResult or None
        None when the image was stored losslessly.
    n_starts : int
        Seedings (k-means) or EM runs (mixture) the fit tried; the best is kept.
    seconds : float

    Returns
    -------
    str
    """
    out_size, in_size = os.path.getsize(args.output), os.path.getsize(args.compress)
    sizes = (f"wrote {args.output}, {human_size(out_size)} (input {human_size(in_size)}: "
             f"{out_size / max(in_size, 1):.0%})")
    clusters = _clusters_used(args, labels, n_means, fit, n_starts)
    return f"{sizes}; {args.model}, {clusters}; {seconds:.2f} s"


def _clusters_used(args, labels, n_means, fit, n_starts):
    """How many clusters hold pixels, why fewer than asked, and how the fit ended."""
    n_colours = len(labels)
    if fit is None:
        return (f"{n_colours} clusters: the image has only {n_colours} distinct "
                f"colour{'s' if n_colours != 1 else ''}, stored losslessly")
    n_used = int(np.count_nonzero(np.bincount(labels, minlength=n_means)))
    if n_used < args.clusters:
        n_empty = args.clusters - n_used
        if args.model == "mixture":
            why = (f"{n_empty} component{'s are' if n_empty != 1 else ' is'} no pixel's "
                   "most likely one")
        else:
            why = f"{n_empty} cluster{'s' if n_empty != 1 else ''} ended up with no pixel"
        clusters = f"{n_used} of {args.clusters} clusters used ({why})"
    else:
        clusters = f"{n_used} clusters"
    state = "converged" if fit.converged else "stopped at the iteration limit"
    # k-means tries several seedings; EM reruns with a component moved (a "spike").
    runs = "seedings" if args.model == "kmeans" else "EM runs"
    best = f"best of {n_starts} {runs}: " if n_starts > 1 else ""
    return f"{clusters}, {best}{fit.n_iter} iterations, {state}"


def decompress(args, report):
    """Rebuild the image in ``args.decompress`` and write it to ``args.output``."""
    fmt = codec.image_format_for(args.output)
    codec.check_output_path(args.output, input_path=args.decompress)
    assignments, means, img_shape = codec.read_codebook(args.decompress)
    pixels = codec.decode(assignments, means, img_shape)
    composited = codec.write_image(args.output, pixels)
    if composited:
        report.note(f"note: {args.output}'s format has no transparency; "
                    "the image was composited on white")
    height, width = pixels.shape[:2]
    if fmt == "GIF":
        n_colours = len(codec.distinct_colours(pixels.reshape(height * width, -1))[1])
        if n_colours > 256:
            report.note(f"note: GIF holds at most 256 colours; Pillow reduced this image's "
                        f"{n_colours} colours to 256")
    n_channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    kind = _CHANNEL_NAMES[n_channels - 1 if composited else n_channels]
    report.summary(f"wrote {args.output}: {width}x{height} {kind} "
                   f"{fmt} image from {len(means)} colours, "
                   f"{human_size(os.path.getsize(args.output))}")


# What an image with n channels holds, by n (after compositing, the alpha is gone).
_CHANNEL_NAMES = {1: "grey", 2: "grey+alpha", 3: "RGB", 4: "RGBA"}


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

    Attributes
    ----------
    n_starts : int
        Starts of the last fit seen by its progress callback (a fit that goes
        back to an earlier iteration has started again), to number the runs
        in the progress lines.
    """

    # Seconds between two redraws of the live progress line.
    REDRAW_INTERVAL = 0.1

    def __init__(self, verbose=False, quiet=False, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.verbose, self.quiet = verbose, quiet
        self.live = not quiet and not verbose and _isatty(self.stream)
        self.n_starts = 0
        self._shown = False

    def progress_callback(self, model, n_pixels=None):
        """A ``callback(iteration, value)`` for the fitting functions.

        It counts the starts in ``n_starts`` and, unless quiet, shows progress:
        one line per iteration when verbose, else one line redrawn in place
        (at most every ``REDRAW_INTERVAL`` seconds, the first call at once)
        when stderr is a terminal.

        Parameters
        ----------
        model : {"kmeans", "mixture"}
            Names the line and the value: k-means passes its objective (a sum
            over pixels), the mixture its mean log-likelihood per pixel.
        n_pixels : int, optional
            When given, the k-means objective is shown per pixel (the mean
            squared distance), a number that does not grow with the image.
        """
        if model == "mixture":
            what, scale = "log-likelihood per pixel", 1.0
        elif n_pixels:
            what, scale = "objective per pixel", 1.0 / n_pixels
        else:
            what, scale = "objective", 1.0
        started, last_drawn, last_iteration = time.perf_counter(), [None], [0]
        self.n_starts = 0

        def callback(iteration, value):
            if iteration <= last_iteration[0] or self.n_starts == 0:
                self.n_starts += 1
            last_iteration[0] = iteration
            if not (self.verbose or self.live):
                return
            now = time.perf_counter()
            run = f"run {self.n_starts}, " if self.n_starts > 1 else ""
            line = (f"{model}: {run}iteration {iteration}, {what} {value * scale:.6g}, "
                    f"{now - started:.1f} s")
            if self.verbose:
                print(line, file=self.stream, flush=True)
            elif last_drawn[0] is None or now - last_drawn[0] >= self.REDRAW_INTERVAL:
                last_drawn[0] = now
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
