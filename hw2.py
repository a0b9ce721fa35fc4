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
import os

# One BLAS thread, set before NumPy loads its BLAS (a caller's own setting wins).  Our
# products are thin (colours x 3 features x k): a second thread mostly spins.  Measured
# end to end on 2 cores, one thread / default, median wall (CPU) time ratios: 0.3 MP
# photos (rocket, chelsea; k=20, 256; kmeans, mixture) 0.96-1.07 (0.51-0.67); the
# 10.7 MP noisy photo 0.92 and 0.89 (0.76, 0.79) for kmeans at k=20, 256, 0.78 and
# 0.91 (0.78, 0.73) for the mixture.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import time  # noqa: E402  (after the BLAS setting, like every import below)

_IMPORTED = time.monotonic()  # before the imports below: the summary's time includes them

import argparse
import contextlib
import difflib
import re
import shutil
import signal
import sys
import textwrap
import unicodedata

import numpy as np

import codec
import gmm
import kmeans

# The largest --clusters of the default model.
MAX_CLUSTERS = kmeans.MAX_CLUSTERS
EXIT_FILE, EXIT_USAGE = 1, 2

MODELS = {
    "kmeans": "(the default) k-means: each colour goes to the nearest of k centres, "
              "which move to the mean of their colours until they settle (k-means++ start)",
    "mixture": "a Gaussian mixture fitted by EM: k soft clusters, each with its own mean "
               "and covariance; a pixel takes the mean of its most likely cluster",
}
# Wrong names people type for a choice, and the choice they mean (a hint, never accepted).
_CHOICE_HINTS = {"gmm": "mixture", "gaussian": "mixture", "gaussianmixture": "mixture",
                 "em": "mixture", "mog": "mixture", "kmeansplusplus": "k-means++",
                 "plusplus": "k-means++", "uniform": "random"}
# Options people type for ours (a hint after "did you mean", never accepted).
_OPTION_HINTS = {"colors": "--clusters", "colours": "--clusters", "k": "--clusters",
                 "n-clusters": "--clusters", "input": "--compress", "o": "--output",
                 "m": "--model", "d": "--decompress", "s": "--seed"}
# Dashes a PDF may print instead of "--"; pasted options starting with one are read as "--".
_PASTED_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"
# What follows the dashes of a pasted option: a flag name, maybe "=value".
_OPTION_WORD = re.compile(r"[A-Za-z][A-Za-z-]*(=.*)?", re.DOTALL)
# Signals that stop a run the way Ctrl-C does (SIGINT raises KeyboardInterrupt already).
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                      if hasattr(signal, name))


