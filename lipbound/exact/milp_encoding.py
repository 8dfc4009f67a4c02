"""The MILP encoding of the chain-rule Lipschitz problem: a cvxpy model for :mod:`.milp`.

Encoding (all float64 numpy data, cvxpy model, HiGHS branch and bound):
- one binary d per unstable neuron (l <= 0 <= u), shared by the forward and the backward pass;
- forward: h = k z + (1 - k) r with r = relu(z) by the standard big-M
  r >= 0, r >= z, r <= z - l (1 - d), r <= u d   (d = 1 forces z >= 0, d = 0 forces z <= 0);
- backward, a_{L-1} = W_L^T c, s = k a + (1 - k) w with w = d a, a_{i-1} = W_i^T s; when a is not a
  constant, w = d a by four big-M constraints from interval bounds [la, ua] on a:
  w <= a - la (1 - d), w >= a - ua (1 - d), w <= ua d, w >= la d;
- objective, q = 1: sum_j t_j with t_j = |a_0j| encoded by a sign binary per coordinate whose
  bounds straddle 0 (t_j <= a_j - 2 la_j (1 - sigma_j), t_j <= -a_j + 2 ua_j sigma_j);
  q = inf: t <= +-a_0j + M (1 - sigma_{j,+-}) with one binary per candidate (coordinate, sign)
  pair, sum sigma = 1; pairs whose interval bound cannot beat the gradient at x0 are dropped.

The functions add, in this order, the input set (:func:`encode_input`), the forward pass
(:func:`encode_forward`), the backward pass (:func:`encode_backward`) and the dual-norm objective
(:func:`encode_objective`) to one :class:`MilpModel`; the bounds they use must be sound (see
:mod:`lipbound.exact.milp`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np

from lipbound.exact.domain import ACTIVE


@dataclass
class MilpModel:
    """The cvxpy model under construction.

    ``x`` is the input variable, ``cons`` the constraints in the order they are added and
    ``switches`` one ``(d, P)`` per hidden layer: the binaries of its unstable neurons and the 0/1
    matrix that scatters them into the layer, or ``(None, None)`` when no neuron is unstable.
    """

    x: cp.Variable
    cons: list = field(default_factory=list)
    switches: list = field(default_factory=list)


def objective_plan(q: float, la0: np.ndarray, ua0: np.ndarray, lower0: float):
    """Which coordinates / (coordinate, sign) pairs need sign binaries."""
    if q == 1.0:
        mixed = np.flatnonzero((la0 < 0) & (ua0 > 0))
        return {"mixed": mixed, "n_binaries": int(mixed.size)}
    # q = inf: candidate pairs (j, +1) bounded by ua0_j, (j, -1) bounded by -la0_j
    pairs = []
    for j in range(la0.size):
        for sgn, ub in ((1.0, ua0[j]), (-1.0, -la0[j])):
            if ub >= lower0 and ub > 0:
                pairs.append((j, sgn, float(ub), float(la0[j] if sgn > 0 else -ua0[j])))
    if not pairs:  # only when everything is 0: keep one pair so the model is well formed
        pairs.append((0, 1.0, float(ua0[0]), float(la0[0])))
    return {"pairs": pairs, "n_binaries": 0 if len(pairs) == 1 else len(pairs)}


def encode_input(mlp, ball) -> MilpModel:
    """The input variable constrained to B (its bounding box, and the l1 ball for p = 1)."""
    x = cp.Variable(mlp.in_features, name="x")
    cons = [x >= ball.box_lo, x <= ball.box_hi]
    if ball.p == 1.0:
        cons.append(cp.norm1(x - ball.x0) <= ball.eps)
    return MilpModel(x, cons)


def encode_forward(model: MilpModel, mlp, bounds, status, unstable_idx,
                   margin: float = 0.0):
    """The forward pass: one switch binary and a big-M ReLU per unstable neuron; returns the
    last hidden layer's activations (a cvxpy expression).

    ``margin`` > 0 keeps every unstable neuron's pre-activation at least ``margin`` from its
    kink (z >= margin when active, z <= -margin when not): only patterns whose open regions
    meet B that deeply remain (a subset of the closed-consistency set, for witnesses)."""
    cons = model.cons
    h = model.x
    for i in range(mlp.num_hidden_layers):
        w, b, k = mlp.weights[i], mlp.biases[i], mlp.negative_slopes[i]
        l, u = bounds[i]
        z = w @ h + b
        base = np.where(status[i] == ACTIVE, 1.0, k)
        U = unstable_idx[i]
        if U.size:
            d = cp.Variable(U.size, boolean=True, name=f"d{i}")
            r = cp.Variable(U.size, name=f"r{i}")
            zu = z[U]
            cons += [r >= 0, r >= zu, r <= zu - cp.multiply(l[U], 1 - d), r <= cp.multiply(u[U], d)]
            if margin > 0:
                cons += [zu >= l[U] + cp.multiply(margin - l[U], d),
                         zu <= u[U] - cp.multiply(u[U] + margin, 1 - d)]
            P = np.zeros((U.size, w.shape[0]))
            P[np.arange(U.size), U] = 1.0
            h = cp.multiply(base, z) + (1.0 - k) * (P.T @ r)
        else:
            d, P = None, None
            h = cp.multiply(base, z)
        model.switches.append((d, P))
    return h


def encode_backward(model: MilpModel, mlp, cvec, status, back, unstable_idx):
    """The backward pass ``W_1^T D_1 ... W_L^T c``, the forward switches reused.

    Returns the input gradient: a cvxpy expression, or a numpy constant when no neuron is
    unstable. ``back`` holds sound interval bounds (la, ua) of each layer's backward vector.
    """
    cons = model.cons
    a = mlp.weights[-1].T @ cvec  # numpy constant until the first switch with a binary
    for i in reversed(range(mlp.num_hidden_layers)):
        k = mlp.negative_slopes[i]
        base = np.where(status[i] == ACTIVE, 1.0, k)
        d, P = model.switches[i]
        la, ua = back[i]
        if d is None:
            s = cp.multiply(base, a) if isinstance(a, cp.Expression) else base * a
        else:
            U = unstable_idx[i]
            if isinstance(a, np.ndarray):
                wv = cp.multiply(a[U], d)
            else:
                wv = cp.Variable(U.size, name=f"w{i}")
                au = a[U]
                lu, uu = la[U], ua[U]
                cons += [
                    wv <= au - cp.multiply(lu, 1 - d),
                    wv >= au - cp.multiply(uu, 1 - d),
                    wv <= cp.multiply(uu, d),
                    wv >= cp.multiply(lu, d),
                ]
            s = cp.multiply(base, a) + (1.0 - k) * (P.T @ wv)
        a = mlp.weights[i].T @ s
    return a


def encode_objective(model: MilpModel, q: float, grad, plan: dict, la0, ua0) -> cp.Variable:
    """The variable ``obj`` bounded by ``||grad||_q`` (q = 1 or inf) through ``plan``'s binaries.

    ``(la0, ua0)`` are sound bounds of the gradient, ``plan`` is :func:`objective_plan`'s.
    """
    cons = model.cons
    obj = cp.Variable(name="obj")
    if not isinstance(grad, cp.Expression):
        grad = cp.Constant(grad)
    if q == 1.0:
        mixed = plan["mixed"]
        pos = np.flatnonzero(la0 >= 0)
        neg = np.flatnonzero((ua0 <= 0) & ~(la0 >= 0))
        parts = []
        if pos.size:
            parts.append(cp.sum(grad[pos]))
        if neg.size:
            parts.append(-cp.sum(grad[neg]))
        if mixed.size:
            t = cp.Variable(mixed.size, name="t")
            sig = cp.Variable(mixed.size, boolean=True, name="sigma")
            gm = grad[mixed]
            cons += [
                t <= gm - cp.multiply(2 * la0[mixed], 1 - sig),
                t <= -gm + cp.multiply(2 * ua0[mixed], sig),
            ]
            parts.append(cp.sum(t))
        cons.append(obj == (cp.sum(cp.hstack(parts)) if parts else 0))
    else:
        pairs = plan["pairs"]
        if len(pairs) == 1:
            j, sgn, _, _ = pairs[0]
            cons.append(obj <= sgn * grad[j])
        else:
            tmax = max(pr[2] for pr in pairs)
            sig = cp.Variable(len(pairs), boolean=True, name="sigma")
            idx = np.array([pr[0] for pr in pairs])
            sg = np.array([pr[1] for pr in pairs])
            lows = np.array([pr[3] for pr in pairs])
            big = tmax - lows
            cons += [obj <= cp.multiply(sg, grad[idx]) + cp.multiply(big, 1 - sig),
                     cp.sum(sig) == 1]
        cons.append(obj <= tmax if len(pairs) > 1 else obj <= pairs[0][2])
    return obj
