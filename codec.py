"""Image and codebook input/output, and the reconstruction error.

A codebook is an ``.npz`` file with exactly three arrays:

``assignments``
    the cluster of each pixel, shape ``(H * W,)``, the narrowest unsigned
    integer type that holds ``k - 1``;
``means``
    the cluster means, float64 of shape ``(k, C)``;
``img_shape``
    ``(H, W, C)``, or ``(H, W)`` for a grey image;

so that ``means[assignments].reshape(img_shape)`` rebuilds the image.

Every expected failure (a missing file, a file that is not an image, a
codebook that does not decode) is raised as :class:`CodecError` with a
message that names the file and says what is wrong.
"""
import os
import tempfile
import zipfile

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

CODEBOOK_KEYS = ("assignments", "means", "img_shape")
JPEG_QUALITY = 95


class CodecError(Exception):
    """An input or output file that cannot be read or written as asked."""


# ---------------------------------------------------------------- images

def read_image(path):
    """Read an image as the array of pixels to quantize.

    The image is turned upright per its EXIF orientation.  Grey stays one
    channel, alpha is kept as the last channel, 16-bit grey is scaled to
    8 bits, bilevel and 32-bit grey become grey, and everything else
    (palette, CMYK, YCbCr, ...) becomes RGB.

    Parameters
    ----------
    path : str

    Returns
    -------
    ndarray of shape (H, W) or (H, W, C), uint8
        C is 2 (grey and alpha), 3 (RGB) or 4 (RGBA).
    """
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return _as_pixels(image)
    except FileNotFoundError:
        raise CodecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CodecError(f"{path}: is a directory, not an image") from None
    except PermissionError:
        raise CodecError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise CodecError(f"{path}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise CodecError(f"{path}: refused as a possible decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CodecError(f"{path}: cannot decode the image ({exc})") from None


def _as_pixels(image):
    """The pixel array of an open Pillow image, as :func:`read_image` defines it."""
    mode = image.mode
    if mode.startswith("I;16"):
        wide = np.asarray(image).astype(np.float64)
        return np.rint(wide / 257.0).astype(np.uint8)
    if mode in ("L", "LA", "RGB", "RGBA"):
        target = mode
    elif mode == "PA" or (mode == "P" and "transparency" in image.info):
        target = "RGBA"
    elif mode in ("1", "I", "F"):
        target = "L"
    else:
        target = "RGB"
    return np.asarray(image if mode == target else image.convert(target))


def write_image(path, pixels):
    """Write pixels to ``path`` in the format its extension names.

    The file appears whole or not at all: it is written beside ``path`` and
    then moved into place.  An image with alpha that the format cannot hold
    is composited on white.

    Parameters
    ----------
    path : str
    pixels : ndarray of shape (H, W) or (H, W, C), uint8

    Returns
    -------
    bool
        True when the alpha channel was composited away.
    """
    fmt = image_format_for(path)
    image = Image.fromarray(pixels)
    options = {"quality": JPEG_QUALITY} if fmt == "JPEG" else {}
    flattened = False
    if image.mode in ("LA", "RGBA") and not _can_write(fmt, image.mode):
        image, flattened = _on_white(image), True
    _atomic_write(path, lambda handle: _save(image, handle, path, fmt, options))
    return flattened


def _save(image, handle, path, fmt, options):
    try:
        image.save(handle, format=fmt, **options)
    except (ValueError, KeyError) as exc:  # Pillow's word for a mode the format lacks
        raise CodecError(f"{path}: cannot write a {image.mode} image as {fmt} ({exc})") from None


def image_format_for(path):
    """The Pillow format that ``path``'s extension names, if Pillow can write it.

    Parameters
    ----------
    path : str

    Returns
    -------
    str
        The format name, e.g. ``"PNG"``.
    """
    Image.init()
    ext = os.path.splitext(path)[1].lower()
    if not ext:
        raise CodecError(f"{path}: no file extension to choose an image format "
                         "(use .png, .jpg, ...)")
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise CodecError(f"{path}: Pillow cannot write images with extension {ext!r} "
                         "(use .png, .jpg, ...)")
    return fmt


# Formats known to hold an alpha channel in the given mode.
_ALPHA_FORMATS = {
    "RGBA": {"PNG", "WEBP", "TIFF", "TGA", "BMP", "GIF", "ICO", "JPEG2000", "SGI", "DDS",
             "QOI", "AVIF", "ICNS", "BLP"},
    "LA": {"PNG", "WEBP", "TIFF", "TGA"},
}


def _can_write(fmt, mode):
    return fmt in _ALPHA_FORMATS.get(mode, ())


def _on_white(image):
    """Composite an ``LA`` or ``RGBA`` image on a white background."""
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat = Image.alpha_composite(white, rgba).convert("RGB")
    return flat.convert("L") if image.mode == "LA" else flat


# ---------------------------------------------------------------- colours

def distinct_colours(pixels):
    """The distinct rows of a pixel array, how often each occurs, and where.

    Each pixel is packed into one integer key: channel by channel, each value
    is replaced by its rank among that channel's distinct values, so the key
    space is the product of those counts.  When that space is small enough
    the keys are counted with ``np.bincount`` and a lookup table maps each
    pixel back to its colour (linear time); otherwise the keys are sorted.

    Parameters
    ----------
    pixels : ndarray of shape (n_pixels, n_channels), uint8

    Returns
    -------
    colours : ndarray of shape (n_colours, n_channels), uint8
        The distinct colours, in increasing key order.
    counts : ndarray of shape (n_colours,), int64
        How many pixels have each colour.
    inverse : ndarray of shape (n_pixels,)
        Index into ``colours`` of each pixel: ``colours[inverse] == pixels``.
    """
    n_pixels, n_channels = pixels.shape
    keys = np.zeros(n_pixels, dtype=np.int64 if n_channels > 3 else np.int32)
    levels = []
    space = 1
    for c in range(n_channels):
        present = np.flatnonzero(np.bincount(pixels[:, c], minlength=256))
        rank = np.zeros(256, dtype=keys.dtype)
        rank[present] = np.arange(len(present))
        keys *= len(present)
        keys += rank[pixels[:, c]]
        levels.append(present.astype(np.uint8))
        space *= len(present)
    if space <= _BINCOUNT_LIMIT:
        counts = np.bincount(keys, minlength=space)
        used = np.flatnonzero(counts)
        counts = counts[used]
        lookup = np.zeros(space, dtype=np.int32)
        lookup[used] = np.arange(len(used), dtype=np.int32)
        inverse = lookup[keys]
    else:
        used, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return _unpack(used, levels), counts, inverse.reshape(-1)


# Largest key space counted directly: a 2**25 int64 histogram is 256 MiB at worst,
# but a photo's channels rarely use every level, so the space is usually smaller.
_BINCOUNT_LIMIT = 1 << 24


def _unpack(keys, levels):
    """Colours (uint8, shape (len(keys), len(levels))) of mixed-radix keys."""
    colours = np.empty((len(keys), len(levels)), dtype=np.uint8)
    rest = np.asarray(keys, dtype=np.int64)
    for c in range(len(levels) - 1, -1, -1):
        rest, rank = np.divmod(rest, len(levels[c]))
        colours[:, c] = levels[c][rank]
    return colours


def label_dtype(n_clusters):
    """The narrowest unsigned integer type that holds ``n_clusters - 1``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_clusters - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def reconstruction_error(colours, counts, means, labels):
    """Mean Euclidean distance between each pixel and the mean it is assigned to.

    Computed on distinct colours weighted by their pixel counts, which gives
    exactly the mean over all pixels.

    Parameters
    ----------
    colours : ndarray of shape (n_colours, n_channels)
    counts : ndarray of shape (n_colours,)
    means : ndarray of shape (n_clusters, n_channels)
    labels : ndarray of shape (n_colours,)
        Cluster of each colour.

    Returns
    -------
    float
    """
    diff = colours.astype(np.float64) - means[labels]
    distance = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return float(counts @ distance / counts.sum())


# ---------------------------------------------------------------- codebooks

def write_codebook(path, assignments, means, img_shape):
    """Save a codebook with ``np.savez_compressed`` at exactly ``path``.

    An open file is passed to NumPy so that no ``.npz`` is appended, and the
    file is written beside ``path`` and then moved into place, so a failed
    run leaves any existing file untouched.

    Parameters
    ----------
    path : str
    assignments : ndarray of shape (n_pixels,), unsigned integer
    means : ndarray of shape (n_clusters, n_channels), float64
    img_shape : tuple of int
    """
    arrays = {"assignments": assignments, "means": np.asarray(means, dtype=np.float64),
              "img_shape": np.asarray(img_shape, dtype=np.int64)}
    _atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))


def read_codebook(path):
    """Load a codebook and check that it decodes.

    Parameters
    ----------
    path : str

    Returns
    -------
    assignments : ndarray of integers
    means : ndarray of shape (n_clusters,) or (n_clusters, n_channels)
    img_shape : tuple of int
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in CODEBOOK_KEYS if key not in archive.files]
            if missing:
                raise CodecError(f"{path}: codebook has no {', '.join(missing)} "
                                 f"(found: {', '.join(archive.files) or 'nothing'})")
            arrays = [archive[key] for key in CODEBOOK_KEYS]
    except FileNotFoundError:
        raise CodecError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CodecError(f"{path}: is a directory, not a codebook") from None
    except PermissionError:
        raise CodecError(f"{path}: permission denied") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CodecError(f"{path}: not a readable .npz codebook ({exc})") from None
    return _checked_codebook(path, *arrays)


