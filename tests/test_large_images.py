"""Images past Pillow's 89 MP guard: the memory check, and the strip-wise reading and writing.

hw2 refuses an image only when it cannot fit in memory, judged from its header before
decoding; it counts colours and assigns labels strip by strip from Pillow's decoded image,
and builds the decompressed image strip by strip.  The strip-wise results are held equal to
the plain ones (np.unique over every pixel, ``decode``), and the memory estimate is held
honest by runs under an address-space limit in a child process.
"""
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

import codec
import hw2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PILLOW_LIMIT = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS: 1 GiB / 4 / 3


@pytest.fixture
def small_strips(monkeypatch):
    """Strips of 1,000 pixels, so that a small image is read in many strips."""
    monkeypatch.setattr(codec, "STRIP_PIXELS", 1000)


def png_declaring(path, width, height):
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, with one empty row."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))
    return str(path)


def noise_image(mode, shape, levels, seed=0):
    """A Pillow image of ``mode`` from random values below ``levels`` (few colours repeat)."""
    values = np.random.default_rng(seed).integers(0, levels, shape).astype(np.uint8)
    return Image.fromarray(values, mode)


# --- strip-wise counting and assigning equal the plain result -------------------------

IMAGES = {  # mode: (image, channels read)
    "L": (lambda: noise_image("L", (37, 53), 256), 1),
    "LA": (lambda: noise_image("LA", (37, 53, 2), 9), 2),
    "RGB": (lambda: noise_image("RGB", (37, 53, 3), 7), 3),
    "RGBA": (lambda: noise_image("RGBA", (37, 53, 4), 4), 4),
    "P": (lambda: noise_image("L", (37, 53), 256).convert("P"), 3),
}


@pytest.mark.parametrize("table", [True, False], ids=["table", "sorting"])
@pytest.mark.parametrize("mode", sorted(IMAGES))
def test_counting_and_assigning_by_strips_equal_np_unique(mode, table, small_strips, tmp_path):
    make, n_channels = IMAGES[mode]
    path = tmp_path / "image.png"
    make().save(path)
    with Image.open(path) as image:  # what a grader reads, channels last
        pixels = np.asarray(image.convert({1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[n_channels]))
    expected, inverse, counts = np.unique(pixels.reshape(-1, n_channels), axis=0,
                                          return_inverse=True, return_counts=True)
    reader = codec.ImageReader(str(path))
    # Tables (up to three channels) or sorted keys and binary search.
    reader.key_space = 256 ** n_channels if table and n_channels <= 3 else 0
    colours, got_counts = codec.count_colours(reader)
    np.testing.assert_array_equal(colours, expected)
    np.testing.assert_array_equal(got_counts, counts)
    labels = (np.arange(len(colours)) * 7 % 5).astype(np.uint8)
    np.testing.assert_array_equal(codec.assign_labels(reader, colours, labels),
                                  labels[inverse.reshape(-1)])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_of_pixels_and_assignments_is_that_of_exif_transpose(orientation,
                                                                         small_strips, tmp_path):
    image = noise_image("RGB", (23, 41, 3), 256)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "turned.png"
    image.save(path, exif=exif.tobytes())
    with Image.open(path) as stored:
        expected = np.asarray(ImageOps.exif_transpose(stored))
    pixels = codec.read_image(str(path))
    np.testing.assert_array_equal(pixels, expected)
    reader = codec.ImageReader(str(path))
    colours, _ = codec.count_colours(reader)
    labels = np.arange(len(colours), dtype=np.uint16)
    assignments = codec.assign_labels(reader, colours, labels)
    np.testing.assert_array_equal(colours[assignments], expected.reshape(-1, 3))


@pytest.mark.parametrize("img_shape", [(31, 17), (31, 17, 2), (31, 17, 3), (31, 17, 4)])
def test_decoded_image_by_strips_equals_decode(img_shape, small_strips):
    rng = np.random.default_rng(1)
    n_channels = img_shape[2] if len(img_shape) == 3 else 1
    means = rng.uniform(-20, 280, (300, n_channels))  # rounded and clipped as decode does
    assignments = rng.integers(0, 300, 31 * 17).astype(np.uint16)
    image = codec.decoded_image(assignments, means, img_shape)
    np.testing.assert_array_equal(np.asarray(image), codec.decode(assignments, means, img_shape))


# --- no fixed pixel limit; memory checked from the header ------------------------------

def test_an_image_over_pillows_pixel_limit_is_compressed(tmp_path, capsys):
    width, height = 9500, 9420  # 89,490,000 pixels; flat, so it decodes fast
    assert width * height > PILLOW_LIMIT
    path = tmp_path / "flat.png"
    Image.new("1", (width, height), 1).save(path)
    book = tmp_path / "c.npz"
    assert hw2.main(["--compress", str(path), "--clusters", "2", "--output", str(book)]) == 0
    assert capsys.readouterr().out == "Reconstruction error is 0.0\n"
    with np.load(book) as arrays:
        assert arrays["img_shape"].tolist() == [height, width]
        assert arrays["means"].tolist() == [[255.0]]
        assert arrays["assignments"].shape == (width * height,)
        assert not arrays["assignments"].any()


# Runs a command and writes its exit status and peak RSS (MB) to the file argv[1].  A small
# process of its own: Linux carries a process's peak RSS over fork and exec, so a child
# forked by pytest would start from pytest's.
_WRAPPER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"status": os.waitstatus_to_exitcode(status), "rss": usage.ru_maxrss / 1024}, out)
"""


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="os.wait4 (peak memory of a child) is POSIX")
def test_a_header_claiming_more_than_the_memory_is_refused_in_one_line_with_little_memory(
        tmp_path):
    bomb = png_declaring(tmp_path / "bomb.png", 100_000, 100_000)
    assert os.path.getsize(bomb) < 100
    usage = tmp_path / "usage.json"
    done = subprocess.run([sys.executable, "-S", "-c", _WRAPPER, str(usage), sys.executable,
                           os.path.join(ROOT, "hw2.py"), "--compress", bomb, "--output",
                           str(tmp_path / "c.npz")], capture_output=True, text=True)
    result = json.loads(usage.read_text())
    assert result["status"] == 1 and done.stdout == ""
    assert done.stderr.startswith(f"hw2: error: {bomb}: 100000x100000 pixels need about ")
    assert done.stderr.count("\n") == 1 and "MB is available" in done.stderr
    # Decoding would take 40 GB; refused from the header, the run stays near Python's start.
    assert result["rss"] < 150, result
    assert sorted(os.listdir(tmp_path)) == ["bomb.png", "usage.json"]


# Compresses argv[1] under an address-space limit (RLIMIT_AS) of the memory already mapped
# plus argv[2] bytes; with argv[3] == "unchecked", hw2's memory check is switched off.
_UNDER_LIMIT = """
import os, resource, sys
os.environ["OPENBLAS_NUM_THREADS"] = "1"
sys.path.insert(0, sys.argv[4])
import numpy, PIL.Image, codec, gmm, hw2, kmeans
if sys.argv[3] == "unchecked":
    codec.memory_available = lambda: 1 << 50
