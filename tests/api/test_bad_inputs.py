"""Bad input through the API (issue 14): a lipbound error raised before any work, never a NaN
"certified" result, never a raw Python/torch error, and the user's model left unchanged."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import lipbound
from lipbound import audit
from lipbound.errors import (
    InputError,
    LipboundError,
    ModelModeError,
    UnsupportedModelError,
)
from lipbound.exact import exact_local_lipschitz
from lipbound.io import parse_vnnlib
from lipbound.smoothing import Smooth
from lipbound.verify import verify

ROOT = Path(__file__).resolve().parents[2]
X = torch.tensor([0.2, -0.3])
PROP = """(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(assert (>= X_0 {lo}))
(assert (<= X_0 {hi}))
(assert (>= X_1 -1))
(assert (<= X_1 1))
(assert (>= Y_0 100))
"""


def flat_mlp() -> nn.Module:
    """2 -> 6 -> 2 ReLU network, eval mode (also a CLI factory: tests.api.test_bad_inputs:...)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 2)).eval()


def half_mlp() -> nn.Module:
    """The same network in float16 (a CLI factory)."""
    return flat_mlp().half()


def bn_mlp(kind: str = "1d") -> nn.Module:
    """A 2 -> 2 network with BatchNorm (1d, or 2d on a [1, 2, 1] view), in TRAINING mode, with
    running statistics that a training-mode forward pass would change."""
    torch.manual_seed(1)
    if kind == "1d":
        layers = [nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)]
    else:
        layers = [nn.Unflatten(1, (1, 2, 1)), nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.ReLU(),
                  nn.Flatten(), nn.Linear(4, 2)]
    model = nn.Sequential(*layers)
    bn = next(m for m in model if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)))
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return model


def snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    """Copies of every state_dict tensor (buffers included) and every module's training flag."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, {name: m.training for name, m in model.named_modules()}


def assert_unchanged(model: nn.Module, snap) -> None:
    state, flags = snap
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), f"{k} changed"
    assert {name: m.training for name, m in model.named_modules()} == flags


# every entry point that runs a model, as f(model) on the 2 -> 2 networks above
ENTRY_POINTS: dict[str, Callable[[nn.Module], object]] = {
    "output_bounds": lambda m: lipbound.output_bounds(m, X, 0.1),
    "output_bounds bab": lambda m: lipbound.output_bounds(m, X, 0.1, method="bab", timeout=5,
                                                          progress=False),
    "jacobian_bounds": lambda m: lipbound.jacobian_bounds(m, X, 0.1),
    "local_lipschitz": lambda m: lipbound.local_lipschitz(m, X, 0.1),
    "local_lipschitz exact": lambda m: lipbound.local_lipschitz(m, X, 0.1, method="exact"),
    "prove_outputs": lambda m: lipbound.prove_outputs(m, X, 0.1, torch.eye(2), [-9.0, -9.0],
                                                      timeout=5, progress=False),
    "exact_local_lipschitz": lambda m: exact_local_lipschitz(m, X, 0.1),
    "Smooth": lambda m: Smooth(m, 2, 0.25),
    "audit.monotonicity": lambda m: audit.monotonicity(m, -torch.ones(2), torch.ones(2),
                                                       timeout=5, progress=False),
    "audit.robustness": lambda m: audit.robustness(m, X[None], torch.tensor([0]), eps_max=0.1,
                                                   progress=False),
    "audit.counterfactual_stability": lambda m: audit.counterfactual_stability(m, X, 0.1),
    "audit.weights": lambda m: audit.weights(m, input_shape=(2,)),
    "verify": lambda m: verify(m, parse_vnnlib(PROP.format(lo=-1, hi=1)), 10),
}


@pytest.mark.parametrize("kind", ["1d", "2d"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_training_mode_is_refused_before_the_model_runs(entry, kind):
    model = bn_mlp(kind)
    snap = snapshot(model)
    with pytest.raises(ModelModeError, match=r"training mode.*BatchNorm.*model\.eval\(\)"):
        ENTRY_POINTS[entry](model)
    assert_unchanged(model, snap)  # running statistics, num_batches_tracked, training flags


def test_training_mode_names_the_module_and_smooth_checks_at_every_call():
    model = bn_mlp("1d")
    with pytest.raises(ModelModeError, match=r"'1' \(BatchNorm1d\)"):
        lipbound.output_bounds(model, X, 0.1)
    model.eval()
    smooth = Smooth(model, 2, 0.25)
    model[1].train()  # one submodule back in training mode after Smooth was built
    snap = snapshot(model)
    with pytest.raises(ModelModeError):
        smooth.certify(X, n0=10, n=20, seed=0)
    with pytest.raises(ModelModeError):
        smooth.predict(X, n=20, alpha=0.01, seed=0)
    assert_unchanged(model, snap)


@pytest.mark.parametrize("entry", ["output_bounds", "output_bounds bab", "jacobian_bounds",
                                   "local_lipschitz", "local_lipschitz exact", "prove_outputs",
                                   "audit.counterfactual_stability", "verify"])
def test_eval_mode_batchnorm_model_is_not_mutated_by_a_run(entry):
    model = bn_mlp("1d").eval()
    snap = snapshot(model)
    ENTRY_POINTS[entry](model)
    assert_unchanged(model, snap)


def _case(name: str, call: Callable[[nn.Module], object], message: str,
          error: type[Exception] = InputError):
    return pytest.param(call, error, message, id=name)


PROVE = {"spec": torch.eye(2), "prove_above": [0.0, 0.0], "progress": False}
BAB = {"method": "bab", "progress": False}

# calls on the eval-mode BatchNorm network: (call, exception type, message)
BAD_CALLS = [
    _case("eps overflow", lambda m: lipbound.output_bounds(m, X, 1e308),
          r"bounds overflow: output bounds are not finite at eps 1e\+308; eps is too large"),
    _case("eps overflow bab", lambda m: lipbound.output_bounds(m, X, 1e308, timeout=2, **BAB),
          "bounds overflow"),
    _case("eps overflow prove", lambda m: lipbound.prove_outputs(m, X, 1e308, **PROVE),
          "bounds overflow"),
    _case("eps overflow exact", lambda m: lipbound.local_lipschitz(m, X, 1e308, method="exact"),
          "bounds overflow: the MILP's big-M bounds"),
    _case("data_range nan", lambda m: lipbound.output_bounds(m, X, 0.1, data_range=(math.nan, 1)),
          "data_range must hold finite numbers"),
    _case("data_range inf",
          lambda m: lipbound.local_lipschitz(m, X, 0.1, data_range=(-1, math.inf)),
          "data_range must hold finite numbers"),
    _case("data_range nan exact",
          lambda m: lipbound.local_lipschitz(m, X, 0.1, method="exact", data_range=(math.nan, 1)),
          "data_range must hold finite numbers"),
    _case("data_range inverted", lambda m: lipbound.jacobian_bounds(m, X, 0.1, data_range=(1, 0)),
          "data_range lower bound exceeds its upper bound"),
    _case("data_range shape",
          lambda m: lipbound.output_bounds(m, X, 0.1, data_range=(torch.zeros(3), 1)),
          "data_range bounds do not broadcast"),
    _case("dtype int32", lambda m: lipbound.output_bounds(m, X, 0.1, dtype=torch.int32),
          "dtype must be torch.float32 or torch.float64, got torch.int32"),
    _case("dtype float16", lambda m: lipbound.output_bounds(m, X, 0.1, dtype=torch.float16),
          "torch.float16 is too low a precision.*pass dtype=torch.float32"),
    _case("dtype bfloat16", lambda m: lipbound.jacobian_bounds(m, X, 0.1, dtype=torch.bfloat16),
          "too low a precision"),
    _case("dtype float16 lipschitz",
          lambda m: lipbound.local_lipschitz(m, X, 0.1, dtype=torch.float16),
          "too low a precision"),
    _case("dtype float16 exact",
          lambda m: lipbound.local_lipschitz(m, X, 0.1, method="exact", dtype=torch.float16),
          "too low a precision"),
    _case("timeout nan bab", lambda m: lipbound.output_bounds(m, X, 0.1, timeout=math.nan, **BAB),
          r"timeout must be a finite number of seconds > 0 or None \(no limit\), got nan"),
    _case("timeout nan lipschitz",
          lambda m: lipbound.local_lipschitz(m, X, 0.1, timeout=math.nan, **BAB), "timeout"),
    _case("timeout nan exact",
          lambda m: lipbound.local_lipschitz(m, X, 0.1, method="exact", timeout=math.nan),
          "timeout"),
    _case("timeout inf prove", lambda m: lipbound.prove_outputs(m, X, 0.1, timeout=math.inf,
                                                                 **PROVE), "timeout"),
    _case("timeout bool", lambda m: lipbound.output_bounds(m, X, 0.1, timeout=True, **BAB),
          "timeout"),
    _case("timeout nan verify",
          lambda m: verify(m, parse_vnnlib(PROP.format(lo=-1, hi=1)), math.nan), "timeout"),
    _case("eps True", lambda m: lipbound.output_bounds(m, X, True),
          "eps must be a number, got True"),
    _case("eps False", lambda m: lipbound.local_lipschitz(m, X, False), "eps must be a number"),
    _case("iterations -2",
          lambda m: lipbound.output_bounds(m, X, 0.1, method="alpha-crown", iterations=-2),
          "iterations must be an integer >= 1, got -2"),
    _case("iterations float", lambda m: lipbound.local_lipschitz(m, X, 0.1, iterations=2.5),
          "iterations must be an integer"),
    _case("n_samples 0", lambda m: lipbound.local_lipschitz(m, X, 0.1, n_samples=0),
          "n_samples must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize("call, error, message", BAD_CALLS)
def test_bad_arguments_raise_lipbound_errors_and_leave_the_model(call, error, message):
    model = bn_mlp("1d").eval()
    snap = snapshot(model)
    with pytest.raises(error, match=message):
        call(model)
    assert_unchanged(model, snap)


def test_no_certified_result_holds_nan():
    """Overflowing bounds are refused whichever bound overflows: a model whose Jacobian bound
    exceeds float64 gets InputError from the Lipschitz and Jacobian entry points too."""
    model = flat_mlp()
    with torch.no_grad():
        for lin in (model[0], model[2]):
            lin.weight.mul_(1e160)
    for call in (lambda: lipbound.local_lipschitz(model, X, 0.1),
                 lambda: lipbound.jacobian_bounds(model, X, 0.1)):
        with pytest.raises(InputError, match="bounds overflow"):
            call()
    lo, up = lipbound.output_bounds(flat_mlp(), X, 1e3)  # large but representable: fine
    assert bool(torch.isfinite(lo).all() and torch.isfinite(up).all())


@pytest.mark.parametrize("model, error, message", [
    (None, InputError, "model must be a torch.nn.Module, got NoneType"),
    ("not_a_model", InputError, "must be an ONNX file"),
    (flat_mlp().half(), UnsupportedModelError, r"float16 weights.*model\.float\(\)"),
    (flat_mlp().bfloat16(), UnsupportedModelError, r"bfloat16 weights.*model\.float\(\)"),
])
@pytest.mark.parametrize("entry", ["output_bounds", "jacobian_bounds", "local_lipschitz",
                                   "local_lipschitz exact", "prove_outputs",
                                   "exact_local_lipschitz", "audit.monotonicity",
                                   "audit.counterfactual_stability", "verify"])
def test_bad_models_are_refused_before_tracing(entry, model, error, message):
    if isinstance(model, str) and entry.startswith(("audit", "exact")):
        message = "torch.nn.Module"  # paths are the bound API's (resolve_model) only
    snap = snapshot(model) if isinstance(model, nn.Module) else None
    with pytest.raises(error, match=message):
        ENTRY_POINTS[entry](model)
    if snap is not None:
        assert_unchanged(model, snap)


def test_smooth_refuses_a_missing_model_and_bad_counts():
    with pytest.raises(InputError, match="torch.nn.Module, got NoneType"):
        Smooth(None, 2, 0.25)
    smooth = Smooth(flat_mlp(), 2, 0.25)
    for kw, name in (({"n": 0}, "n"), ({"n0": -1}, "n0"), ({"batch_size": True}, "batch_size")):
        with pytest.raises(InputError, match=f"{name} must be an integer >= 1"):
            smooth.certify(X, **{"n0": 10, "n": 10, **kw})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_loading_a_model_on_a_missing_device():
    for device in ("cuda", "cuda:1"):
        with pytest.raises(InputError, match="CUDA is not available"):
            lipbound.models.load("digits-mlp", device=device)
    with pytest.raises(InputError, match="not a device name"):
        lipbound.models.load("digits-mlp", device="gpu-please")


def test_vnnlib_box_with_lower_above_upper_is_an_error():
    with pytest.raises(InputError, match="input box is empty: X_0 has lower bound 1 > upper "
                                         "bound 0"):
        parse_vnnlib(PROP.format(lo=1, hi=0), "p.vnnlib")
    assert len(parse_vnnlib(PROP.format(lo=0, hi=0)).regions) == 1  # a point is a box


_BANNER_SCRIPT = """
import json
import numpy as np
import torch
from lipbound.bab.lp import MlpLayer, sign_lp
from lipbound.exact import exact_local_lipschitz
from tests.api.test_bad_inputs import flat_mlp

layer = MlpLayer("z", np.eye(2), np.zeros(2), 0.0)
out = MlpLayer("y", np.eye(2), np.zeros(2), None)
ans = sign_lp([layer, out], -np.ones(2), np.ones(2), [(-np.ones(2), np.ones(2))],
              [np.array([1, 0])], 5.0)
res = exact_local_lipschitz(flat_mlp(), torch.tensor([0.2, -0.3]), 0.5)
print(json.dumps({"lp": ans.status, "exact": res.status}))
"""


def test_highs_prints_nothing_on_stdout():
    """A fresh process (HiGHS prints its banner once per process) that solves an LP through
    highspy and a MILP through cvxpy: stdout holds only the JSON it prints."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", _BANNER_SCRIPT], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"lp": "feasible", "exact": "certified"}
    assert "HiGHS" not in run.stdout


def test_lipbound_errors_keep_their_builtin_bases():
    """The new refusals stay catchable as the built-in errors callers already catch."""
    assert issubclass(InputError, ValueError) and issubclass(UnsupportedModelError, TypeError)
    assert issubclass(ModelModeError, LipboundError)