def main(argv=None):
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default ``sys.argv[1:]``, and
        then the reported time counts from the start of the process).

    Returns
    -------
    int
        0 on success, 1 for a file that cannot be read or written (or a
        result line that cannot be printed), 2 for a bad command line,
        130 for Ctrl-C and 128 + n for signal n (SIGTERM, SIGHUP).
        ``--help`` prints the help and raises SystemExit(0), as argparse does.
    """
    started = process_start() if argv is None else time.monotonic()
    _occupy_closed_std_fds()
    stderr = sys.stderr if sys.stderr is not None else _Discard()
    parser = build_parser()
    try:
        args = parser.parse_args(normalize_dashes(sys.argv[1:] if argv is None else argv))
        check_args(parser, args)
    except UsageError as exc:
        _say(stderr, f"hw2: error: {printable(str(exc))}; try 'python3 hw2.py --help'")
        return EXIT_USAGE
    report = Reporter(verbose=args.verbose, quiet=args.quiet, stream=stderr, started=started)
    try:
        with _signals_raise(Terminated):
            (compress if args.compress is not None else decompress)(args, report)
    except codec.CodecError as exc:
        return report.fail(f"hw2: error: {printable(str(exc))}", EXIT_FILE)
    except ResultLost as exc:
        return report.fail(f"hw2: error: {exc}; the result line is lost, but "
                           f"{printable(report.written)} was written", EXIT_FILE)
    except MemoryError:
        return report.fail("hw2: error: out of memory; try a smaller image or fewer --clusters",
                           EXIT_FILE)
    except KeyboardInterrupt:
        return report.fail(f"hw2: interrupted; {report.outcome()}", 128 + signal.SIGINT)
    except Terminated as exc:
        return report.fail(f"hw2: terminated ({exc.name}); {report.outcome()}",
                           128 + exc.signum)
    finally:
        report.clear()
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
               "  1    a file cannot be read or written (missing, not an image, damaged\n"
               "       codebook), or the result line cannot be printed\n"
               "  2    a bad command line\n"
               "  130  interrupted (Ctrl-C); nothing is written\n"
               "  143  terminated (SIGTERM; 129 for SIGHUP); nothing is written",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compress", metavar="IMAGE",
                        help="image to compress (JPEG, PNG, GIF, TIFF, ... any Pillow reads)")
    parser.add_argument("--decompress", metavar="CODEBOOK",
                        help="codebook (.npz) to turn back into an image")
    limits = cluster_limits()
    mixture = (f"; mixture: up to {limits['mixture']}"
               if limits["mixture"] != limits["kmeans"] else "")
    parser.add_argument("--clusters", type=int, default=20, metavar="K",
                        help=f"number of colours to keep, 1 to {limits['kmeans']} "
                             f"(default: 20{mixture})")
    parser.add_argument("--model", type=choice_of(MODELS), choices=sorted(MODELS),
                        default="kmeans",
                        help="the clustering model, see above (default: kmeans)")
    parser.add_argument("--output", required=True, metavar="PATH",
                        help="where to write: the codebook when compressing (written at "
                             "exactly this path), the image when decompressing (its "
                             "extension picks the format)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="random seed, 0 or more (default: 0); the same seed gives the "
                             "same codebook")
    parser.add_argument("--init", type=choice_of(kmeans.INITS), choices=sorted(kmeans.INITS),
                        default="k-means++",
                        help="how k-means (and the mixture's k-means start) picks its first "
                             "centres: k-means++ (default) or random data points (the plain "
                             "algorithm)")
    chatter = parser.add_mutually_exclusive_group()
    chatter.add_argument("-v", "--verbose", action="store_true",
                         help="print one line per progress update on stderr, even when it "
                              "is not a terminal")
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
    """argparse's parser, whose errors reach main() as UsageError instead of exiting.

    An error caused by an option it does not know (``-compress``, ``--ouput``)
    names that option and the closest real one instead.
    """

    def parse_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_args(self._argv, namespace)

    def error(self, message):
        argv = getattr(self, "_argv", [])
        if not argv:
            raise UsageError("no arguments; give --compress IMAGE or --decompress CODEBOOK, "
                             "and --output PATH")
        unknown = self._unknown_options(argv)
        guesses = [guess for guess in map(self._closest_option, unknown) if guess]
        if unknown and (guesses or message.startswith(("the following arguments are required",
                                                       "unrecognized arguments"))):
            message = f"unrecognized arguments: {' '.join(unknown)}"
            if guesses:
                message += f" (did you mean {' and '.join(dict.fromkeys(guesses))}?)"
        raise UsageError(message)

    def _unknown_options(self, argv):
        """The arguments before any bare ``--`` that look like options but name none."""
        unknown = []
        for arg in argv:
            if arg == "--":
                break
            name = arg.split("=", 1)[0]
            if (not arg.startswith("-") or arg == "-" or self._negative_number_matcher.match(arg)
                    or name in self._option_string_actions):
                continue
            if name.startswith("--") and any(option.startswith(name)
                                             for option in self._option_string_actions):
                continue  # an abbreviation argparse accepts (or calls ambiguous itself)
            if not name.startswith("--") and all(f"-{letter}" in self._option_string_actions
                                                 for letter in name[1:]):
                continue  # short flags together, like -vq
            unknown.append(arg)
        return unknown

    def _closest_option(self, arg):
        """The long option closest to ``arg`` (``-output`` -> ``--output``), or None."""
        bare = arg.split("=", 1)[0].lstrip("-")
        if bare.lower() in _OPTION_HINTS:
            return _OPTION_HINTS[bare.lower()]
        name = "--" + bare
        longs = [option for option in self._option_string_actions if option.startswith("--")]
        found = difflib.get_close_matches(name, longs, n=1, cutoff=0.6)
        return found[0] if found else None


def choice_of(choices):
    """An argparse ``type`` that refuses a wrong choice with the closest right one.

    Parameters
    ----------
    choices : iterable of str

    Returns
    -------
    callable
        ``str -> str``, raising ``argparse.ArgumentTypeError`` for a value not
        in ``choices`` (argparse then names the option).
    """
    choices = sorted(choices)

    def parse(text):
        if text in choices:
            return text
        guess = closest_choice(text, choices)
        hint = f"; did you mean {guess}?" if guess else ""
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r}{hint} "
                                         f"(choose from {', '.join(choices)})")
    return parse


def closest_choice(text, choices):
    """The choice a mistyped ``text`` most likely means (``KMeans`` -> ``kmeans``), or None."""
    def squeezed(word):
        return re.sub(r"[^a-z0-9+]", "", word.lower()).replace("+", "plus")
    for choice in choices:
        if squeezed(choice) == squeezed(text):
            return choice
    hinted = _CHOICE_HINTS.get(squeezed(text))
    if hinted in choices:
        return hinted
    found = difflib.get_close_matches(text.lower(), choices, n=1, cutoff=0.6)
    return found[0] if found else None


def check_args(parser, args):
    """Check what can be checked before any work starts (parser.error raises UsageError)."""
    if (args.compress is None) == (args.decompress is None):
        parser.error("give exactly one of --compress IMAGE or --decompress CODEBOOK")
    for flag in ("compress", "decompress", "output"):
        if getattr(args, flag) == "":
            parser.error(f"argument --{flag}: the path is empty")
    limit = cluster_limits()[args.model]
    if args.clusters < 1:
        parser.error(f"argument --clusters: {args.clusters} is not between 1 and {limit}")
    if args.clusters > limit:
        parser.error(f"argument --clusters: {args.clusters} is more than {_limit_reason(args)}")
    if args.seed < 0:
        parser.error(f"argument --seed: {args.seed} is negative")


def cluster_limits():
    """The largest --clusters each model takes (more is refused before any work)."""
    return {"kmeans": kmeans.MAX_CLUSTERS, "mixture": gmm.MAX_COMPONENTS}


def _limit_reason(args):
    """Why ``args.model`` takes no more clusters, and what would work."""
    limit = cluster_limits()[args.model]
    if limit >= codec.MAX_MEANS:
        why = f"{limit}, the most colours a codebook holds"
    else:
        why = f"{limit}, the most the {args.model} model fits in reasonable time"
    others = [f"--model {model} (up to {most})" for model, most in cluster_limits().items()
              if most > limit and args.clusters <= most]
    return f"{why}; use --clusters {limit} or fewer" + (f", or {others[0]}" if others else "")


# ---------------------------------------------------------------- compress

def compress(args, report):
    """Cluster the colours of ``args.compress`` and write the codebook to ``args.output``."""
    codec.check_output_path(args.output, input_path=args.compress)
    report.stage(f"reading {args.compress}")
    in_size = _file_size(args.compress)  # now: the input may be moved while fitting
    pixels = _read_image(args.compress, report)
    img_shape = pixels.shape
    notes = []
    comment = codec.profile_comment(args.compress, img_shape, notes)
    flat = pixels.reshape(img_shape[0] * img_shape[1], -1)
    del pixels
    report.stage("counting colours")
    colours, counts, inverse = codec.distinct_colours(flat)
    del flat
    means, labels, fit, n_starts = fit_colours(colours, counts, args, report)
    report.stage(f"writing {args.output}")
    assignments = codec.take(labels.astype(codec.label_dtype(len(means))), inverse)
    del inverse
    error = codec.reconstruction_error(colours, counts, means, labels)
    codec.write_codebook(args.output, assignments, means, img_shape, comment)
    report.written = args.output
    report.clear()  # stdout may be the same terminal
    print_result(f"Reconstruction error is {error}")
    out_size = _file_size(args.output)
    for line in compress_summary(args, labels, len(means), fit, n_starts,
                                 report.seconds(), in_size, out_size):
        report.summary(line)
    for note in notes:
        report.note(f"note: {note}")
    image_format = _image_extension(args.output)
    if image_format:
        report.note(f"note: {args.output} holds an npz codebook, not a "
                    f"{image_format} image, whatever its extension")
    if in_size and out_size and out_size > in_size:
        report.note(f"note: the codebook is larger than the input image "
                    f"({percent(out_size / in_size)} of its size)")


def _read_image(path, report):
    """``codec.read_image``, its notes shown, and a codebook given by mistake named as such."""
    notes = []
    try:
        pixels = codec.read_image(path, notes=notes)
    except codec.CodecError as exc:
        if codec.looks_like_codebook(path):
            raise codec.CodecError(f"{exc}; it is a zip archive, as codebooks are: "
                                   f"did you mean --decompress {path}?") from None
        raise
    for note in notes:
        report.note(f"note: {note}")
    return pixels


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
    report.stage(f"fitting {args.model}, {plural(args.clusters, 'cluster')}")
    # The values a progress line shows cost the fits work: only ask for them when shown.
    progress = report.progress_callback(args.model) if report.shows_progress else None
    if args.model == "mixture":
        fit = gmm.fit_gmm(X, args.clusters, sample_weight=counts, init=args.init, rng=rng,
                          callback=progress)
        return fit.means, gmm.predict(X, fit), fit, fit.n_runs
    fit = kmeans.kmeans(X, args.clusters, sample_weight=counts, init=args.init, rng=rng,
                        callback=progress)
    return fit.centers, fit.labels, fit, fit.n_init


def print_result(line):
    """Print the result line on stdout, or raise ResultLost saying why it cannot be."""
    if sys.stdout is None:
        raise ResultLost("stdout is closed")
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        raise ResultLost("stdout is closed (broken pipe)") from None
    except (OSError, ValueError) as exc:
        _silence_stdout()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ResultLost(f"cannot write to stdout ({reason})") from None


def _silence_stdout():
    """Point stdout at /dev/null, so that Python's flush at exit cannot fail again."""
    _silence(sys.stdout)


