"""The model zoo (lipbound.models.zoo): output bounds and local Lipschitz constants per model.

Per zoo model, at its ``eps`` (l_inf ball around ``zoo_input(name)``), on the float64 model:

- output bounds, methods ibp / crown / alpha-crown (20 iterations): mean width and wall time,
  lipbound and auto_LiRPA 0.7.1 (``BoundedModule.compute_bounds`` with method 'IBP', 'CROWN',
  'alpha-CROWN', 20 iterations) alternating case by case; an auto_LiRPA failure is recorded as
  ``unsupported: <reason>`` (its 'patches' mode lacks conv1d: then 'matrix' mode; its
  alpha-CROWN fails on float64 models: then the float32 copy, noted). lipbound's width is
  listed also before the rounding allowance ``output_bounds`` adds (its propagation alone,
  what auto_LiRPA reports), and its CROWN width on the float32 model (bounds that also
  contain the float32 forward pass);
- local Lipschitz (crown, l_inf and l_2): certified upper bound, time, and a sampled lower bound
  (largest dual norm of a row's gradient over 4000 points of the ball, then 10 signed-gradient
  ascent steps on that norm from the 8 best points), and their ratio.

Threads pinned to 1. Writes ``experiments/out/bench_zoo.json`` and ``bench_zoo.md``.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python experiments/bench_zoo.py [--models a,b]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import lipbound
from lipbound.models.zoo import ZOO, ZOO_NAMES, zoo_input, zoo_model

METHODS = {"ibp": "IBP", "crown": "CROWN", "alpha-crown": "alpha-CROWN"}
ITERATIONS = 20
DUAL = {math.inf: 1.0, 2.0: 2.0}


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


class _Names(logging.Handler):
    """Collects the op names auto_LiRPA logs when it refuses a model."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("Name: "):
            self.names.append(msg.split(",")[0][6:])


def _lirpa_module(model: nn.Module, x: torch.Tensor, conv_mode: str = "patches"):
    """auto_LiRPA's BoundedModule of ``model``, or the reason it cannot be had."""
    try:
        from auto_LiRPA import BoundedModule
    except Exception as exc:  # not installed: every case is skipped
        return None, f"unsupported: auto_LiRPA not importable ({exc})"
    names = _Names()
    logging.getLogger("auto_LiRPA").addHandler(names)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bm = BoundedModule(model, x, device="cpu", verbose=False,
                               bound_opts={"optimize_bound_args": {"iteration": ITERATIONS},
                                           "conv_mode": conv_mode})
        return bm, ""
    except Exception as exc:
        ops = f" ({', '.join(names.names)})" if names.names else ""
        return None, f"unsupported: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}{ops}"
    finally:
        logging.getLogger("auto_LiRPA").removeHandler(names)


def _lirpa_try(model: nn.Module, x: torch.Tensor, eps: float, method: str):
    """(lower, upper, time, note) from auto_LiRPA: its default patches mode first, 'matrix'
    mode where patches mode lacks an op (conv1d), the float32 copy where it fails on float64."""
    note, conv_mode, dtype = "", "patches", x.dtype
    for _ in range(3):
        m = model if dtype == x.dtype else copy.deepcopy(model).to(dtype)
        bm, why = _lirpa_module(m, x.to(dtype), conv_mode)
        if bm is None:
            raise RuntimeError(why)
        try:
            (lo, up), t = _timed(lambda bm=bm, d=dtype: _lirpa_bounds(bm, x.to(d), eps, method))
            return lo, up, t, note
        except AssertionError as exc:
            if "Patches mode" not in str(exc) or conv_mode == "matrix":
                raise
            conv_mode, note = "matrix", (note + " matrix mode").strip()
        except RuntimeError as exc:
            if ("Double" not in str(exc) and "dtype" not in str(exc)) or dtype == torch.float32:
                raise
            dtype, note = torch.float32, (note + " float32 model").strip()
    raise RuntimeError("no auto_LiRPA configuration ran")


