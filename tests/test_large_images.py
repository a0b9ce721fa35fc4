"""Images past Pillow's 89 MP guard, and the memory check from the header.

hw2 refuses an image only when it cannot fit in memory, judged from its header before
decoding.  The estimate is held honest by runs under an address-space limit in a child
process.  (The strip-wise reading and decoding that keep memory down: test_codec.py.)
"""
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

import codec
import hw2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PILLOW_LIMIT = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS: 1 GiB / 4 / 3


def png_declaring(path, width, height):
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, with one empty row."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))
    return str(path)


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
    json.dump({"status": os.WEXITSTATUS(status), "rss": usage.ru_maxrss / 1024}, out)
"""


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="os.wait4 (peak memory of a child) is POSIX")
def test_a_header_claiming_more_than_the_memory_is_refused_in_one_line_with_little_memory(
        tmp_path):
    bomb = png_declaring(tmp_path / "bomb.png", 1_000_000, 1_000_000)  # 5 TB to decode
    assert os.path.getsize(bomb) < 100
    usage = tmp_path / "usage.json"
    done = subprocess.run([sys.executable, "-S", "-c", _WRAPPER, str(usage), sys.executable,
                           os.path.join(ROOT, "hw2.py"), "--compress", bomb, "--output",
                           str(tmp_path / "c.npz")], capture_output=True, text=True)
    result = json.loads(usage.read_text())
    assert result["status"] == 1 and done.stdout == ""
    assert done.stderr.startswith(f"hw2: error: {bomb}: 1000000x1000000 pixels need about ")
    assert done.stderr.count("\n") == 1 and "MB is available" in done.stderr
    # Refused from the header, the run stays near Python's start.
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
