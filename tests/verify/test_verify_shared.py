"""lipbound.verify on networks and properties of the shared VNN-COMP 2021 benchmarks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from lipbound.io import read_vnnlib  # noqa: E402
from lipbound.verify import verify  # noqa: E402
from tests.verify_nets import BENCH  # noqa: E402

pytestmark = pytest.mark.skipif(not BENCH.is_dir(), reason="shared benchmarks not present")


def ort_run(path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    return sess.run(None, {inp.name: x.numpy().astype(np.float32).reshape(shape)})[0].reshape(-1)


@pytest.mark.parametrize("name", ["test_small", "test_tiny", "test_nano"])
def test_competition_sanity_nets_hold(name):
    # the competition's own sanity instances are all "holds" (unsat)
    res = verify(BENCH / "test" / f"{name}.onnx", read_vnnlib(BENCH / "test" / f"{name}.vnnlib"),
                 30)
    assert res.verdict == "unsat"


def test_acasxu_property_4_holds_on_net_3_3():
    net = BENCH / "acasxu" / "ACASXU_run2a_3_3_batch_2000.onnx"
    res = verify(net, read_vnnlib(BENCH / "acasxu" / "prop_4.vnnlib"), 60)
    assert res.verdict == "unsat"


def test_acasxu_property_2_is_violated_on_net_2_1():
    net = BENCH / "acasxu" / "ACASXU_run2a_2_1_batch_2000.onnx"
    prop = read_vnnlib(BENCH / "acasxu" / "prop_2.vnnlib")
    res = verify(net, prop, 60)
    assert res.verdict == "sat"
    x, y = res.counterexample
    ref = ort_run(net, x).astype(np.float64)
    assert np.array_equal(ref, y.numpy())
    assert prop.is_counterexample(x, torch.from_numpy(ref))


@pytest.mark.slow
def test_mnistfc_counterexample_is_valid():
    net = BENCH / "mnistfc" / "mnist-net_256x2.onnx"
    prop = read_vnnlib(BENCH / "mnistfc" / "prop_1_0.05.vnnlib")
    res = verify(net, prop, 120)
    assert res.verdict == "sat"
    x, y = res.counterexample
    assert prop.regions[0].contains(x)
    ref = ort_run(net, x).astype(np.float64)
    assert prop.is_counterexample(x, torch.from_numpy(ref))