def _silence(stream):
    """Point ``stream``'s file descriptor at /dev/null (what it still buffers goes there)."""
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def compress_summary(args, labels, n_means, fit, n_starts, seconds, in_size=None,
                     out_size=None):
    """The lines for stderr describing a finished compression: one, or two if wider than 80.

    Parameters
    ----------
    args : argparse.Namespace
        The command line (``output``, ``clusters``, ``model``).
    labels : ndarray of shape (n_colours,)
        Cluster of each distinct colour of the image.
    n_means : int
        Rows in the codebook's ``means``.
    fit : kmeans.KMeansResult or gmm.GMMResult or None
        None when the image was stored losslessly.
    n_starts : int
        Seedings (k-means) or EM runs (mixture) the fit tried; the best is kept.
    seconds : float
        Time since the start.
    in_size, out_size : int or None
        Sizes of the input image and of the codebook, in bytes (None: unknown).

    Returns
    -------
    list of str
    """
    sizes = f"wrote {args.output}"
    if out_size is not None:
        sizes += f", {human_size(out_size)}"
        if in_size:
            sizes += f" ({percent(out_size / in_size)} of the input)"
    clusters = f"{args.model}, {_clusters_used(args, labels, n_means, fit, n_starts)}"
    line = f"hw2: {sizes}; {clusters}; {seconds:.2f} s"
    if display_width(line) <= 80:
        return [line]
    return [f"hw2: {sizes}; {seconds:.2f} s", f"hw2: {clusters}"]


