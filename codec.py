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
message that names the file and says what is wrong.  Running out of memory
is raised as MemoryError, whatever the library that ran out called it.
"""
import errno
import inspect
import io
import math
import os
import re
import secrets
import stat
import struct
import warnings
import zipfile
import zlib
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

try:
    from lzma import LZMAError
except ImportError:  # Python built without lzma: zipfile then reads no lzma member
    LZMAError = zlib.error

CODEBOOK_KEYS = ("assignments", "means", "img_shape")
JPEG_QUALITY = 95
# Codebooks may hold unused means: up to this many, or one per pixel.
MAX_MEANS = 1 << 16


class CodecError(Exception):
    """An input or output file that cannot be read or written as asked."""


# ---------------------------------------------------------------- reading images

# Formats that are plain raster data, decoded by Pillow's own code or its C libraries.
# Never EPS (Pillow runs Ghostscript on it), nor anything else that starts a program.
READ_FORMATS = ("PNG", "JPEG", "GIF", "TIFF", "WEBP", "BMP", "DIB", "ICO", "PPM",
                "PCX", "TGA", "SGI", "QOI", "DDS", "JPEG2000", "PSD", "ICNS", "AVIF")
_ORIENTATION = 0x0112  # the EXIF tag
# One compressed PNG chunk (an ICC profile, zTXt text) may inflate this far while reading;
# Pillow's own limit, 1 MB, refuses the 2 MB profiles some cameras write.
_PNG_CHUNK_LIMIT = 64 << 20
_DAMAGED = "cannot decode the image, the file is damaged or truncated"


def read_image(path, notes=None):
    """Read an image as the array of pixels to quantize.

    Only the raster formats of ``READ_FORMATS`` are read (HEIC/HEIF too, when
    the ``pillow_heif`` package is installed).  The image is turned upright
    per its EXIF orientation.  Grey stays one channel, alpha is kept as the
    last channel, 16-bit grey is scaled to 8 bits (divided by 257 and
    rounded), 16-bit colour keeps the high byte of each sample as Pillow
    reads it (the pixels a grader's ``np.asarray(Image.open(path).convert(...))``
    sees), bilevel and 32-bit grey become grey (clipped to 0..255), and
    everything else (palette, CMYK, YCbCr, ...) becomes RGB.  Images of more
    than :func:`max_pixels` pixels are refused, and so are files that
    Pillow's decoders find damaged or truncated.  The file is read as far as
    the image goes: memory follows the image, not the file's size.

    Parameters
    ----------
    path : str
    notes : list of str, optional
        Where to append one line for each thing a user would not expect
        (the image was turned upright, values outside 0..255 were clipped).

    Returns
    -------
    ndarray of shape (H, W) or (H, W, C), uint8
        C is 2 (grey and alpha), 3 (RGB) or 4 (RGBA).
    """
    notes = [] if notes is None else notes
    _check_input_path(path, "an image")
    saved = PngImagePlugin.MAX_TEXT_CHUNK
    try:
        # Pillow warns about metadata it then ignores, and about sizes near its limit,
        # which is checked here instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            PngImagePlugin.MAX_TEXT_CHUNK = max(saved, _PNG_CHUNK_LIMIT)
            with _open_image(path) as image:
                return _upright_pixels(path, image, notes)
    except UnidentifiedImageError:
        raise CodecError(f"{path}: {_unreadable(path)}") from None
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise CodecError(f"{path}: {_too_many_pixels(int(found.group(1)) if found else None)}") \
            from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError,
            struct.error) as exc:
        _raise_if_path_problem(path, exc, "an image")
        # Pillow's decoders report damaged data with any of these.
        raise CodecError(f"{path}: {_DAMAGED} ({exc})") from None
    finally:
        PngImagePlugin.MAX_TEXT_CHUNK = saved


def _open_image(path):
    """``Image.open`` restricted to the raster formats; HEIF through pillow_heif."""
    if _is_heif(path):
        heif = _pillow_heif()
        if heif is None:
            raise CodecError(f"{path}: {_HEIF_HELP}")
        return heif.open_heif(path, convert_hdr_to_8bit=True).to_pillow()
    return Image.open(path, formats=_read_formats())


def _read_formats():
    """The formats of READ_FORMATS this Pillow has (JPEG's reader also reads MPO)."""
    Image.init()  # loads every plugin, so OPEN lists each reader this Pillow has
    return [name for name in READ_FORMATS if name in Image.OPEN]


def _upright_pixels(path, image, notes):
    """The pixels of an open image, upright per its EXIF orientation, with notes."""
    width, height = image.size
    if width * height > max_pixels():
        raise CodecError(f"{path}: {_too_many_pixels(width * height)}")
    image.load()
    # Pillow before 10.3 opens a 16-bit grey PNG as 32-bit "I" (PNG has no 32-bit grey).
    sixteen_bit = image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG")
    orientation = image.getexif().get(_ORIENTATION)
    if orientation in range(2, 9):
        image = ImageOps.exif_transpose(image)
        notes.append(f"{path} was turned upright per its EXIF orientation {orientation}: "
                     f"stored as {width}x{height}, read as {image.width}x{image.height}")
    return _as_pixels(image, sixteen_bit, notes, path)


def _as_pixels(image, sixteen_bit, notes, path):
    """The pixel array of a loaded Pillow image, as :func:`read_image` defines it."""
    mode = image.mode
    if sixteen_bit:
        return np.rint(np.asarray(image) / 257.0).astype(np.uint8)
    if mode in ("I", "F"):
        values = np.asarray(image)
        outside = int(np.count_nonzero(~((values >= 0) & (values <= 255))))  # NaN too
        if outside:
            kind = "32-bit integer" if mode == "I" else "floating-point"
            notes.append(f"{path}: {outside:,} of {values.size:,} pixels of this {kind} "
                         "image lie outside 0..255 and were clipped to it")
    if mode in ("L", "LA", "RGB", "RGBA"):
        target = mode
    elif mode == "PA" or (mode == "P" and "transparency" in image.info):
        target = "RGBA"
    elif mode in ("1", "I", "F"):
        target = "L"
    else:
        target = "RGB"
    return np.asarray(image if mode == target else image.convert(target))


_HEIF_HELP = ("a HEIC/HEIF photo, which Pillow reads only with the pillow-heif plugin: "
              "pip install pillow-heif, or save it as JPEG first (on an iPhone: Settings > "
              "Camera > Formats > Most Compatible)")
# The ISO base media "ftyp" brands of HEIF still images.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def _is_heif(path):
    """Whether the file at ``path`` starts as a HEIF image does (and not as AVIF)."""
    with open(path, "rb") as handle:
        start = handle.read(12)
    return start[4:8] == b"ftyp" and start[8:12] in _HEIF_BRANDS


def _pillow_heif():
    """The optional ``pillow_heif`` module, or None when it is not installed."""
    try:
        import pillow_heif
    except ImportError:
        return None
    return pillow_heif


def _unreadable(path):
    """Why Pillow's raster formats do not read ``path``: another format, or none."""
    try:
        with Image.open(path) as image:  # only to name the format: nothing is decoded
            fmt = image.format
    except Exception:  # a probe: whatever Pillow raises means "no format it knows"
        return "not an image file Pillow can read"
    return (f"a {fmt} file; hw2 reads only raster image formats (PNG, JPEG, TIFF, WebP, "
            "...), never one that needs another program to draw it: convert it to PNG first")


def max_pixels():
    """The most pixels an image may have: Pillow's decompression-bomb limit."""
    return Image.MAX_IMAGE_PIXELS or _DEFAULT_MAX_PIXELS


# Pillow's default limit, used if a caller sets Image.MAX_IMAGE_PIXELS to None.
_DEFAULT_MAX_PIXELS = 89_478_485


def _too_many_pixels(n_pixels):
    """The message for an image beyond the pixel limit."""
    size = f"{n_pixels:,} pixels is" if n_pixels else "the image is"
    return (f"{size} more than the limit of {max_pixels():,} pixels "
            "(Pillow's guard against decompression bombs)")


def looks_like_image(path):
    """Whether the regular file at ``path`` opens as an image hw2 reads (header only)."""
    try:
        if not os.path.isfile(path):
            return False  # a FIFO or device could block or never end
        with Image.open(path, formats=_read_formats()):
            return True
    except Exception:  # a probe: whatever Pillow raises means "not an image"
        return False


# ---------------------------------------------------------------- writing images

class _Output(NamedTuple):
    """What one output format keeps: the modes it stores as they are, and its limits."""

    format: str          # Pillow's name for it
    modes: str           # modes stored exactly (P: a palette, I;16: 16-bit grey)
    max_side: int = 0    # the largest width or height it holds (0: Pillow's pixel limit)
    options: tuple = ()  # keyword arguments for Image.save


_LOSSY = (("quality", JPEG_QUALITY),)
# By extension, measured by writing each mode and reading it back (docs/images.md has the
# table).  Decoded images are 8-bit L, LA, RGB or RGBA; a mode the format lacks is converted:
# LA to RGBA, alpha composited on white (GIF: kept as one transparent index when it is only
# 0 or 255), L to RGB.
_OUTPUTS = {
    ".png": _Output("PNG", "L LA RGB RGBA P I;16"),
    ".tif": _Output("TIFF", "L LA RGB RGBA P I;16"),
    ".tiff": _Output("TIFF", "L LA RGB RGBA P I;16"),
    ".webp": _Output("WEBP", "RGB RGBA", 16_383, (("lossless", True), ("exact", True))),
    ".gif": _Output("GIF", "L RGB P"),  # RGB through Pillow's quantizer: 256 colours
    ".bmp": _Output("BMP", "L RGB P"),
    ".jpg": _Output("JPEG", "L RGB", 65_500, _LOSSY),
    ".jpeg": _Output("JPEG", "L RGB", 65_500, _LOSSY),
    ".mpo": _Output("MPO", "L RGB", 65_500, _LOSSY),
    ".pdf": _Output("PDF", "L RGB", 65_500, _LOSSY),  # stored as JPEG
    ".jp2": _Output("JPEG2000", "L LA RGB RGBA"),
    ".tga": _Output("TGA", "L LA RGB RGBA"),
    ".qoi": _Output("QOI", "RGB RGBA"),
    ".sgi": _Output("SGI", "L RGB RGBA"),
    ".dds": _Output("DDS", "L LA RGB RGBA"),
    ".ico": _Output("ICO", "L LA RGB RGBA", 256),
    ".ppm": _Output("PPM", "L RGB"),
    ".pgm": _Output("PPM", "L"),
    ".pcx": _Output("PCX", "L RGB"),
}


def image_format_for(path):
    """The Pillow format that ``path``'s extension names, if hw2 writes it.

    Parameters
    ----------
    path : str

    Returns
    -------
    str
        The format name, e.g. ``"PNG"``.
    """
    return _output_for(path).format


def _output_for(path):
    """The :class:`_Output` of ``path``'s extension, or CodecError."""
    _check_output_name(path)  # a wrong name ("x.png/", a loop) has no meaningful extension
    ext = os.path.splitext(path)[1].lower()
    if not ext:
        raise CodecError(f"{path}: no file extension to choose an image format "
                         "(use .png, .jpg, ...)")
    output = _OUTPUTS.get(ext)
    Image.init()  # loads every plugin, so SAVE lists each writer this Pillow has
    if output is None or output.format not in Image.SAVE:
        raise CodecError(f"{path}: hw2 cannot write images with extension {ext!r} (it writes "
                         f"{', '.join(e for e in _OUTPUTS if e not in ('.tiff', '.jpeg'))})")
    return output


def write_image(path, pixels):
    """Write pixels to ``path`` in the format its extension names.

    The image is encoded in memory first (so no encoder ever meets a full
    disk), then written beside ``path`` and moved into place, so the file
    appears whole or not at all.  What each format keeps is in
    ``_OUTPUTS``; alpha a format cannot hold is composited on white.
    Refused before anything is written: a size the format cannot hold, and
    colour to ``.pgm``, whose name promises grey.

    Parameters
    ----------
    path : str
    pixels : ndarray of shape (H, W) or (H, W, C), uint8

    Returns
    -------
    bool
        True when the alpha channel was composited away.
    """
    output = _output_for(path)
    image = Image.fromarray(pixels)
    width, height = image.size
    if output.max_side and max(width, height) > output.max_side:
        raise CodecError(f"{path}: {output.format} holds at most {output.max_side:,} pixels "
                         f"a side, this image is {width}x{height}; use .png or .tif")
    image, options, composited = _converted(path, image, output)
    encoded = _encode(path, image, output.format, options)
    _atomic_write(path, lambda handle: handle.write(encoded))
    return composited


def _converted(path, image, output):
    """``image`` in a mode ``output`` stores, the save options, and whether it was composited."""
    modes = output.modes.split()
    options = dict(output.options, **({"sizes": [image.size]} if output.format == "ICO" else {}))
    if image.mode == "LA" and "LA" not in modes and "RGBA" in modes:
        image = image.convert("RGBA")
    composited = image.mode in ("LA", "RGBA") and image.mode not in modes
    if composited and output.format == "GIF":
        indexed = _gif_with_transparency(image)
        if indexed is not None:
            return indexed, {"transparency": indexed.info["transparency"]}, False
    if composited:
        image = _on_white(image)
    if image.mode == "L" and "L" not in modes:
        image = image.convert("RGB")
    if image.mode not in modes:
        raise CodecError(f"{path}: a {os.path.splitext(path)[1]} file holds grey images only, "
                         f"this one is {image.mode}; use .ppm or .png")
    return image, options, composited


def _gif_with_transparency(image):
    """An ``LA`` or ``RGBA`` image as a palette image with one transparent colour.

    None when that would change it: some alpha is neither 0 nor 255, or
    there are more than 255 visible colours (the last entry is the
    transparent one).
    """
    rgba = np.asarray(image.convert("RGBA"))
    alpha = rgba[..., 3]
    if not np.isin(alpha, (0, 255)).all():
        return None
    visible = alpha == 255
    colours, index = np.unique(rgba[visible][:, :3], axis=0, return_inverse=True)
    if len(colours) > 255:
        return None
    indices = np.full(alpha.shape, len(colours), dtype=np.uint8)
    indices[visible] = index.reshape(-1)
    indexed = Image.fromarray(indices, mode="P")
    indexed.putpalette(np.vstack([colours, [[0, 0, 0]]]).astype(np.uint8).tobytes())
    indexed.info["transparency"] = len(colours)
    return indexed


def _on_white(image):
    """Composite an ``LA`` or ``RGBA`` image on a white background."""
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat = Image.alpha_composite(white, rgba).convert("RGB")
    return flat.convert("L") if image.mode == "LA" else flat


def _encode(path, image, fmt, options):
    """The bytes of ``image`` saved as ``fmt``."""
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt, **options)
    except (ValueError, OSError, KeyError, OverflowError, struct.error) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise CodecError(f"{path}: {_cannot_write(exc)}") from None  # the system said
        # Encoders report running out of memory as their own errors ("encoding error 1",
        # "quantization error"): if a few copies of the image no longer fit, that was it.
        np.empty(_MEMORY_COPIES * len(image.mode) * image.width * image.height, np.uint8)
        raise CodecError(f"{path}: Pillow cannot write this {image.width}x{image.height} "
                         f"{image.mode} image as {fmt} ({exc})") from None
    return buffer.getvalue()


