"""Turn schema records into report sections (tables and plots) shared by HTML and Markdown.

Sections appear only when records of their kind are present: summary, output bounds, local
Lipschitz constants (upper vs lower per input), anytime curves, certified accuracy vs radius,
monotonicity, weight audit beside the certified local constants, counterfactual stability.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Plot:
    name: str  # file stem, unique within the report
    caption: str
    png: bytes


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)


def _plots():
    """The plotting module, imported on first use (matplotlib takes seconds to import, and
    most commands never plot)."""
    from lipbound.report import plots  # deferred: heavy optional dependency (matplotlib)

    return plots


def fmt(v: Any, digits: int = 4) -> str:
    """A short cell: numbers to ``digits`` significant digits, lists as their max/min span."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, list):
        nums = [_num(e) for e in v]
        return f"[{fmt(min(nums))}, {fmt(max(nums))}]" if len(v) > 1 else fmt(v[0] if v else None)
    if isinstance(v, (int, float)) or v in ("inf", "-inf"):
        f = _num(v)
        return str(v) if math.isinf(f) else f"{f:.{digits}g}"
    return str(v)


def _num(v: Any) -> float:
    if v is None:
        return math.nan
    if isinstance(v, list):
        return max((_num(e) for e in v), default=math.nan)
    return float(v)


def _min(v: Any) -> float:
    return min(_num(e) for e in v) if isinstance(v, list) and v else _num(v)


def _input_label(r: dict, i: int) -> str:
    idx = (r.get("input") or {}).get("index")
    return str(idx if idx is not None else i)


def summary(records: Sequence[dict]) -> Section:
    models = {r["model"]["hash"]: r["model"].get("name") for r in records}
    kinds: dict[str, int] = defaultdict(int)
    for r in records:
        kinds[r["kind"]] += 1
    env = records[0]["environment"] if records else {}
    rows = [[name or "-", h[:19] + "..."] for h, name in models.items()]
    env_row = [[f"lipbound {records[0]['lipbound']}" if records else "-",
                ", ".join(f"{k} {v}" for k, v in env.items()),
                ", ".join(sorted({r["device"] for r in records}))]]
    return Section("Summary", f"{len(records)} records: "
                   + ", ".join(f"{n} {k}" for k, n in kinds.items()),
                   [Table(["model", "sha256"], rows),
                    Table(["version", "environment", "device"], env_row)])


def output_bounds(records: Sequence[dict]) -> Section:
    rows = []
    for i, r in enumerate(records):
        spec = r["spec"]
        certified = "yes" if spec.get("type") == "margin" and _min(r["lower"]) > 0 else (
            "no" if spec.get("type") == "margin" else "-")
        rows.append([_input_label(r, i), fmt((r.get("input") or {}).get("label")),
                     r["method"], fmt(r["domain"]["norm"]), fmt(r["domain"]["eps"]),
                     spec.get("type", "-"), fmt(_min(r["lower"])), fmt(_num(r["upper"])),
                     certified, fmt(r["time"], 3)])
    text = ("Certified bounds on the specification rows over the input ball. For margin specs "
            "(rows f_label - f_j) the label is certified when every lower bound is > 0.")
    return Section("Output bounds", text, [Table(
        ["input", "label", "method", "norm", "eps", "spec", "min lower", "max upper",
         "certified", "time (s)"], rows)])