def _clusters_used(args, labels, n_means, fit, n_starts):
    """How many clusters hold pixels, and how the fit ended."""
    n_colours = len(labels)
    if fit is None:
        return (f"{plural(n_colours, 'cluster')}: only {plural(n_colours, 'distinct colour')}, "
                "stored losslessly")
    n_used = int(np.count_nonzero(np.bincount(labels, minlength=n_means)))
    if n_used < args.clusters:
        # Some clusters ended up with no pixel (no pixel's most likely component).
        clusters = f"{n_used} of {plural(args.clusters, 'cluster')} used"
    else:
        clusters = plural(n_used, "cluster")
    # k-means tries several seedings; EM reruns with a component moved (a "spike").
    runs = "seedings" if args.model == "kmeans" else "runs"
    best = f"best of {n_starts} {runs}, " if n_starts > 1 else ""
    state = ", converged" if fit.converged else " (the limit)"
    return f"{clusters}; {best}{plural(fit.n_iter, 'iteration')}{state}"


# ---------------------------------------------------------------- decompress

def decompress(args, report):
    """Rebuild the image in ``args.decompress`` and write it to ``args.output``."""
    report.stage(f"reading {args.decompress}")
    try:
        fmt = codec.image_format_for(args.output)
        codec.check_output_path(args.output, input_path=args.decompress)
        assignments, means, img_shape = codec.read_codebook(args.decompress)
    except codec.CodecError as exc:
        if codec.looks_like_image(args.decompress):
            raise codec.CodecError(f"{exc}; {args.decompress} is an image: "
                                   f"did you mean --compress {args.decompress}?") from None
        raise
    report.stage("decoding")
    notes = []
    icc_profile, means = codec.output_colours(args.decompress, fmt, means, notes)
    for note in notes:
        report.note(f"note: {note}")
    pixels = codec.decode(assignments, means, img_shape)
    indexed = codec.indexed_image(assignments, means, img_shape, fmt)
    report.stage(f"writing {args.output}")
    composited = codec.write_image(args.output, pixels, indexed, icc_profile)
    report.written = args.output
    n_channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if composited and pixels[..., -1].min() < 255:
        report.note(f"note: {args.output}'s format has no transparency; "
                    "the image was composited on white")
    height, width = pixels.shape[:2]
    if fmt == "GIF":
        n_colours = len(codec.distinct_colours(pixels.reshape(height * width, -1))[1])
        if n_colours > 256:
            report.note(f"note: GIF holds at most 256 colours; Pillow reduced this image's "
                        f"{n_colours} colours to 256")
    kind = _CHANNEL_NAMES[n_channels - 1 if composited else n_channels]
    kind = "indexed" if indexed is not None else kind
    size = _file_size(args.output)
    report.summary(f"hw2: wrote {args.output}: {width}x{height} {kind} {fmt} image from "
                   f"{plural(len(means), 'colour')}"
                   + (f", {human_size(size)}" if size is not None else ""))