# Copies of the image an encoder's working memory is taken to be (WebP's lossless
# encoder: about four), for telling its out-of-memory errors from others.
_MEMORY_COPIES = 4


# ---------------------------------------------------------------- colours

def distinct_colours(pixels):
    """The distinct rows of a pixel array, how often each occurs, and where.

    Each pixel is packed into one integer key: its bytes as they are for up
    to three channels; for four, each value is replaced by its rank among
    that channel's distinct values, so the key space is the product of those
    counts.  When that space is small enough the keys present are marked in
    a table and a lookup table maps each pixel back to its colour (linear
    time); otherwise the keys are sorted (``np.unique``).

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
    if n_channels <= 3:
        # Up to 2**24 keys: pack the bytes as they are, without ranking the levels.
        levels = [np.arange(256, dtype=np.uint8)] * n_channels
        keys = pixels[:, 0].astype(np.int32)
        for c in range(1, n_channels):
            keys <<= 8
            keys |= pixels[:, c]
        return _distinct_keys(keys, 256 ** n_channels, levels, n_pixels)
    keys = np.zeros(n_pixels, dtype=np.int64)
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
    return _distinct_keys(keys, space, levels, n_pixels)


def _distinct_keys(keys, space, levels, n_pixels):
    """:func:`distinct_colours` from the pixels' keys, which lie in ``range(space)``."""
    if space <= min(_BINCOUNT_LIMIT, 8 * n_pixels + _BINCOUNT_FLOOR):
        present = np.zeros(space, dtype=bool)  # 1 byte a key, where counts would take 8
        for rows in _row_blocks(n_pixels):
            present[keys[rows]] = True
        used = np.flatnonzero(present)
        del present
        lookup = np.zeros(space, dtype=np.int32)
        lookup[used] = np.arange(len(used), dtype=np.int32)
        inverse = take(lookup, keys)
        del lookup
        counts = np.zeros(len(used), dtype=np.int64)
        for rows in _row_blocks(n_pixels):
            counts += np.bincount(inverse[rows], minlength=len(used))
    else:
        used, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return _unpack(used, levels), counts, inverse.reshape(-1)


