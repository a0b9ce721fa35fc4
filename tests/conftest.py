"""Fixtures and helpers shared by the tests (``from conftest import assert_failed``)."""
import numpy as np
import pytest
from PIL import Image

import codec
import kmeans

# What an existing output file holds before a run that must leave it alone.
OLD_BYTES = b"the user's precious file\n"


@pytest.fixture
def spy_work(monkeypatch):
    """Record whether an input file was read or a model fitted."""
    calls = []
    for module, name in ((codec, "read_image"), (codec, "read_codebook"),
                         (kmeans, "kmeans")):
        real = getattr(module, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, name, spy)
    return calls


@pytest.fixture
def photo(tmp_path):
    """A 12x10 RGB image with 120 distinct colours."""
    y, x = np.mgrid[0:10, 0:12]
    pixels = np.dstack([x * 20, y * 25, (x * y) % 256]).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    return path


def assert_failed(status, out, err, *words, expected=1, output=None):
    """A run of hw2 failed cleanly: status ``expected``, one error line holding ``words``.

    Nothing on stdout, no traceback; when ``output`` is given, a file there still
    holds ``OLD_BYTES`` (if it existed) and no temporary file is left beside it.
    Returns the error line.
    """
    assert status == expected, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("hw2: error: ") and "Traceback" not in err, err
    for word in words:
        assert str(word) in lines[0], (word, lines[0])
    if output is not None:
        if output.is_file():
            assert output.read_bytes() == OLD_BYTES
        if output.parent.is_dir():
            assert [p.name for p in output.parent.iterdir() if p.name.startswith(".hw2-")] == []
    return lines[0]