def _checked_codebook(path, assignments, means, img_shape):
    if assignments.dtype.kind not in "ui":
        raise CodecError(f"{path}: assignments have type {assignments.dtype}, not integers")
    if means.dtype.kind not in "uif" or means.ndim not in (1, 2) or len(means) == 0:
        raise CodecError(f"{path}: means should be a non-empty numeric (k, C) array, "
                         f"got {means.dtype} of shape {means.shape}")
    if not np.isfinite(means).all():
        raise CodecError(f"{path}: means contain NaN or infinity")
    if img_shape.dtype.kind not in "ui" or img_shape.ndim != 1:
        raise CodecError(f"{path}: img_shape should be a list of integers, got {img_shape!r}")
    shape = tuple(int(s) for s in img_shape)
    if assignments.size and (assignments.min() < 0 or assignments.max() >= len(means)):
        raise CodecError(f"{path}: assignments range over {assignments.min()}.."
                         f"{assignments.max()} but there are {len(means)} means")
    channels = int(np.prod(means.shape[1:]))
    if assignments.size * channels != int(np.prod(shape)) or len(shape) not in (2, 3):
        raise CodecError(f"{path}: img_shape {shape} does not match {assignments.size} "
                         f"assignments of {means.shape[1:] or '1'} channel(s)")
    return assignments, means, shape


