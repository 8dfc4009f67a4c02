"""Shared noise across inputs: a ``NoiseBank`` changes no value, only how often noise is drawn.

``certify_dataset(shared_noise=True)`` must give, for every input, exactly the certificate of
``Smooth.certify(x, seed=seed)`` (so each record keeps Cohen's per-input guarantee), while
drawing each noise chunk once for the whole data set, within the bank's memory cap.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lipbound.cli import main
from lipbound.errors import InputError
from lipbound.jobs.certify import CertifyJob
from lipbound.smoothing import Smooth
from lipbound.smoothing.dataset import certify_dataset, input_seed
from lipbound.smoothing.sampling import STREAM_ESTIMATE, NoiseBank, NoiseStream

CHUNK = 100  # equal to n0 below: a bank key that forgot the stream would mix the two streams
SETTINGS = dict(n0=CHUNK, n=730, alpha=0.01, batch_size=64)  # batches straddle the chunks


def _smooth(seed: int = 0) -> tuple[Smooth, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    X = torch.randn(5, 6) * 0.5
    y = model(X).argmax(1)
    return Smooth(model, 3, 0.4, noise_chunk=CHUNK), X, y


def _stable(rec: dict) -> tuple:
    d = rec["details"]
    return (rec["predict"], rec["radius"], d["seed"], d.get("selection_counts"), d.get("n_A"))


@pytest.mark.parametrize("certificate", ["cohen", "lvm", "lipschitz"])
def test_shared_records_equal_plain_certify_with_the_base_seed(certificate, single_thread):
    smooth, X, y = _smooth()
    recs = certify_dataset(smooth, X, y, seed=7, shared_noise=True, certificate=certificate,
                           **SETTINGS)
    for i, rec in enumerate(recs):
        plain = smooth.certify(X[i], seed=7, certificate=certificate, **SETTINGS)
        assert (rec["predict"], rec["radius"]) == (plain.prediction, plain.radius)
        assert rec["details"]["seed"] == 7 == plain.details["seed"]
        assert rec["details"].get("n_A") == plain.details.get("n_A")
        assert rec["details"]["settings"] == plain.details["settings"]
        assert rec["settings"]["shared_noise"] is True


def test_default_keeps_per_input_seeds(single_thread):
    smooth, X, y = _smooth()
    recs = certify_dataset(smooth, X, y, seed=7, **SETTINGS)
    assert [r["details"]["seed"] for r in recs] == [input_seed(7, i) for i in range(len(X))]
    assert "shared_noise" not in recs[0]["settings"]


def test_bank_draws_each_chunk_once(single_thread):
    smooth, X, _ = _smooth()
    bank = NoiseBank()
    for x in X:
        smooth.certify(x, seed=3, noise_bank=bank, **SETTINGS)
    chunks = 1 + math.ceil(SETTINGS["n"] / CHUNK)  # one selection chunk, the estimation ones
    assert bank.draws == chunks and bank.hits > 0


def test_bank_memory_is_capped_and_values_unchanged(single_thread):
    smooth, X, _ = _smooth()
    cap = 3 * CHUNK * X.shape[1]  # three chunks of the nine
    bank = NoiseBank(capacity=cap)
    first = [smooth.certify(x, seed=3, noise_bank=bank, **SETTINGS) for x in X]
    held = sum(t.numel() for t in bank._chunks.values())
    assert held <= cap and len(bank._chunks) == 3
    plain = [smooth.certify(x, seed=3, **SETTINGS) for x in X]
    assert [(c.prediction, c.radius, c.details["n_A"]) for c in first] == \
        [(c.prediction, c.radius, c.details["n_A"]) for c in plain]


@pytest.mark.parametrize("batch", [37, 100, 250])
def test_banked_points_are_bit_identical(batch):
    x = torch.randn(2, 3)
    bank = NoiseBank()
    NoiseStream(torch.zeros(2, 3), 0.3, 11, STREAM_ESTIMATE, 520, CHUNK, bank).points(0, 520)
    with_bank = NoiseStream(x, 0.3, 11, STREAM_ESTIMATE, 520, CHUNK, bank)
    plain = NoiseStream(x, 0.3, 11, STREAM_ESTIMATE, 520, CHUNK)
    for lo in range(0, 520, batch):
        hi = min(lo + batch, 520)
        assert torch.equal(with_bank.points(lo, hi), plain.points(lo, hi))
    assert bank.hits > 0


def test_bad_shared_noise_arguments():
    smooth, X, y = _smooth()
    with pytest.raises(InputError, match="shared_noise"):
        certify_dataset(smooth, X, y, shared_noise="yes", **SETTINGS)
    with pytest.raises(InputError, match="noise_bank"):
        smooth.certify(X[0], noise_bank={}, **SETTINGS)
    with pytest.raises(InputError, match="base_seed"):
        CertifyJob(smooth.model, 0.4, 3, shared_noise=True)
    with pytest.raises(InputError, match="capacity"):
        NoiseBank(capacity=-1)


def test_cli_shared_noise_matches_the_library(tmp_path, capsys, single_thread):
    from lipbound.models import load
    from lipbound.models.digits_smooth import digits_images

    js = tmp_path / "c.json"
    rc = main(["certify", "--model", "digits-smooth-0.25", "--indices", "0:3", "--json",
               str(js), "--seed", "4", "--n0", "20", "--n", "300", "--alpha", "0.01",
               "--threads", "1", "--no-progress", "--shared-noise"])
    capsys.readouterr()
    assert rc == 0
    doc = json.loads(js.read_text())
    assert doc["meta"]["shared_noise"] is True
    _, _, xte, yte = digits_images()
    smooth = Smooth(load("digits-smooth-0.25"), 10, 0.25, input_shape=(1, 8, 8))
    lib = certify_dataset(smooth, xte[:3], yte[:3], n0=20, n=300, alpha=0.01, seed=4,
                          shared_noise=True)
    assert [_stable(r) for r in doc["records"]] == [_stable(r) for r in lib]
    assert {r["details"]["seed"] for r in lib} == {4}


def test_certify_job_shared_noise_matches_certify_dataset(single_thread):
    smooth, X, y = _smooth()
    job = CertifyJob(smooth.model, 0.4, 3, n0=CHUNK, n=730, alpha=0.01, batch_size=64,
                     base_seed=9, shared_noise=True)
    # the job's Smooth keeps the default chunk size, so compare with a default-chunk Smooth
    plain = Smooth(smooth.model, 3, 0.4)
    lib = certify_dataset(plain, X, y, seed=9, shared_noise=True, **SETTINGS)
    recs = [job((X[i], int(y[i]), i), seed=0) for i in range(len(X))]
    assert [_stable(r) for r in recs] == [_stable(r) for r in lib]