# What an image with n channels holds, by n (after compositing, the alpha is gone).
_CHANNEL_NAMES = {1: "grey", 2: "grey+alpha", 3: "RGB", 4: "RGBA"}


# ---------------------------------------------------------------- files and words

def _file_size(path):
    """Size of ``path`` in bytes, or None if it is gone."""
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _image_extension(path):
    """The image format ``path``'s extension names (``"PNG"``), or None."""
    try:
        return codec.image_format_for(path)
    except codec.CodecError:
        return None


def plural(n, noun):
    """``plural(1, "cluster")`` -> ``'1 cluster'``, ``plural(3, "colour")`` -> ``'3 colours'``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def percent(ratio):
    """A ratio as a percentage: "0%" and "100%" only for 0 and 1 themselves."""
    if 0 < ratio < 0.001:
        return "<0.1%"
    if 0 < ratio < 0.01 or (ratio != 1 and f"{ratio:.0%}" == "100%"):
        return f"{ratio:.1%}"
    return f"{ratio:.0%}"


def human_size(n_bytes):
    """``1234567`` -> ``'1.2 MB'``; ``1`` -> ``'1 byte'``."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n_bytes < 1000 or unit == "GB":
            if unit == "bytes":
                return plural(n_bytes, "byte")
            return f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000