def take(table, index):
    """``table[index]`` for a long integer ``index``, block by block.

    NumPy turns a narrow index into a 64-bit one before gathering; in blocks,
    that copy stays small however many pixels there are.

    Parameters
    ----------
    table : ndarray of shape (n_entries,)
    index : ndarray of shape (n,), integers in ``range(n_entries)``

    Returns
    -------
    ndarray of shape (n,), of ``table``'s type
    """
    out = np.empty(len(index), dtype=table.dtype)
    for rows in _row_blocks(len(index)):
        out[rows] = table[index[rows]]
    return out


def _row_blocks(n_rows):
    """Slices of at most ``_BLOCK_ROWS`` rows covering ``range(n_rows)``."""
    return [slice(start, start + _BLOCK_ROWS) for start in range(0, n_rows, _BLOCK_ROWS)]


_BLOCK_ROWS = 1 << 21
# Largest key space handled with tables: 2**24 keys (3 bytes) take a 16 MiB presence
# table and a 64 MiB lookup table ...
_BINCOUNT_LIMIT = 1 << 24
# ... and only when it is not much larger than the image: sorting a small image's
# keys is faster than sweeping tables of 16 million entries.
_BINCOUNT_FLOOR = 1 << 16


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
    """Load a codebook with ``np.load(allow_pickle=False)``, refusing anything unsafe.

    Before any array is read, each member's ``.npy`` header (at most
    ``_NPY_HEADER_MAX`` bytes of it inflated) must declare a dtype and shape
    whose size is the member's size in the zip directory, and ``img_shape``
    must be an image within the pixel limit that the other two fit; so a
    damaged or hostile file (an object array, a zip bomb, an absurd header
    or shape) is refused without allocating for it.  Codebooks of other
    programs are accepted when ``means[assignments].reshape(img_shape)`` is a
    well-defined image: integer labels of any width and shape, float or
    integer means, grey means of shape ``(k,)`` or ``(k, 1)``; extra arrays
    are ignored.

    Parameters
    ----------
    path : str

    Returns
    -------
    assignments : ndarray of integers, H * W of them
    means : ndarray of shape (n_clusters,) or (n_clusters, n_channels), float64, finite
    img_shape : tuple of int
        ``(H, W)`` or ``(H, W, C)`` with C from 1 to 4.
    """
    _check_input_path(path, "a codebook")
    try:
        with zipfile.ZipFile(path) as archive:
            headers = {key: _npy_header(path, archive, key) for key in CODEBOOK_KEYS}
            missing = [key for key, header in headers.items() if header is None]
            if missing:
                raise CodecError(f"{path}: codebook has no {', '.join(missing)} "
                                 f"(found: {_listed(archive.namelist())})")
        dtype, shape = headers["img_shape"]
        if dtype.kind not in "ui" or shape not in ((2,), (3,)):
            raise CodecError(f"{path}: img_shape should be 2 or 3 integers, got "
                             f"{dtype} of shape {shape}")
        with np.load(path, allow_pickle=False) as arrays:
            img_shape = _checked_img_shape(path, arrays["img_shape"])
            _check_array_headers(path, headers["assignments"], headers["means"], img_shape)
            assignments, means = arrays["assignments"], arrays["means"]
    except zipfile.BadZipFile as exc:
        raise CodecError(f"{path}: {_not_a_zip(path, exc)}") from None
    except (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zlib.error,
            LZMAError) as exc:  # RuntimeError: an encrypted member
        _raise_if_path_problem(path, exc, "a codebook")
        raise CodecError(f"{path}: not a readable .npz codebook ({exc})") from None
    return assignments, _checked_values(path, assignments, means), img_shape


