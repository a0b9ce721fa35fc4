#!/usr/bin/env python3
"""Compress an image by clustering its pixel colours, and decompress it again.

  python3 hw2.py --compress photo.jpg --model kmeans --clusters 20 --output c.npz
  python3 hw2.py --decompress c.npz --output photo.png

Compressing keeps --clusters colours (the cluster means) and, for each pixel, which
one: a codebook that ``means[assignments].reshape(img_shape)`` decodes.  It prints
``Reconstruction error is <float>``, the mean Euclidean distance between each pixel
and its cluster's mean.  This module parses the command line, calls codec (files),
kmeans and gmm (the fits), and owns the process (signals, streams, warnings) in main().
"""
# Only modules Python loads before hw2 starts are imported here: main() sets its signal
# handlers and the BLAS thread count (which NumPy reads as it loads) before importing the rest.
import os
import sys
import time

# The flags and argparse's options for each: the assignment's, then --seed, -v and -q.
FLAGS = {
    "--compress": dict(action="append", metavar="IMAGE", help="the image to compress"),
    "--decompress": dict(action="append", metavar="CODEBOOK", help="the .npz to decompress"),
    "--clusters": dict(type=int, default=20, metavar="K", help="colours to keep (default: 20)"),
    "--model": dict(choices=("kmeans", "mixture"), default="kmeans", help="default: kmeans"),
    "--output": dict(action="append", metavar="PATH", help="the codebook, or the image to write"),
    "--seed": dict(type=int, default=0, metavar="N", help="random seed (default: 0)"),
    "--indexed": dict(action="store_true", help="decompress .png as a palette image too"),
    "--dither": dict(action="store_true", help="compress: each pixel's mean by error diffusion"),
    "-v --verbose": dict(action="store_true", help="a line per progress step on stderr"),
    "-q --quiet": dict(action="store_true", help="nothing on stderr but errors"),
}
# What people type for a flag: a hint after "did you mean", never accepted.
_ALIASES = {"--colors": "--clusters", "--colours": "--clusters"}
_PASTED_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"  # a PDF's dashes, minus sign


class UsageError(Exception):
    """A bad command line; the message says which argument and why."""


class Terminated(BaseException):
    """A stop signal (its number) arrived: unwinds as Ctrl-C does, so temporary files go."""


def main(argv=None):
    """Run the command line (``argv`` without the program name); return the exit status.

    0 on success, 1 for a file that cannot be read or written (stdout included), 2 for
    a bad command line, 130 for Ctrl-C and 128 + n for signal n (SIGTERM, SIGHUP,
    SIGXCPU).  ``--help`` raises SystemExit(0).
    """
    report = Reporter()
    try:  # from here on Ctrl-C (KeyboardInterrupt) gives its one line, even while NumPy loads
        import signal
        # The stop signals unwind as Ctrl-C does (SIGXCPU: a soft CPU-time limit ran out).
        for signum in (getattr(signal, name, None) for name in ("SIGTERM", "SIGHUP", "SIGXCPU")):
            if signum and signal.getsignal(signum) is not signal.SIG_IGN:  # (nohup) stays ignored
                signal.signal(signum, _stop)
        while (fd := os.open(os.devnull, os.O_RDWR)) <= 2:
            pass  # /dev/null fills a closed fd 0, 1 or 2, else the output file would
        os.close(fd)
        # One BLAS thread: our products are thin (colours x channels x k) and a second
        # thread mostly spins (bench/NOTES.md, "BLAS threads"); a caller's setting wins.
        for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
        if (here := os.path.dirname(os.path.realpath(__file__))) not in sys.path:
            sys.path.insert(0, here)  # python3 -I leaves out the folder of hw2's modules
        import logging
        import warnings
        warnings.simplefilter("ignore")  # no Python warning reaches the user,
        logging.disable(logging.CRITICAL)  # nor a library's log line (Pillow logs odd TIFFs)
        import codec
        import shutil
        args = parse_args(sys.argv[1:] if argv is None else argv)
        report.quiet, report.verbose = args.quiet, args.verbose and not args.quiet
        if not (args.quiet or args.verbose) and getattr(sys.stderr, "isatty", bool)():
            report.columns = shutil.get_terminal_size().columns  # stdout's, or $COLUMNS, or 80
        (compress if args.compress else decompress)(args, report)
        return 0
    except UsageError as exc:
        return report.say(f"hw2: error: {exc}; try 'python3 hw2.py --help'", 2)
    except KeyboardInterrupt:
        return report.say(f"hw2: interrupted; {report.outcome()}", 130)
    except Terminated as stop:
        name = signal.Signals(stop.args[0]).name
        return report.say(f"hw2: terminated ({name}); {report.outcome()}", 128 + stop.args[0])
    except ImportError as exc:  # NumPy's loader fails this way too when memory is short
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            return report.say(f"hw2: error: the Python package {exc.name!r} is missing; install "
                              "them with: python3 -m pip install -r requirements.txt", 1)
        why = str(exc.__cause__ or exc).strip().splitlines()[0]
        return report.say(f"hw2: error: NumPy or Pillow failed to load ({why}); if memory is "
                          "limited (ulimit -v), allow more, else reinstall them", 1)
    # OSError and MemoryError come before codec.CodecError: they may arrive before codec loads.
    except OSError as exc:  # stdout, or what codec did not word (say, a deleted folder)
        return report.say(f"hw2: error: {exc.filename or os.curdir}: {exc.strerror}", 1)
    except MemoryError:
        return report.say("hw2: error: out of memory; try a smaller image or fewer --clusters", 1)
    except codec.CodecError as exc:
        return report.say(f"hw2: error: {exc}", 1)