mapped = codec._proc_bytes("/proc/self/status", "VmSize")
resource.setrlimit(resource.RLIMIT_AS, (mapped + int(sys.argv[2]), resource.RLIM_INFINITY))
sys.exit(hw2.main(["--compress", sys.argv[1], "--clusters", "2", "--output", sys.argv[1] + ".npz"]))
"""


def compress_under_limit(path, room, check):
    return subprocess.run([sys.executable, "-c", _UNDER_LIMIT, str(path), str(int(room)), check,
                           ROOT], capture_output=True, text=True)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"),
                    reason="the memory mapped (VmSize) is read from Linux's /proc")
def test_the_memory_estimate_is_honest_under_an_address_space_limit(tmp_path):
    resource = pytest.importorskip("resource", reason="RLIMIT_AS needs the resource module")
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY
    width = height = 3000
    path = tmp_path / "two.png"
    Image.fromarray(np.repeat([[10, 200]], width * height // 2, axis=0).reshape(
        height, width).astype(np.uint8).repeat(3).reshape(height, width, 3)).save(path)
    estimate = width * height * (4 + 1) + codec.FIXED_MEMORY  # RGB in Pillow, uint8 labels
    # What the estimate admits completes within it.
    done = compress_under_limit(path, estimate * 1.1, "checked")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Reconstruction error is ")
    # Below it, the image is refused in one line, before decoding ...
    done = compress_under_limit(path, estimate * 0.6, "checked")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "MB is available" in done.stderr
    # ... and it would not have fit: without the check, it runs out of memory.
    done = compress_under_limit(path, estimate * 0.6, "unchecked")
    assert done.returncode == 1
    assert done.stderr == "hw2: error: out of memory; try a smaller image or fewer --clusters\n"