def _lirpa_bounds(bm, x: torch.Tensor, eps: float, method: str):
    from auto_LiRPA import BoundedTensor, PerturbationLpNorm

    bx = BoundedTensor(x, PerturbationLpNorm(norm=math.inf, eps=eps))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lo, up = bm.compute_bounds(x=(bx,), method=METHODS[method])
    return lo.detach()[0], up.detach()[0]


def raw_width(model: nn.Module, x: torch.Tensor, eps: float, method: str) -> float:
    """Mean width of lipbound's propagated bounds before the rounding allowance that
    ``output_bounds`` adds (internal API; same propagation as ``output_bounds``)."""
    from lipbound.api import _setup
    from lipbound.inputs import resolve_model
    from lipbound.propagate import own_rounding
    from lipbound.propagate.driver import bound_graph_spec, prepare_state

    traced, _, C, domain = _setup(resolve_model(model), x, eps, math.inf, None, None,
                                  torch.float64)
    with own_rounding.disabled():
        state = prepare_state(traced.graph, domain, method)
        lo, up = bound_graph_spec(state, traced.graph.output, C.unsqueeze(0), method,
                                  ITERATIONS)
    return float((up - lo).mean())


def output_rows(name: str, model: nn.Module, x: torch.Tensor, eps: float) -> dict:
    row: dict = {}
    for method in METHODS:
        kw = {"iterations": ITERATIONS} if method == "alpha-crown" else {}
        try:
            (lo, up), t = _timed(lambda m=method, kw=kw: lipbound.output_bounds(
                model, x, eps, method=m, progress=False, **kw))
            ours = {"width": float((up - lo).mean()), "time": t,
                    "width_before_rounding": raw_width(model, x, eps, method)}
        except lipbound.LipboundError as exc:
            ours = {"error": f"{type(exc).__name__}: {exc}"[:120]}
        try:
            lo, up, t, note = _lirpa_try(model, x.unsqueeze(0), eps, method)
            w = float((up - lo).mean())
            theirs = {"width": w, "time": t} if math.isfinite(w) else \
                {"error": "unsupported: non-finite bounds"}
            if note:
                theirs["note"] = note
        except Exception as exc:
            msg = str(exc).splitlines()[0][:120] if str(exc) else ""
            theirs = {"error": msg if msg.startswith("unsupported") else
                      f"unsupported: {type(exc).__name__}: {msg}"}
        row[method] = {"lipbound": ours, "auto_LiRPA": theirs}
        print(name, method, json.dumps(row[method]), flush=True)
    return row


def sampled_lower(model: nn.Module, x: torch.Tensor, eps: float, p: float, n: int = 4000,
                  steps: int = 10, seed: int = 0) -> float:
    """max over rows s and points x' of the ball of ||grad f_s(x')||_q: 4000 uniform points
    and box vertices (l_inf) or sphere points (l_2), then ``steps`` ascent steps (signed
    gradient for l_inf, normalised gradient for l_2) from the 8 best points per row."""
    g = torch.Generator().manual_seed(seed)
    d = x.numel()
    if p == math.inf:
        u = torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1
        u[n // 2:] = u[n // 2:].sign()
    else:
        u = torch.randn(n, d, generator=g, dtype=torch.float64)
        u = u / u.norm(dim=1, keepdim=True)
    pts = (x.reshape(1, -1) + eps * u).reshape(n, *x.shape)
    best = 0.0
    K = model(x.unsqueeze(0)).shape[1]
    for s in range(K):
        norms = _grad_norms(model, pts, s, DUAL[p])
        top = pts[norms.topk(8).indices].clone()
        best = max(best, float(norms.max()))
        for _ in range(steps):
            top.requires_grad_(True)
            obj = _grad_norms(model, top, s, DUAL[p], create_graph=True).sum()
            (step,) = torch.autograd.grad(obj, top)
            with torch.no_grad():
                if p == math.inf:
                    top = top + 0.25 * eps * step.sign()
                    top = torch.minimum(torch.maximum(top, x - eps), x + eps)
                else:
                    flat = step.flatten(1)
                    top = top + 0.25 * eps * (flat / flat.norm(dim=1, keepdim=True).clamp(
                        min=1e-300)).reshape(top.shape)
                    delta = (top - x).flatten(1)
                    scale = (eps / delta.norm(dim=1, keepdim=True)).clamp(max=1.0)
                    top = x + (delta * scale).reshape(top.shape)
            best = max(best, float(_grad_norms(model, top, s, DUAL[p]).max()))
    return best


def _grad_norms(model, pts, s, q, create_graph=False):
    pts = pts if pts.requires_grad else pts.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(pts)[:, s].sum(), pts, create_graph=create_graph)
    return torch.linalg.vector_norm(grad.flatten(1), ord=q, dim=1)


