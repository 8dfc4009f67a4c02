"""The noise sampler: i.i.d. N(x, sigma^2 I) samples across chunk boundaries, chunk sizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from lipbound.smoothing.sampling import (
    CHUNK_VALUES,
    STREAM_ESTIMATE,
    STREAM_SELECT,
    NoiseStream,
    default_chunk,
)

P_MIN = 1e-4  # every test below has p far above this at the fixed seeds, and far below it
# under the mutations tried (sigma^2 for sigma, every chunk with the same seed)


def _standardised(x: torch.Tensor, sigma: float, stream: int, total: int, chunk: int | None,
                  seed: int = 12345) -> np.ndarray:
    noise = NoiseStream(x, sigma, seed, stream, total, chunk)
    rows = []
    for lo in range(0, total, 700):  # batches straddling chunk boundaries
        pts = noise.points(lo, min(lo + 700, total))
        rows.append(((pts.double() - x.double()) / sigma).reshape(pts.shape[0], -1).numpy())
    return np.concatenate(rows)


def _gaussian_pvalues(z: np.ndarray, chunk: int) -> dict[str, float]:
    """p-values of H0: the rows of z are i.i.d. N(0, I)."""
    n, d = z.shape
    mean = z.mean(axis=0)
    cov = np.cov(z, rowvar=False, bias=True) + np.outer(mean, mean)  # second moment about 0
    _, logdet = np.linalg.slogdet(cov)
    lr = n * (np.trace(cov) - logdet - d)  # likelihood ratio against N(0, I): ~ chi2
    flat = z.reshape(-1)
    lag_chunk = (z[:-chunk] * z[chunk:]).reshape(-1)  # same sample slot of consecutive chunks
    lag_one = (z[:-1] * z[1:]).reshape(-1)
    return {
        "ks": stats.kstest(flat, "norm").pvalue,
        "mean": stats.chi2.sf(n * float(mean @ mean), d),
        "covariance": stats.chi2.sf(lr, d * (d + 3) // 2),
        "lag_chunk": 2 * stats.norm.sf(abs(lag_chunk.mean()) * np.sqrt(lag_chunk.size)),
        "lag_one": 2 * stats.norm.sf(abs(lag_one.mean()) * np.sqrt(lag_one.size)),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stream", [STREAM_SELECT, STREAM_ESTIMATE])
def test_samples_are_iid_gaussian_across_chunks(dtype, stream):
    """x + sigma * eps over 20 chunks: KS on every coordinate value, the mean (chi^2), the
    second-moment matrix against I (likelihood ratio, chi^2 with d(d+3)/2 dof) and the
    correlation of samples one apart and one chunk apart (independent chunk seeds)."""
    x = torch.linspace(-1.0, 2.0, 8, dtype=dtype).reshape(2, 4)
    sigma, chunk = 0.3, 1000
    z = _standardised(x, sigma, stream, 20 * chunk, chunk)
    for name, p in _gaussian_pvalues(z, chunk).items():
        assert p > P_MIN, (name, p)


def test_default_chunk_samples_are_iid_gaussian():
    """The default chunk (349 samples of 3000-value inputs), over 3 chunks: KS on 120 coordinates,
    the other statistics on 12 coordinates."""
    x = torch.rand(3000, generator=torch.Generator().manual_seed(1))
    chunk = default_chunk(x.numel())
    assert chunk == 349
    z = _standardised(x, 0.5, STREAM_ESTIMATE, 3 * chunk, None)
    assert stats.kstest(z[:, ::25].reshape(-1), "norm").pvalue > P_MIN
    for name, p in _gaussian_pvalues(z[:, ::250], chunk).items():
        assert p > P_MIN, (name, p)


def test_streams_are_not_shifted_copies():
    """Selection and estimation noise are unrelated (no lag aligns them)."""
    x = torch.zeros(16)
    a = _standardised(x, 1.0, STREAM_SELECT, 2000, None)
    b = _standardised(x, 1.0, STREAM_ESTIMATE, 2000, None)
    corr = (a * b).mean() * np.sqrt(a.size)
    assert abs(corr) < 4.5
    for shift in range(1, 50):
        assert not np.allclose(a[shift:], b[:-shift])


def test_default_chunk_size():
    for numel in (1, 7, 40, 64, 784, 1000, 3072, 150528, CHUNK_VALUES, 3 * CHUNK_VALUES):
        c = default_chunk(numel)
        assert c >= 1
        assert c * numel <= max(CHUNK_VALUES, numel)  # memory bounded whatever n
        if c >= 1000:
            assert c % 1000 == 0 and (c + 1000) * numel > CHUNK_VALUES
        else:
            assert (c + 1) * numel > CHUNK_VALUES
    assert default_chunk(64) == 16000 and default_chunk(40) == 26000
    with pytest.raises(ValueError):
        default_chunk(0)


def test_chunk_buffer_does_not_grow_with_n():
    x = torch.zeros(64)
    small = NoiseStream(x, 1.0, 0, STREAM_ESTIMATE, 20_000)
    large = NoiseStream(x, 1.0, 0, STREAM_ESTIMATE, 10_000_000)
    assert small._pts.shape == large._pts.shape == (16000, 64)
    large.points(9_999_000, 10_000_000)
    assert large._pts.shape == (16000, 64)