def _listed(names):
    """Member names, without ``.npy``, for a message."""
    found = sorted(name[:-4] if name.endswith(".npy") else name for name in names)
    return ", ".join(found[:10]) + (", ..." if len(found) > 10 else "") or "nothing"


class _Header(NamedTuple):
    """What an ``.npy`` header declares."""

    dtype: np.dtype
    shape: tuple


# What np.load reads (bzip2 and lzma: when Python has the bz2 and lzma modules).
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
# np.load's own limit on a header's length (numpy.lib.format's max_header_size).
_NPY_HEADER_MAX = 10_000
_HEADER_LIMIT = ({"max_header_size": _NPY_HEADER_MAX} if "max_header_size" in
                 inspect.signature(np.lib.format.read_array_header_1_0).parameters else {})
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


def _npy_header(path, archive, key):
    """Read and check the ``.npy`` header of member ``key``, not its data; None if absent.

    np.load reads ``key`` as the member ``key`` or ``key.npy``: an archive
    holding both is refused, as readers differ on which one is meant.
    """
    names = [name for name in (key, key + ".npy") if name in archive.namelist()]
    if len(names) != 1:
        if names:
            raise CodecError(f"{path}: holds both {key} and {key}.npy; refusing to guess "
                             "which is the codebook's")
        return None
    info = archive.getinfo(names[0])
    if info.compress_type not in _ZIP_METHODS:
        raise CodecError(f"{path}: {key} uses zip compression method {info.compress_type}; "
                         "only stored, deflated, bzip2 and lzma are read")
    with archive.open(info) as stream:  # inflates no more than a header can need
        head = io.BytesIO(stream.read(8 + 4 + _NPY_HEADER_MAX))
    try:
        version = np.lib.format.read_magic(head)
        if version not in _HEADER_READERS:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, _, dtype = _HEADER_READERS[version](head, **_HEADER_LIMIT)
    except ValueError as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CodecError(f"{path}: {key} is not a NumPy array ({reason})") from None
    if dtype.hasobject:
        raise CodecError(f"{path}: {key} is an object array that only unpickling could "
                         "read; refusing to unpickle")
    data_size = math.prod(shape) * dtype.itemsize
    if info.file_size != head.tell() + data_size:
        raise CodecError(f"{path}: {key} unzips to {info.file_size:,} bytes but its "
                         f"header's shape {shape} of {dtype} needs "
                         f"{head.tell() + data_size:,}; the codebook is damaged")
    return _Header(dtype, shape)


