"""The report's plots, one function each; each returns PNG bytes (matplotlib, Agg backend).

Figures are built with ``matplotlib.figure.Figure`` and an Agg canvas, never pyplot, so no
display or global state is touched.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

VERDICT_COLORS = {"increasing": "#2a9d8f", "decreasing": "#457b9d",
                  "not monotone": "#e63946", "unknown": "#adb5bd"}


def _figure(width: float = 6.0, height: float = 3.6) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _finite(v: object) -> float:
    """A plottable float: "inf"/None -> nan."""
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def certified_accuracy(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                       norm: str = "") -> bytes:
    """Certified accuracy vs radius: one step line per method (``{method: (radii, acc)}``)."""
    fig, ax = _figure()
    for method, (radii, acc) in curves.items():
        ax.step(list(radii), list(acc), where="post", label=method)
    ax.set_xlabel(f"radius{f' ({norm})' if norm else ''}")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend()
    return png(fig)


def bound_vs_time(traces: Mapping[str, Sequence[Sequence[float]]]) -> bytes:
    """Anytime curves: upper (solid) and lower (dashed) bound vs time, per run."""
    fig, ax = _figure()
    for i, (label, trace) in enumerate(traces.items()):
        t = [_finite(p[0]) for p in trace]
        color = f"C{i % 10}"
        ax.step(t, [_finite(p[1]) for p in trace], where="post", color=color,
                label=f"{label} upper")
        ax.step(t, [_finite(p[2]) for p in trace], where="post", color=color, ls="--",
                label=f"{label} lower")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("bound")
    ax.grid(alpha=0.3)
    if traces:
        ax.legend(fontsize="small")
    return png(fig)


def upper_vs_lower(labels: Sequence[str], upper: Sequence[float],
                   lower: Sequence[float], ylabel: str = "bound") -> bytes:
    """Per input: the certified upper bound and the attained lower bound, joined by a bar."""
    fig, ax = _figure(max(6.0, 0.35 * len(labels)), 3.6)
    xs = list(range(len(labels)))
    up = [_finite(v) for v in upper]
    lo = [_finite(v) for v in lower]
    ax.vlines(xs, lo, up, color="#adb5bd", lw=3)
    ax.scatter(xs, up, marker="v", color="#e63946", label="upper (certified)", zorder=3)
    ax.scatter(xs, lo, marker="^", color="#2a9d8f", label="lower (attained)", zorder=3)
    ax.set_xticks(xs, list(labels), rotation=90 if len(labels) > 12 else 0)
    ax.set_xlabel("input")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return png(fig)


def monotonicity_bars(features: Sequence[str], lower: Sequence[float], upper: Sequence[float],
                      verdicts: Sequence[str]) -> bytes:
    """Per feature: the certified range [lower, upper] of the derivative, coloured by verdict."""
    fig, ax = _figure(6.0, max(2.5, 0.35 * len(features) + 1.0))
    ys = list(range(len(features)))
    lo = [_finite(v) for v in lower]
    widths = [_finite(u) - a for u, a in zip(upper, lo)]
    colors = [VERDICT_COLORS.get(v, "#adb5bd") for v in verdicts]
    ax.barh(ys, widths, left=lo, color=colors, height=0.6)
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(ys, list(features))
    ax.invert_yaxis()
    ax.set_xlabel("d output / d feature (certified range)")
    handles = [Patch(color=c, label=v) for v, c in VERDICT_COLORS.items() if v in set(verdicts)]
    if handles:
        ax.legend(handles=handles, fontsize="small")
    return png(fig)