def lipschitz_rows(name: str, model: nn.Module, x: torch.Tensor, eps: float) -> dict:
    row: dict = {}
    for label, p in (("l_inf", math.inf), ("l_2", 2.0)):
        try:
            r, t = _timed(lambda p=p: lipbound.local_lipschitz(model, x, eps, norm=p,
                                                               method="crown", progress=False))
            upper = r.value
        except lipbound.LipboundError as exc:
            row[label] = {"error": f"{type(exc).__name__}: {exc}"[:120]}
            continue
        low = max(sampled_lower(model, x, eps, p), float(r.lower.max()))
        row[label] = {"upper": upper, "time": t, "sampled_lower": low,
                      "ratio": upper / low if low > 0 else math.inf}
        print(name, label, json.dumps(row[label]), flush=True)
    return row


def _cell(d: dict, key: str, fmt: str) -> str:
    if key in d:
        return format(d[key], fmt)
    return d.get("error", "-") if key != "time" else "-"


def markdown(results: dict) -> str:
    lines = ["| model | eps | method | lipbound width | before rounding allowance | s "
             "| auto_LiRPA width | s | width ratio (before allowance) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        for method in METHODS:
            a, b = res["outputs"][method]["lipbound"], res["outputs"][method]["auto_LiRPA"]
            ratio = "-"
            if "width" in a and "width" in b:
                raw = a["width_before_rounding"] / b["width"]
                ratio = f"{a['width'] / b['width']:.3f} ({raw:.3f})"
            note = f" ({b['note']})" if "note" in b else ""
            lines.append(f"| {name} | {res['eps']:g} | {method} | {_cell(a, 'width', '.4g')} "
                         f"| {_cell(a, 'width_before_rounding', '.4g')} "
                         f"| {_cell(a, 'time', '.2f')} | {_cell(b, 'width', '.4g')}{note} "
                         f"| {_cell(b, 'time', '.2f')} | {ratio} |")
        lines.append(f"| {name} | {res['eps']:g} | crown, float32 model | "
                     f"{_cell(res['crown_f32'], 'width', '.4g')} | | "
                     f"{_cell(res['crown_f32'], 'time', '.2f')} | | | |")
    lines += ["", "| model | norm | crown upper | s | sampled lower | upper/lower |",
              "|---|---|---|---|---|---|"]
    for name, res in results.items():
        for label, r in res["lipschitz"].items():
            if "error" in r:
                lines.append(f"| {name} | {label} | {r['error']} | | | |")
                continue
            lines.append(f"| {name} | {label} | {r['upper']:.4g} | {r['time']:.2f} | "
                         f"{r['sampled_lower']:.4g} | {r['ratio']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default=",".join(ZOO_NAMES))
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "bench_zoo.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {}
    for name in args.models.split(","):
        eps = ZOO[name].eps
        model, x = zoo_model(name, dtype=torch.float64), zoo_input(name).double()
        lipbound.output_bounds(model, x, eps, method="ibp", progress=False)  # warm-up (trace)
        res = {"eps": eps, "outputs": output_rows(name, model, x, eps)}
        m32, x32 = zoo_model(name), zoo_input(name)
        try:
            lipbound.output_bounds(m32, x32, eps, method="ibp", progress=False)  # warm-up
            (lo, up), t = _timed(lambda m=m32, x=x32, e=eps: lipbound.output_bounds(
                m, x, e, progress=False))
            res["crown_f32"] = {"width": float((up - lo).mean()), "time": t}
        except lipbound.LipboundError as exc:
            res["crown_f32"] = {"error": f"{type(exc).__name__}"}
        res["lipschitz"] = lipschitz_rows(name, model, x, eps)
        results[name] = res
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    table = markdown(results)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