# ---------------------------------------------------------------- the command line

def parse_args(argv):
    """The checked command line (a Namespace); raises UsageError saying what is wrong."""
    import argparse
    import difflib
    import gmm
    import kmeans

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise UsageError(message)
    parser = Parser(prog="hw2.py", description="Compress an image by clustering its colours.")
    parser.suggest_on_error = True  # argparse's own hint for --model (Python 3.14 and later)
    for names, options in FLAGS.items():
        parser.add_argument(*names.split(), **options)
    args, unknown = parser.parse_known_args(normalize_dashes(argv))
    if unknown:  # with the flags most likely meant
        names = " ".join(FLAGS).split()
        typed = ["--" + arg.split("=")[0].lstrip("-") for arg in unknown if arg[:1] == "-"]
        meant = [_ALIASES.get(w) or "".join(difflib.get_close_matches(w, names, 1)) for w in typed]
        hint = " and ".join(word for word in dict.fromkeys(meant) if word)
        parser.error(f"unrecognized arguments: {' '.join(unknown)}"
                     + (f" (did you mean {hint}?)" if hint else ""))
    if (args.compress is None) == (args.decompress is None) or args.output is None:
        parser.error("give --compress IMAGE or --decompress CODEBOOK, and --output PATH")
    for flag in ("compress", "decompress", "output"):
        paths = getattr(args, flag) or [None]
        if len(paths) > 1 or paths[0] == "" or paths[0] == "-" and flag != "output":
            parser.error(f"argument --{flag}: " + ("given more than once" if len(paths) > 1 else
                         f"{paths[0]!r} is not a file name (hw2 reads files, not standard input)"))
        setattr(args, flag, paths[0])
    limit = {"kmeans": kmeans.MAX_CLUSTERS, "mixture": gmm.MAX_COMPONENTS}[args.model]
    if not 1 <= args.clusters <= limit:
        parser.error(f"argument --clusters: {args.clusters} is not between 1 and {limit}")
    if args.seed < 0:
        parser.error(f"argument --seed: {args.seed} is negative")
    return args


def normalize_dashes(argv):
    """Read options pasted with an en or em dash (``–compress``) as ``--compress``.

    Only leading dashes that include a typographic one and are followed by a flag
    name (and maybe ``=value``) change: not numbers, not file names, nothing after
    a bare ``--``.
    """
    import re
    end = argv.index("--") if "--" in argv else len(argv)
    pasted = re.compile(rf"[-{_PASTED_DASHES}]*[{_PASTED_DASHES}][-{_PASTED_DASHES}]*"
                        r"(?=[A-Za-z][A-Za-z-]*(=|\Z))")
    return [pasted.sub("--", arg, count=1) if pasted.match(arg) else arg
            for arg in argv[:end]] + argv[end:]


# ---------------------------------------------------------------- compress and decompress