def lipschitz(records: Sequence[dict]) -> Section:
    rows, labels, ups, los = [], [], [], []
    for i, r in enumerate(records):
        up, lo = _num(r["upper"]), _num(r["lower"])
        ratio = up / lo if lo > 0 else math.inf
        rows.append([_input_label(r, i), r["method"], fmt(r["domain"]["norm"]),
                     fmt(r["domain"]["eps"]), fmt(up), fmt(lo), fmt(ratio, 3), r["status"],
                     fmt(r["time"], 3)])
        labels.append(f"{_input_label(r, i)}" + (f" {r['method']}" if len(
            {q['method'] for q in records}) > 1 else ""))
        ups.append(up)
        los.append(lo)
    text = ("Local Lipschitz constants over the input ball: the upper bound is certified, the "
            "lower bound is attained (the gradient norm at a witness point in the ball); the "
            "true constant lies between them.")
    png = _plots().upper_vs_lower(labels, ups, los, "Lipschitz constant")
    plot = Plot("lipschitz_upper_lower", "Certified upper vs attained lower local Lipschitz "
                "constant per input", png)
    return Section("Local Lipschitz constants", text, [Table(
        ["input", "method", "norm", "eps", "upper", "lower", "upper/lower", "status",
         "time (s)"], rows)], [plot])


def anytime(records: Sequence[dict]) -> Section:
    traces = {f"{_input_label(r, i)} {r['method']}": r["trace"]
              for i, r in enumerate(records)}
    return Section("Bound vs time", "Anytime curves of branch-and-bound runs: the certified "
                   "upper bound falls and the attained lower bound rises with time.", [],
                   [Plot("bound_vs_time", "Upper and lower bound vs time",
                         _plots().bound_vs_time(traces))])


