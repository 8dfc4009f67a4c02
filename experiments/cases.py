"""Benchmark models and points shared by the experiment scripts.

Data comes from ``../shared/benchmarks`` beside the repository (override with the
LIPBOUND_SHARED environment variable). Each case is (name, model, x0 [1, *in], eps,
data_range, anchor) where ``anchor`` holds the reference figures of the shared README.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIPBOUND_SHARED", ROOT.parent / "shared")) / "benchmarks"
VNN = SHARED / "vnncomp2021"


@dataclass
class Case:
    name: str
    model: nn.Module
    x0: torch.Tensor
    eps: float
    data_range: tuple[float, float] | None = None
    anchor: dict = field(default_factory=dict)


def _npz_model(file: str) -> tuple[nn.Module, torch.Tensor]:
    d = np.load(SHARED / "random" / file)
    state = {k: torch.tensor(d[k]) for k in d.files if not k.startswith("__")}
    if file == "cnn8.npz":
        model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                              nn.Flatten(), nn.Linear(64, 10))
    else:
        n_in = state["1.weight"].shape[1]
        width = state["1.weight"].shape[0]
        model = nn.Sequential(nn.Flatten(), nn.Linear(n_in, width), nn.ReLU(),
                              nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    model.load_state_dict(state)
    return model.eval(), torch.tensor(d["__x0"]).float()


def _vnn_point(model: nn.Module, vnnlib: Path, data_range=(0.0, 1.0)) -> torch.Tensor:
    from lipbound.io.vnnlib import center_radius_linf, read_vnnlib

    prop = read_vnnlib(vnnlib)
    region = prop.regions[0]
    if data_range is None:
        x0 = (region.lower + region.upper) / 2
    else:
        x0, _ = center_radius_linf(region.lower, region.upper, data_range)
    return x0.float().reshape(1, *model.input_shape)


def _onnx(path: Path) -> nn.Module:
    from lipbound.io import load_onnx

    return load_onnx(path)


def lipschitz_cases() -> list[Case]:
    """Every row of the anchor table in the shared benchmarks README."""
    cases = []
    anchors = {
        ("mlp16", 0.05): (0.7108, 0.6563, 0.8255, 1.4),
        ("mlp16", 0.10): (0.7475, 0.7264, 1.2077, 0.2),
        ("cnn8", 0.05): (None, 0.8252, 0.9078, 3.3),
        ("cnn8", 0.10): (None, 0.8436, 1.3063, 2.1),
        ("mlp784", 0.005): (None, 2.8523, 4.3308, 0.8),
        ("mlp784", 0.01): (None, 2.8532, 10.508, 1.6),
    }
    for (name, eps), (exact, sampled, ref, t) in anchors.items():
        model, x0 = _npz_model(f"{name}.npz")
        cases.append(Case(f"random/{name}", model, x0, eps, None,
                          {"exact": exact, "sampled": sampled, "auto_lirpa": ref, "time": t}))
    mnist = _onnx(VNN / "mnistfc" / "mnist-net_256x2.onnx")
    x_m = _vnn_point(mnist, VNN / "mnistfc" / "prop_0_0.03.vnnlib")
    for eps, sampled, ref, t in [(0.001, 2.838, 2.993, 4.9), (0.005, 3.370, 4.613, 4.4),
                                 (0.01, 3.370, 39.76, 5.2)]:
        cases.append(Case("mnistfc 256x2 prop_0", mnist, x_m, eps, (0.0, 1.0),
                          {"sampled": sampled, "auto_lirpa": ref, "time": t}))
    acas = _onnx(VNN / "acasxu" / "ACASXU_run2a_1_1_batch_2000.onnx")
    x_a = _vnn_point(acas, VNN / "acasxu" / "prop_3.vnnlib", None)
    cases.append(Case("acasxu 1_1 prop_3 centre", acas, x_a, 0.02, None,
                      {"sampled": 302.0, "auto_lirpa": 54945.0, "time": 1.1}))
    eran = _onnx(VNN / "eran" / "nets" / "ffnnSIGMOID__Point_6x200.onnx")
    x_e = _vnn_point(eran, VNN / "eran" / "specs" / "mnist_spec_idx_7167_eps_0.01200.vnnlib")
    cases.append(Case("eran sigmoid 6x200 img 7167", eran, x_e, 0.002, (0.0, 1.0),
                      {"sampled": 83.10, "auto_lirpa": 104.89, "time": 18.7}))
    avg = _onnx(VNN / "verivital" / "Convnet_avgpool.onnx")
    x_v = _vnn_point(avg, VNN / "verivital" / "specs" / "avgpool_prop_0_0.02.vnnlib")
    cases.append(Case("verivital avgpool prop_0", avg, x_v, 0.02, (0.0, 1.0),
                      {"auto_lirpa": "fails (Pad unsupported)"}))
    return cases


def median_time(fn: Callable[[], object], repeats: int = 5) -> tuple[float, float, object]:
    """(median seconds over ``repeats`` calls, first-call seconds, last result)."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times[0], out