def compress(args, report):
    """Cluster the colours of ``args.compress`` and write the codebook to ``args.output``."""
    import contextlib
    import numpy as np
    import codec
    codec.check_output_path(args.output, input_path=args.compress)
    notes = []
    with contextlib.suppress(codec.CodecError):  # an image's extension on the codebook
        notes.append(f"{args.output} holds an npz codebook, not a "
                     f"{codec.image_format_for(args.output)} image, whatever its extension; "
                     "--decompress it to see the image")
    # Pillow's decoded image is the only full-size copy until the assignments replace it.
    reader = codec.ImageReader(args.compress, notes, codec.label_dtype(args.clusters).itemsize,
                               report.steps(f"reading {args.compress}"))
    # Its size now: the input may be moved while fitting.
    in_size = os.path.getsize(args.compress)
    if args.dither and (args.clusters > 256 or len(reader.mode) in (2, 4)):
        raise codec.CodecError(f"{args.compress}: --dither works without alpha, to 256 clusters")
    comment = codec.profile_comment(args.compress, reader.icc_profile, reader.shape, notes)
    for note in notes:
        report.say(f"hw2: note: {note}")
    colours, counts = codec.count_colours(reader, report.steps("counting colours"))
    means, labels, fit = fit_colours(colours, counts, args, report)
    if dithered := bool(args.dither and fit):  # colours kept exactly have no error to diffuse
        assignments, error = codec.dither(reader, means, report.steps(f"dithering {args.output}"))
        labels = np.unique(assignments)  # the clusters in use
    else:
        assignments = codec.assign_labels(reader, colours, labels.astype(
            codec.label_dtype(len(means))), report.steps(f"writing {args.output}"))
        error = codec.reconstruction_error(colours, counts, means, labels)
    codec.write_codebook(args.output, assignments, means, reader.shape, comment)
    report.written = args.output
    report.result(f"Reconstruction error is {error}")
    size = os.path.getsize(args.output)
    how = plural(fit.n_iter, "iteration") + ", converged" * fit.converged if fit else "lossless"
    used = plural(np.count_nonzero(np.bincount(labels)), "cluster")
    report.say(f"hw2: wrote {args.output}, {size:,} bytes ({size / in_size:.0%} of the input); "
               f"{args.model}, {used} used, {how}{', dithered' * dithered}; "
               f"{time.monotonic() - report.started:.2f} s")


def fit_colours(colours, counts, args, report):
    """Fit the chosen model on the distinct colours, weighted by their pixel counts.

    Returns
    -------
    means : ndarray of shape (n_clusters, n_channels), float64
    labels : ndarray of shape (n_colours,), the cluster of each distinct colour
    fit : kmeans.KMeansResult or gmm.GMMResult, or None when the colours are kept exactly
    """
    import numpy as np
    import gmm
    import kmeans
    X = colours.astype(np.float64)
    if len(X) <= args.clusters:
        return X, np.arange(len(X)), None
    report.progress(f"fitting {args.model}, {args.clusters} clusters")
    fit = (gmm.fit_gmm if args.model == "mixture" else kmeans.kmeans)(
        X, args.clusters, sample_weight=counts, rng=np.random.default_rng(args.seed),
        callback=report.callback(args.model))
    if args.model == "mixture":
        return fit.means, gmm.predict(X, fit), fit
    return fit.centers, fit.labels, fit


def decompress(args, report):
    """Rebuild the image in ``args.decompress`` and write it to ``args.output``."""
    import codec
    report.progress(f"reading {args.decompress}")
    fmt = codec.image_format_for(args.output)
    codec.check_output_path(args.output, input_path=args.decompress)
    assignments, means, img_shape = codec.read_codebook(args.decompress)
    notes = []
    icc_profile, means = codec.output_colours(args.decompress, fmt, means, notes)
    palette_formats = codec.PALETTE_FORMATS + ("PNG",) * args.indexed
    image = codec.indexed_image(assignments, means, img_shape, fmt, palette_formats) or \
        codec.decoded_image(assignments, means, img_shape, report.steps("decoding"))
    del assignments  # before encoding, which holds the image and the encoded file
    report.progress(f"writing {args.output}")
    if codec.write_image(args.output, image, icc_profile) and \
            image.getextrema()[-1][0] < 255:  # the alpha channel's least value
        notes.append(f"{args.output}'s format has no transparency; composited on white")
    report.written = args.output
    for note in notes:
        report.say(f"hw2: note: {note}")
    report.say(f"hw2: wrote {args.output}: {image.width}x{image.height} "
               f"{'indexed ' * (image.mode == 'P')}{fmt} image from "
               f"{plural(len(means), 'colour')}, {os.path.getsize(args.output):,} bytes")


