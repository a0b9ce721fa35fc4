"""Fixtures shared by the error tests (test_errors.py, test_hostile.py)."""
import pytest

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
