"""Bounded fuzzing: damaged codebooks and images end in a correct output or one error line.

A fixed seed picks a few hundred byte flips and truncations of a valid
codebook (compressed and stored) and of a valid PNG and JPEG.  Every run
must return 0 with a correct output or 1 with exactly one ``hw2: error:``
line; ``main`` must never raise, and the file already at ``--output`` must
survive every failed run byte for byte, with no temporary file left over.
"""
import io
import re

import numpy as np
import pytest
from PIL import Image, ImageOps

import hw2

OLD_BYTES = b"an older output that a failed run must not clobber\n"
CASES_PER_SOURCE = 80


def codebook_bytes(compressed):
    rng = np.random.default_rng(3)
    buffer = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    save(buffer, assignments=(np.arange(12 * 16) % 7).astype(np.uint8),
         means=rng.uniform(0, 255, (7, 3)), img_shape=np.array([12, 16, 3]))
    return buffer.getvalue()


def image_bytes(fmt):
    y, x = np.mgrid[0:12, 0:16]
    pixels = np.dstack([x * 16, y * 20, (x + y) * 8]).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


SOURCES = {"codebook.npz": lambda: codebook_bytes(True),
           "stored.npz": lambda: codebook_bytes(False),
           "image.png": lambda: image_bytes("PNG"),
           "image.jpg": lambda: image_bytes("JPEG")}


def mutations(data, rng, n_cases):
    """``n_cases`` damaged copies of ``data``: truncations, and 1 to 8 random bytes set."""
    for case in range(n_cases):
        damaged = bytearray(data)
        if case % 3 == 0:
            damaged = damaged[:rng.integers(len(data))]
        else:
            for _ in range(rng.integers(1, 9)):
                damaged[rng.integers(len(damaged))] = rng.integers(256)
        yield bytes(damaged)


def pixels_as_read(path):
    """The grader's reading of an RGB image (upright per EXIF)."""
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def check_codebook_output(source, out, stdout):
    """A damaged image that still decodes must give a correct codebook for what it shows."""
    expected = pixels_as_read(source).astype(np.float64)
    with np.load(out, allow_pickle=False) as data:
        recon = data["means"][data["assignments"]].reshape(tuple(data["img_shape"]))
    assert recon.shape == expected.shape
    match = re.fullmatch(r"Reconstruction error is (\S+)", stdout)
    assert match, stdout
    error = float(match.group(1))
    truth = np.sqrt(((expected - recon) ** 2).sum(axis=2)).mean()
    assert error == pytest.approx(truth, rel=1e-9, abs=1e-9)


def check_image_output(source, out):
    """A damaged codebook that still loads must decode to what the grader's line gives."""
    with np.load(source, allow_pickle=False) as data:
        recon = data["means"][data["assignments"]].reshape(tuple(data["img_shape"]))
    with Image.open(out) as image:
        np.testing.assert_array_equal(np.asarray(image),
                                      np.clip(np.rint(recon), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("source_name", sorted(SOURCES))
def test_damaged_inputs_fail_cleanly_or_decode_correctly(source_name, tmp_path, capsys):
    rng = np.random.default_rng(sorted(SOURCES).index(source_name))
    is_codebook = source_name.endswith(".npz")
    source = tmp_path / source_name
    out = tmp_path / ("out.png" if is_codebook else "out.npz")
    outcomes = {0: 0, 1: 0}
    for case, damaged in enumerate(mutations(SOURCES[source_name](), rng, CASES_PER_SOURCE)):
        source.write_bytes(damaged)
        out.write_bytes(OLD_BYTES)
        argv = (["--decompress", str(source)] if is_codebook
                else ["--compress", str(source), "--clusters", "4"])
        status = hw2.main(argv + ["--output", str(out), "-q"])  # must not raise
        captured = capsys.readouterr()
        where = f"case {case} of {source_name}: {captured.err!r}"
        assert status in (0, 1), where
        assert "Traceback" not in captured.err, where
        if status == 1:
            lines = captured.err.splitlines()
            assert len(lines) == 1 and lines[0].startswith("hw2: error: "), where
            assert str(source) in lines[0], where
            assert captured.out == "", where
            assert out.read_bytes() == OLD_BYTES, where
        else:
            assert captured.err == "", where
            if is_codebook:
                check_image_output(source, out)
            else:
                check_codebook_output(source, out, captured.out.rstrip("\n"))
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, out.name])
        outcomes[status] += 1
    # The damage really was damage: most cases fail.
    assert outcomes[1] > CASES_PER_SOURCE // 2