def plural(n, noun):
    """``plural(1, "cluster")`` -> ``'1 cluster'``, ``plural(3, "colour")`` -> ``'3 colours'``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def printable(text):
    """``text`` on one line: control characters escaped, an undecodable byte as ``\\xNN``.

    Python holds a file name's byte that the locale cannot decode as a surrogate
    (U+DC80..U+DCFF); it is shown as the byte it stands for.
    """
    return "".join(c if c.isprintable() else f"\\x{ord(c) - 0xDC00:02x}"
                   if 0xDC80 <= ord(c) <= 0xDCFF else repr(c)[1:-1] for c in str(text))


# ---------------------------------------------------------------- what the user sees

class Reporter:
    """Everything hw2 says: progress, notes, the summary and errors on stderr, the result.

    Progress is one line redrawn in place on a terminal ``columns`` wide (erased
    before anything else is written), a line per step when ``verbose``, else
    nothing; ``quiet`` keeps only errors.  Times count from ``started``.
    """

    def __init__(self):
        self.started, self.quiet, self.verbose, self.columns = time.monotonic(), False, False, 0
        self.written = None  # the output path, once written
        self.drawn_at = None  # when the live line was drawn; None while none shows

    def progress(self, text, throttle=False):
        """Say what runs now (``throttle``: not within 0.1 s of the last redraw).

        The live line stops a column short of the terminal's width: a full row wraps on some.
        """
        if self.verbose:
            _emit(sys.stderr, printable(text) + "\n")
        elif self.columns and not (throttle and time.monotonic() - (self.drawn_at or 0) < 0.1):
            _emit(sys.stderr, "\r\033[K" + printable(text)[:self.columns - 1])
            self.drawn_at = time.monotonic()

    def steps(self, text):
        """Say a step starts; return a callback for its passes: ``text, 40%`` (live line only)."""
        self.progress(text)
        return lambda done: self.verbose or self.progress(f"{text}, {done:.0%}", throttle=True)

    def callback(self, model):
        """A progress callback for the fits; None when nothing shows (it costs them time)."""
        def show(p):
            self.progress(f"fitting {model}: {p.stage}, run {p.run}, step {p.iteration}/"
                          f"{p.max_iter}, {time.monotonic() - self.started:.1f} s", throttle=True)
        return show if self.verbose or self.columns else None

    def clear(self):
        """Erase the live line, if one shows."""
        if self.drawn_at:
            self.drawn_at = None
            _emit(sys.stderr, "\r\033[K")

    def say(self, line, status=None):
        """Write ``line`` once the live line is erased; return ``status``.

        A line with no status (a note, the summary) is left out when quiet.
        """
        if status is not None or not self.quiet:
            self.clear()
            _emit(sys.stderr, printable(line) + "\n")
        return status

    def outcome(self):
        """What a stopped run leaves behind."""
        return f"{self.written} was written" if self.written else "no output written"

    def result(self, line):
        """Print the result line on stdout (after erasing the live line, on the same terminal)."""
        self.clear()
        lost = _emit(sys.stdout, line + "\n")
        if lost:
            raise OSError(None, f"{getattr(lost, 'strerror', None) or 'closed'}; the result line "
                          f"is lost, but {self.written} was written", "stdout")


# ---------------------------------------------------------------- the process

def _emit(stream, text):
    """Write and flush ``text``; return the error if ``stream`` is closed or full.

    Its file descriptor then points at /dev/null, so Python's flush at exit succeeds.
    """
    try:
        stream.write(text)
        stream.flush()
    except (AttributeError, OSError, ValueError) as exc:  # AttributeError: it is None
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass
        return exc


def _stop(signum, frame):
    """The handler of the stop signals: unwind as Ctrl-C does."""
    raise Terminated(signum)


if __name__ == "__main__":
    sys.exit(main())
