"""lipbound.verify on tiny ONNX networks: certified unsat, confirmed sat, disjunctions, limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import lipbound  # noqa: E402
from lipbound.errors import InputError, ShapeError, UnsupportedOperationError  # noqa: E402
from lipbound.io import parse_vnnlib, read_vnnlib  # noqa: E402
from lipbound.verify import verify  # noqa: E402
from lipbound.verify.falsify import Checker, SearchWitness, snap_box  # noqa: E402
from lipbound.verify.prove import refute  # noqa: E402
from tests.verify_nets import box_text, forward, grid_max_y0, tiny_net  # noqa: E402


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    return tiny_net(tmp_path_factory.mktemp("nets") / "tiny.onnx")


def prop(outputs: str, **kw):
    return parse_vnnlib(box_text(outputs, **kw), "test")


def ort_output(path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x.numpy().astype(np.float32).reshape(1, 2)})[0].reshape(-1)


def test_unreachable_output_is_unsat(net):
    # y0 = relu(x0 - x1) + relu(0.5 x0 + 2 x1 - 0.5) <= 2 + 2 on the box
    res = verify(net, prop("(assert (>= Y_0 5))"), 30)
    assert res.verdict == "unsat" and res.counterexample is None
    assert res.details["decided_by"] in ("crown", "alpha-crown", "input-split")


def test_reachable_output_is_sat_with_valid_counterexample(net):
    p = prop("(assert (>= Y_0 1.9))")  # y0(1, -1) = 2
    res = verify(net, p, 30)
    assert res.verdict == "sat"
    x, y = res.counterexample
    assert x.dtype == torch.float64 and x.shape == (2,) and y.shape == (2,)
    assert bool(((x >= -1) & (x <= 1)).all())
    ref = ort_output(net, x)
    np.testing.assert_array_equal(y.numpy(), ref.astype(np.float64))  # exactly what ORT gives
    assert ref[0] >= 1.9
    assert p.is_counterexample(x, torch.from_numpy(ref.astype(np.float64)))
    assert res.details["executor"] == "onnxruntime"


def test_unsat_needs_every_disjunct_refuted(net):
    both_impossible = "(assert (or (and (>= Y_0 5)) (and (<= Y_0 -1))))"  # y0 >= 0 always
    assert verify(net, prop(both_impossible), 30).verdict == "unsat"
    one_reachable = "(assert (or (and (>= Y_0 5)) (and (<= Y_0 0.0))))"  # y0(-1, -1) = 0
    res = verify(net, prop(one_reachable), 30)
    assert res.verdict == "sat"
    x, y = res.counterexample
    assert float(y[0]) <= 0.0 and float(ort_output(net, x)[0]) <= 0.0


def test_every_region_must_be_safe(net):
    # two input boxes (an 'or' over inputs); only the second reaches y0 >= 1.9
    text = box_text("(assert (>= Y_0 1.9))").split("(assert (>= X_0")[0] + (
        "(assert (or (and (>= X_0 -1) (<= X_0 -0.9) (>= X_1 -1) (<= X_1 -0.9))"
        " (and (>= X_0 0.9) (<= X_0 1) (>= X_1 -1) (<= X_1 -0.9))))\n(assert (>= Y_0 1.9))")
    p = parse_vnnlib(text, "two-regions")
    assert len(p.regions) == 2
    res = verify(net, p, 30)
    assert res.verdict == "sat" and float(res.counterexample[0][0]) >= 0.9


def test_input_splitting_is_sound_at_the_true_maximum(net):
    # the verifier's input-splitting stage: the one search with input halves only
    model = lipbound.inputs.resolve_model(net)
    m = grid_max_y0()
    checker = Checker(model, model.input_shape)
    gen = torch.Generator().manual_seed(0)
    above = prop(f"(assert (>= Y_0 {m + 0.05}))").regions[0]
    witness = SearchWitness(model, above, model.input_shape, checker, gen)
    done, _ = refute(model, above, [0], "bab", model.input_shape, 60, split="input",
                     witness_check=witness)
    assert done == [0] and witness.found is None
    below = prop(f"(assert (>= Y_0 {m - 0.01}))").regions[0]
    witness = SearchWitness(model, below, model.input_shape, checker, gen)
    done, _ = refute(model, below, [0], "bab", model.input_shape, 60, split="input",
                     witness_check=witness)
    assert done == [] and witness.found is not None
    assert float(forward(witness.found[0].numpy()[None])[0, 0]) >= m - 0.01 - 1e-6


def test_unknown_when_methods_give_up(net):
    m = grid_max_y0()
    thr = m + 1e-3
    _, up = lipbound.output_bounds(net, torch.zeros(2), 1.0, spec=[[1.0, 0.0]],
                                   data_range=(-1.0, 1.0))
    assert float(up[0]) > thr  # precondition: CROWN alone cannot prove it
    res = verify(net, prop(f"(assert (>= Y_0 {thr}))"), 60, methods=("crown",),
                 input_split=False, attack_rounds=0, sampling=False)
    assert res.verdict == "unknown"
    assert [s["stage"] for s in res.details["stages"]] == ["screen", "crown", "attack-1"]


def test_timeout_is_reported_when_nothing_is_decided(net):
    res = verify(net, prop(f"(assert (>= Y_0 {grid_max_y0() + 1e-3}))"), 1e-3)
    assert res.verdict == "timeout" and res.counterexample is None
    assert res.time < 5.0


def test_bad_inputs_give_clear_errors(net, tmp_path):
    with pytest.raises(InputError, match="bad, line 9: unbalanced parentheses"):
        parse_vnnlib(box_text("(assert (>= Y_0 5)"), "bad")  # last ')' missing
    bad = tmp_path / "bad.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))\n"
                   "(assert (>= X_0 0))\n(assert (frobnicate Y_0 1))\n")
    with pytest.raises(InputError, match="line 5.*frobnicate"):
        read_vnnlib(bad)
    three = parse_vnnlib(box_text("(assert (>= Y_0 5))").replace(
        "(declare-const X_1 Real)", "(declare-const X_1 Real)\n(declare-const X_2 Real)").replace(
        "(assert (>= Y_0 5))", "(assert (>= X_2 0))\n(assert (<= X_2 1))\n(assert (>= Y_0 5))"),
        "three")
    with pytest.raises(ShapeError, match="3 inputs"):
        verify(net, three, 10)
    with pytest.raises(UnsupportedOperationError, match="Sign"):
        verify(tiny_net(tmp_path / "sign.onnx", op="Sign"), prop("(assert (>= Y_0 5))"), 10)
    with pytest.raises(InputError, match="timeout"):
        verify(net, prop("(assert (>= Y_0 5))"), 0)
    with pytest.raises(InputError, match="ONNX"):
        verify(str(tmp_path / "model.pt"), prop("(assert (>= Y_0 5))"), 10)
    off_cpu = torch.nn.Linear(2, 1, device="meta").eval()  # a CUDA model's stand-in
    with pytest.raises(InputError, match=r"on the CPU; it has tensors on \['meta'\]"):
        verify(off_cpu, prop("(assert (>= Y_0 5))"), 10)


def test_snap_box_stays_inside_in_float32():
    lo = torch.tensor([0.1, -1.0, 1 / 3], dtype=torch.float64)
    up = torch.tensor([0.1 + 1e-7, 1.0, 1 / 3 + 1e-7], dtype=torch.float64)
    box = snap_box(lo, up, torch.float32)
    assert box is not None
    slo, sup = box
    assert slo.dtype == torch.float32
    assert bool((slo.double() >= lo).all() and (sup.double() <= up).all() and (slo <= sup).all())
    tight = torch.tensor([1 / 3, 1 / 3 + 1e-12], dtype=torch.float64)
    assert snap_box(tight[:1], tight[1:], torch.float32) is None  # no float32 in between


def test_resolve_model_loads_onnx_paths_for_the_api(net, tmp_path):
    from lipbound.inputs import resolve_model

    model = resolve_model(net)
    assert resolve_model(str(net)) is model and resolve_model(model) is model
    x = torch.tensor([0.2, -0.3])
    by_path = lipbound.output_bounds(str(net), x, 0.1)
    by_module = lipbound.output_bounds(model, x, 0.1)
    assert torch.equal(by_path.lower, by_module.lower)
    y = forward(x.numpy()[None].astype(np.float64))[0]
    assert bool((by_path.lower <= torch.from_numpy(y)).all())
    lip = lipbound.local_lipschitz(net, x, 0.1)
    assert lip.value >= float(lip.lower.max()) > 0
    jl, ju = lipbound.jacobian_bounds(net, x, 0.1)
    assert jl.shape == (2, 2) and bool((jl <= ju).all())
    with pytest.raises(InputError, match="ONNX"):
        resolve_model(tmp_path / "weights.pt")
    with pytest.raises(InputError, match="not found"):
        resolve_model(tmp_path / "missing.onnx")


def test_plain_torch_module_is_checked_with_torch():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(np.array([[1.0, -1.0], [0.5, 2.0]])))
        model[0].bias.copy_(torch.tensor([0.0, -0.5]))
        model[2].weight.copy_(torch.from_numpy(np.array([[1.0, 1.0], [-1.0, 0.5]])))
        model[2].bias.zero_()
    model.eval()
    assert verify(model, prop("(assert (>= Y_0 5))"), 30).verdict == "unsat"
    res = verify(model, prop("(assert (>= Y_0 1.9))"), 30)
    assert res.verdict == "sat" and res.details["executor"] == "torch"
    x, y = res.counterexample
    np.testing.assert_allclose(forward(x.numpy()[None])[0], y.numpy(), atol=1e-5)
    assert float(y[0]) >= 1.9


def test_targeted_attack_confirms_a_reachable_disjunct_only(net):
    from lipbound.inputs import resolve_model
    from lipbound.verify.falsify import targeted_attack

    model = resolve_model(net)
    checker = Checker(model, (2,))
    # disjunct 0 is impossible (y0 >= 0 always), disjunct 1 holds near (1, -1) where y0 = 2
    p = prop("(assert (or (and (<= Y_0 -1)) (and (>= Y_0 1.95))))")
    found = targeted_attack(model, p.regions[0], (2,), checker, steps=50, restarts=16,
                            generator=torch.Generator().manual_seed(0))
    assert found is not None
    x, y = found
    ref = ort_output(net, x)
    assert ref[0] >= 1.95 and p.is_counterexample(x, torch.from_numpy(ref.astype(np.float64)))
    impossible = prop("(assert (or (and (<= Y_0 -1)) (and (>= Y_0 5))))")
    assert targeted_attack(model, impossible.regions[0], (2,), checker, steps=50, restarts=4,
                           generator=torch.Generator().manual_seed(0)) is None