def display_width(text):
    """Columns ``text`` takes on a terminal (wide East Asian characters take two)."""
    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def fit_fields(fields, columns):
    """Join ``fields`` with ", ", dropping the last ones (or cutting the first) to fit.

    Parameters
    ----------
    fields : list of str
        Most important first.
    columns : int
        The most terminal columns the line may take.

    Returns
    -------
    str
    """
    for n_kept in range(len(fields), 0, -1):
        line = ", ".join(fields[:n_kept])
        if display_width(line) <= columns:
            return line
    cut, width = [], 0
    for c in fields[0]:
        width += display_width(c)
        if width > columns:
            break
        cut.append(c)
    return "".join(cut)


def terminal_columns(stream):
    """Width of the terminal ``stream`` writes to (``shutil``'s guess if it cannot tell)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    return columns or shutil.get_terminal_size().columns


# ---------------------------------------------------------------- time, signals, streams

# Python itself starts in some 0.02-0.1 s before hw2's first line; a longer life before
# the import is not start-up: bash runs the last command of `a && b` in its own process
# (the Quick start's pip install counted, 10 s), and an interactive session imports late.
_MAX_START_UP = 0.25


def process_start():
    """The ``time.monotonic()`` value at which this process started.

    Linux says how long the process has run (``/proc/self/stat``); elsewhere
    the time hw2 was imported is the best guess.
    """
    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22, "starttime", in clock ticks since boot
        ran = time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        ran = 0.0
    return _IMPORTED - min(max(ran - (time.monotonic() - _IMPORTED), 0.0), _MAX_START_UP)



class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind like KeyboardInterrupt (temporary files go)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


class ResultLost(Exception):
    """The result line could not be printed (stdout closed or full)."""


@contextlib.contextmanager
def _signals_raise(exception):
    """Within the block, SIGTERM and SIGHUP raise ``exception(signum)``.

    A signal the process was told to ignore (``nohup``) stays ignored, and
    outside the main thread (where Python cannot set handlers) nothing changes.
    """
    def handler(signum, frame):
        raise exception(signum)
    previous = {}
    for signum in _STOP_SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _occupy_closed_std_fds():
    """Open /dev/null on a closed fd 0, 1 or 2.

    Else the next file opened (the output) would get that number, and a C
    library writing to stderr would write into it.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            with contextlib.suppress(OSError):
                spare = os.open(os.devnull, os.O_RDWR)
                if spare != fd:
                    os.dup2(spare, fd)
                    os.close(spare)