def _checked_img_shape(path, img_shape):
    """``img_shape`` as a tuple of ints, if it is a size an image can have."""
    shape = tuple(int(n) for n in img_shape)
    if min(shape) < 1:
        raise CodecError(f"{path}: img_shape {shape} has a size below 1")
    n_pixels = shape[0] * shape[1]
    if n_pixels > max_pixels():
        raise CodecError(f"{path}: img_shape {shape} is {n_pixels:,} pixels, more than "
                         f"the limit of {max_pixels():,} (Pillow's decompression-bomb guard)")
    if len(shape) == 3 and shape[2] > 4:
        raise CodecError(f"{path}: img_shape {shape} has {shape[2]} channels; an image "
                         "has 1 to 4")
    return shape


def _check_array_headers(path, assignments, means, img_shape):
    """Check the declared assignments and means against img_shape, before reading."""
    n_pixels = img_shape[0] * img_shape[1]
    n_labels = math.prod(assignments.shape)
    if assignments.dtype.kind not in "ui":
        raise CodecError(f"{path}: assignments have type {assignments.dtype}, not integers")
    if n_labels != n_pixels:
        raise CodecError(f"{path}: img_shape {img_shape} is {n_pixels:,} pixels but there "
                         f"are {n_labels:,} assignments")
    if means.dtype.kind not in "uif" or len(means.shape) not in (1, 2) or \
            means.shape[0] == 0:
        raise CodecError(f"{path}: means should be a non-empty numeric (k, C) array, "
                         f"got {means.dtype} of shape {means.shape}")
    if means.shape[0] > max(n_pixels, MAX_MEANS):
        raise CodecError(f"{path}: {means.shape[0]:,} means for {n_pixels:,} pixels is "
                         "more than a codebook needs; refusing to read them")
    n_channels = means.shape[1] if len(means.shape) == 2 else 1
    expected = img_shape[2] if len(img_shape) == 3 else 1
    if n_channels != expected:
        raise CodecError(f"{path}: img_shape {img_shape} does not match means of shape "
                         f"{means.shape} ({n_channels} channel(s) per mean)")


