"""Fixtures shared by the error tests (test_errors.py, test_hostile.py)."""
import numpy as np
import pytest
from PIL import Image

import codec
import kmeans


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
