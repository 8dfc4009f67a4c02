"""Fixtures shared by the smoothing tests."""

import pytest

from tests.smoothing.test_smoothing_support import one_thread


@pytest.fixture
def single_thread():
    """One torch thread for the test (see :func:`one_thread`)."""
    with one_thread():
        yield