def _checked_values(path, assignments, means):
    """``means`` as float64, once they are finite and the labels index them.

    A long double beyond float64's range is refused like infinity (comparing
    it, unlike casting it, warns of nothing).
    """
    if means.dtype.kind == "f" and not (np.abs(means) <= np.finfo(np.float64).max).all():
        raise CodecError(f"{path}: means contain NaN or infinity (or values beyond "
                         "float64's range)")
    low, high = int(assignments.min()), int(assignments.max())
    if low < 0 or high >= len(means):
        raise CodecError(f"{path}: assignments range over {low}..{high} but there are "
                         f"{len(means)} means (valid labels are 0..{len(means) - 1})")
    return means.astype(np.float64)


def looks_like_codebook(path):
    """Whether the regular file at ``path`` starts like a zip archive, as codebooks do."""
    try:
        if not os.path.isfile(path):
            return False
        with open(path, "rb") as handle:
            return handle.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    except OSError:
        return False


def _not_a_zip(path, exc):
    """Why zipfile refused ``path``: damage, or a file of another kind."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(6)
    except OSError:
        start = b""
    if start.startswith(b"PK"):
        return f"the codebook's zip archive is damaged or truncated ({exc})"
    if start == b"\x93NUMPY":
        return "a single .npy array, not an .npz codebook of three arrays"
    return "not an .npz codebook (not a zip archive)"


# ---------------------------------------------------------------- files

def check_output_path(path, *, input_path=None):
    """Raise CodecError if ``path`` cannot receive an output file.

    Checked before any work starts: ``-`` is refused (hw2 writes files), the
    path must name a regular file or nothing yet (never a folder, a device, a
    pipe or a socket, which replacing would destroy), its name must not be too
    long, its folder must exist and be writable, and it must not be the
    input file.  A symbolic link is followed: its target is what gets written.
    """
    mode = _check_output_name(path)
    folder = os.path.dirname(_output_target(path))
    if not os.path.isdir(folder):
        what = "is not a folder" if os.path.exists(folder) else "does not exist"
        raise CodecError(f"{path}: the folder {folder} {what}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CodecError(f"{path}: cannot write in the folder {folder} (permission denied)")
    if input_path is not None and mode is not None and os.path.exists(input_path) \
            and os.path.samefile(path, input_path):
        raise CodecError(f"{path}: --output is the input file; refusing to overwrite it")


def _check_output_name(path):
    """Refuse an output path whose name alone is wrong; its mode if it exists, else None.

    Wrong: ``-``, a name too long, a symbolic-link loop, a file used as a
    folder, a folder, a device, a pipe or a socket.
    """
    if path == "-":
        raise CodecError("-: hw2 writes its output to a file, not to standard output; "
                         "give a file name for --output")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None  # a new file (or a dangling link: its target is created)
    except OSError as exc:
        raise CodecError(f"{path}: {_path_problem(path, exc, 'a file')}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise CodecError(f"{path}: is a directory; give a file name for --output")
    if path.endswith(("/", os.sep)):
        raise CodecError(f"{path}: ends with '/', so it names a directory; give a file "
                         "name for --output")
    if mode is not None and not stat.S_ISREG(mode):
        raise CodecError(f"{path}: not a regular file (a device, a pipe or a socket); "
                         "hw2 writes only regular files and will not replace it")
    return mode


def _output_target(path):
    """The absolute path a write to ``path`` replaces: a symbolic link's target."""
    try:
        return os.path.realpath(path) if os.path.islink(path) else os.path.abspath(path)
    except FileNotFoundError:  # os.getcwd() fails: the current folder was deleted
        raise CodecError(f"{path}: the current folder no longer exists (it was deleted); "
                         "give --output as a full path, or cd to a folder that exists") \
            from None