def decode(assignments, means, img_shape):
    """Rebuild the image: ``clip(rint(means[assignments]))`` as uint8.

    Parameters
    ----------
    assignments : ndarray of integers
    means : ndarray of shape (n_clusters,) or (n_clusters, n_channels)
    img_shape : tuple of int

    Returns
    -------
    ndarray of shape img_shape (or (H, W) when there is one channel), uint8
    """
    palette = np.clip(np.rint(np.asarray(means, dtype=np.float64)), 0, 255).astype(np.uint8)
    pixels = palette[assignments].reshape(img_shape)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    return pixels


# ---------------------------------------------------------------- files

def check_output_path(path, *, input_path=None):
    """Raise CodecError if ``path`` cannot receive an output file.

    Checked before any work starts: the folder must exist and be writable,
    the path must not be a folder, and it must not be the input file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CodecError(f"{path}: is a directory; give a file name for --output")
    if not os.path.isdir(folder):
        raise CodecError(f"{path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CodecError(f"{path}: cannot write in the folder {folder} (permission denied)")
    if input_path is not None and os.path.exists(path) and os.path.exists(input_path) \
            and os.path.samefile(path, input_path):
        raise CodecError(f"{path}: --output is the input file; refusing to overwrite it")


def _atomic_write(path, write):
    """Call ``write(handle)`` on a temporary file beside ``path``, then move it there."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=".hw2-", suffix=".part")
    except OSError as exc:
        raise CodecError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException as exc:
        os.unlink(temp)
        if isinstance(exc, OSError):
            raise CodecError(f"{path}: cannot write ({exc})") from None
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