class _Discard:
    """A stream that drops what it is given (stderr when it is closed)."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def _say(stream, line):
    """Write one line on ``stream``, whatever state it is in."""
    try:
        stream.write(line + "\n")
        stream.flush()
    except (OSError, ValueError):
        _silence(stream)


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ---------------------------------------------------------------- what stderr shows

class Reporter:
    """Everything the program says on stderr: stages, progress, notes, summary, errors.

    Parameters
    ----------
    verbose : bool
        One line per stage and progress update, even when stderr is not a terminal.
    quiet : bool
        Nothing but errors.
    stream : file, optional
        Where to write (default ``sys.stderr``).
    started : float, optional
        ``time.monotonic()`` at the start (default: now); progress and summary
        count from it.

    Attributes
    ----------
    live : bool
        Whether one line is redrawn in place (stderr is a terminal, neither
        quiet nor verbose).
    written : str or None
        The output path once it is written.
    """

    # Seconds between two redraws of the live progress line.
    REDRAW_INTERVAL = 0.1
    # Seconds between two "-v" lines of a seeding in progress (its first and last always show).
    SEEDING_INTERVAL = 1.0

    def __init__(self, verbose=False, quiet=False, stream=None, started=None):
        self.stream = sys.stderr if stream is None else stream
        self.verbose, self.quiet = verbose, quiet
        self.live = not quiet and not verbose and _isatty(self.stream)
        self.started = time.monotonic() if started is None else started
        self.written = None
        self._shown = False
        self._drawn_at = None

    @property
    def shows_progress(self):
        """Whether progress updates are shown at all."""
        return self.verbose or self.live

    def seconds(self):
        """Seconds since the start."""
        return time.monotonic() - self.started

    def stage(self, text):
        """Say what the program is doing now ("reading photo.jpg"): shown at once."""
        self._show([printable(text)], force=True)
        self._drawn_at = None  # the fit's first update shows at once too

    def progress_callback(self, model):
        """A callback for the fits, showing each ``kmeans.Progress`` it is given.

        Parameters
        ----------
        model : {"kmeans", "mixture"}
        """
        seeding_said = [0.0]

        def callback(progress):
            now = time.monotonic()
            if self.verbose and progress.stage == "seeding":
                # A seeding may report every centre: the log keeps one line a second.
                if 1 < progress.iteration < progress.max_iter \
                        and now - seeding_said[0] < self.SEEDING_INTERVAL:
                    return
                seeding_said[0] = now
            self._show(progress_fields(model, progress, now - self.started))
        return callback

    def _show(self, fields, force=False):
        """One update: a line when verbose, the live line redrawn (throttled) on a terminal."""
        if self.verbose:
            self._write(", ".join(fields) + "\n")
            return
        if not self.live:
            return
        now = time.monotonic()
        if not force and self._drawn_at is not None \
                and now - self._drawn_at < self.REDRAW_INTERVAL:
            return
        self._drawn_at = now
        # One column short of the edge: some terminals wrap a line that fills it.
        line = fit_fields(fields, terminal_columns(self.stream) - 1)
        self._write("\r\033[K" + line)
        self._shown = True

    def clear(self):
        """Erase the live line, if one is showing."""
        if self._shown:
            self._shown = False
            self._write("\r\033[K")

    def note(self, message):
        """A line on stderr (``"hw2: "`` and ``message``), unless quiet."""
        if not self.quiet:
            self.clear()
            self._write(f"hw2: {printable(message)}\n")

    def summary(self, line):
        """A summary line on stderr, unless quiet."""
        if not self.quiet:
            self.clear()
            self._write(printable(line) + "\n")

    def outcome(self):
        """What a stopped run leaves: no output, or the output written before it stopped."""
        if self.written is None:
            return "no output written"
        return f"{printable(self.written)} was written"

    def fail(self, line, status):
        """Show the error ``line`` (even when quiet) and return ``status``."""
        self.clear()
        self._write(line + "\n")
        return status

    def _write(self, text):
        # A full or closed stderr must not turn into an error of its own, now or when
        # Python flushes what is still buffered at exit (that would be status 120).
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            _silence(self.stream)


def progress_fields(model, progress, seconds):
    """The fields of one progress line, most important first.

    Parameters
    ----------
    model : {"kmeans", "mixture"}
    progress : kmeans.Progress
    seconds : float

    Returns
    -------
    list of str
        e.g. ``["fitting kmeans", "coarse 2/20", "iteration 12/300", "1.3 s",
        "mean sq. distance 123.4"]``.
    """
    stage = progress.stage
    if progress.n_runs > 1:
        stage += f" {progress.run}/{progress.n_runs}"
    elif progress.run > 1:  # a run whose total is not known yet (the mixture's spikes)
        stage += f" run {progress.run}"
    if progress.stage == "seeding":
        step = f"{progress.iteration}/{progress.max_iter} centres"
    else:
        step = f"iteration {progress.iteration}"
        if progress.max_iter > 0:
            step += f"/{progress.max_iter}"
    fields = [f"fitting {model}", stage, step, f"{seconds:.1f} s"]
    if np.isfinite(progress.value):
        # Both per pixel (the docs say so): short names keep the line within 80 columns.
        measure = "mean sq. distance" if model == "kmeans" else "log-likelihood"
        fields.append(f"{measure} {progress.value:.5g}")
    return fields


if __name__ == "__main__":
    sys.exit(main())