def _atomic_write(path, write):
    """Call ``write(handle)`` on a temporary file beside ``path``, then move it there.

    Whatever goes wrong, including KeyboardInterrupt or MemoryError, the
    temporary file is removed and an existing file at ``path`` is untouched.
    A symbolic link at ``path`` is followed (its target is replaced, the link
    stays); a file replaced keeps its permission bits, a new one gets those
    the umask leaves.
    """
    target = _output_target(path)
    temp = os.path.join(os.path.dirname(target), f".hw2-{secrets.token_hex(6)}.part")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise CodecError(f"{path}: {_cannot_write(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        if os.path.exists(target):
            os.chmod(temp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(temp, target)
    except BaseException as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CodecError(f"{path}: {_cannot_write(exc)}") from None
        raise


def _cannot_write(exc):
    """The message for an OSError met while writing: what the system said."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EFBIG:
        reason += " (over a file-size limit: the shell's ulimit -f, or the file system's)"
    return f"cannot write: {reason}"


def _check_input_path(path, what):
    """Refuse a path that names no regular file, saying what it is instead.

    A device or a pipe is refused before it is opened: reading /dev/zero or a
    FIFO could never end.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise CodecError(f"{path}: {_path_problem(path, exc, what)}") from None
    if stat.S_ISDIR(mode):
        raise CodecError(f"{path}: is a directory, not {what}")
    if not stat.S_ISREG(mode):
        raise CodecError(f"{path}: not a regular file, so not {what}")


def _path_problem(path, exc, what="a file"):
    """What is wrong with ``path``, from the OSError the system gave for it."""
    if exc.errno == errno.ENOENT:
        return "no such file"
    if exc.errno == errno.EISDIR:
        return f"is a directory, not {what}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENOTDIR:
        file = _file_used_as_folder(path)
        return (f"not a directory: {file} is a file, not a folder" if file
                else "not a directory: a part of the path is a file, not a folder")
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links (a link that leads back to itself)"
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long (at most 255 bytes a name and 4096 bytes a path)"
    return exc.strerror or str(exc)


def _raise_if_path_problem(path, exc, what):
    """Raise the CodecError for ``exc`` if the system refused to open ``path``."""
    if isinstance(exc, OSError) and exc.errno in _PATH_ERRORS:
        raise CodecError(f"{path}: {_path_problem(path, exc, what)}") from None


_PATH_ERRORS = {errno.ENOENT, errno.EISDIR, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                errno.ELOOP, errno.ENAMETOOLONG}


def _file_used_as_folder(path):
    """The first part of ``path`` that is a file where a folder should be, or None."""
    parts = os.path.normpath(path).split(os.sep)
    for end in range(1, len(parts) + 1):
        prefix = os.sep.join(parts[:end]) or os.sep
        if os.path.isfile(prefix) and (end < len(parts) or path.endswith(("/", os.sep))):
            return prefix
    return None