def accuracy_curves(records: Sequence[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """``{method: (radii, certified accuracy)}``: the fraction of each method's inputs that are
    correctly classified with certified radius >= r (radius = a record's ``lower``)."""
    by_method: dict[str, list[tuple[bool, float]]] = defaultdict(list)
    for r in records:
        inp = r.get("input") or {}
        ok = bool(inp.get("correct")) and r["status"] not in ("abstain",)
        by_method[r["method"]].append((ok, _num(r["lower"]) if r["lower"] is not None else 0.0))
    top = max((rad for pts in by_method.values() for _, rad in pts if math.isfinite(rad)),
              default=0.0)
    grid = [top * k / 100 for k in range(101)] if top > 0 else [0.0]
    return {m: (grid, [sum(ok and rad >= g for ok, rad in pts) / len(pts) for g in grid])
            for m, pts in by_method.items()}


def certified_accuracy(records: Sequence[dict], norm: str) -> Section:
    """Certified accuracy of radius records (all with the same ``norm``)."""
    curves = accuracy_curves(records)
    rows = []
    for m, (_, acc) in curves.items():
        recs = [r for r in records if r["method"] == m]
        radii = sorted(_num(r["lower"]) for r in recs if (r.get("input") or {}).get("correct"))
        attacked = [r for r in recs if (r.get("input") or {}).get("attack_success") is not None]
        robust = (f"{sum(not r['input']['attack_success'] for r in attacked) / len(attacked):.3f}"
                  if attacked else "-")
        rows.append([m, str(len(recs)), f"{acc[0]:.3f}",
                     fmt(radii[len(radii) // 2]) if radii else "-", robust])
    text = ("Certified accuracy at radius r: the fraction of inputs classified correctly whose "
            "certified radius is at least r. 'empirical robust' is the fraction an attack did "
            "not break (an upper estimate of the true robust accuracy at the attack radius).")
    return Section(f"Certified accuracy (l_{norm} radius)", text, [Table(
        ["method", "inputs", "clean certified acc.", "median radius (correct)",
         "empirical robust"], rows)],
        [Plot(f"certified_accuracy_l{norm}", f"Certified accuracy vs l_{norm} radius",
              _plots().certified_accuracy(curves, f"l_{norm}"))])


def _coordinate(point: Any, spec: dict) -> str:
    """The audited feature's value at a (nested-list) witness point, or "-"."""
    if point is None:
        return "-"
    flat = point
    while flat and isinstance(flat[0], list):
        flat = [e for row in flat for e in row]
    j = spec.get("feature")
    return fmt(flat[j]) if isinstance(j, int) and 0 <= j < len(flat) else fmt(point)


def monotonicity(records: Sequence[dict]) -> Section:
    rows, names, lo, up, verdicts = [], [], [], [], []
    for r in records:
        feat = str(r["spec"].get("feature"))
        if r["spec"].get("feature_name"):
            feat += f" ({r['spec']['feature_name']})"
        details = r.get("details") or {}
        rows.append([feat, str(r["spec"].get("output")), r["status"], fmt(r["lower"]),
                     fmt(r["upper"]), _coordinate(details.get("witness"), r["spec"]),
                     fmt(details.get("witness_derivative")),
                     fmt(details.get("support_derivative")),
                     fmt(details.get("domains")), fmt(r["time"], 3)])
        names.append(feat)
        lo.append(_num(r["lower"]))
        up.append(_num(r["upper"]))
        verdicts.append(r["status"])
    text = ("Per feature, certified bounds on d output / d feature over the whole input box. "
            "'increasing' / 'decreasing': the sign is certified; 'not monotone': a witness point "
            "where autograd finds the wrong sign; 'unknown': undecided at the timeout.")
    return Section("Monotonicity", text, [Table(
        ["feature", "output", "verdict", "derivative lower", "derivative upper",
         "witness x_feature", "witness derivative", "support derivative", "domains",
         "time (s)"], rows)],
        [Plot("monotonicity", "Certified derivative range per feature",
              _plots().monotonicity_bars(names, lo, up, verdicts))])


def weights(records: Sequence[dict], lipschitz_records: Sequence[dict]) -> Section:
    tables = []
    for r in records:
        rows = [[s["name"], s["kind"], "x".join(map(str, s["shape"])), fmt(s["spectral_norm"]),
                 fmt(s["condition_number"]), fmt(s["sparsity"], 3)] for s in r["layers"]]
        norms = [_num(s["spectral_norm"]) for s in r["layers"] if s["spectral_norm"] is not None]
        rows.append(["product", "naive global l2 bound", "-",
                     fmt(math.prod(norms)) if norms else "-", "-", "-"])
        tables.append(Table(["layer", "kind", "shape", "spectral norm", "condition number",
                             "sparsity"], rows))
    local = defaultdict(list)
    for r in lipschitz_records:
        local[(r["model"].get("name") or "-", fmt(r["domain"]["norm"]), r["method"])].append(
            _num(r["upper"]))
    if local:
        tables.append(Table(["model", "norm", "method", "inputs", "min certified local",
                             "max certified local"],
                            [[*k, str(len(v)), fmt(min(v)), fmt(max(v))]
                             for k, v in local.items()]))
    text = ("Per layer: spectral norm, condition number and sparsity (fraction of zero weights): "
            "the factors of the naive global bound, beside the certified local constants.")
    return Section("Weight audit", text, tables)


def generic(title: str, records: Sequence[dict]) -> Section:
    rows = [[_input_label(r, i), r["method"], r["status"], fmt(r["lower"]), fmt(r["upper"]),
             fmt(r["gap"]), fmt(r["time"], 3)] for i, r in enumerate(records)]
    return Section(title, "", [Table(["input", "method", "status", "lower", "upper", "gap",
                                      "time (s)"], rows)])


def build(records: Sequence[dict]) -> list[Section]:
    """The report's sections for ``records`` (validated schema records)."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by[r["kind"]].append(r)
    out = [summary(records)]
    if by["output_bounds"]:
        out.append(output_bounds(by["output_bounds"]))
    if by["lipschitz"]:
        out.append(lipschitz(by["lipschitz"]))
    traced = [r for r in records if r.get("trace")]
    if traced:
        out.append(anytime(traced))
    radius: dict[str, list[dict]] = defaultdict(list)
    for r in by["certified_radius"] + by["smoothing"]:
        radius[fmt(r["domain"]["norm"])].append(r)
    out.extend(certified_accuracy(recs, norm) for norm, recs in sorted(radius.items()))
    if by["monotonicity"]:
        out.append(monotonicity(by["monotonicity"]))
    if by["weights"]:
        out.append(weights(by["weights"], by["lipschitz"]))
    if by["counterfactual_stability"]:
        out.append(generic("Counterfactual stability", by["counterfactual_stability"]))
    return out
