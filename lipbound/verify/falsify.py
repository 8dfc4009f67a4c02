"""Looking for counterexamples: concrete points, PGD on the violation, and re-checking them.

Nothing here proves anything. A point is reported only after :class:`Checker` has re-run the
network on exactly that input (onnxruntime on the original file when the model came from ONNX,
otherwise the torch model itself) and found it inside the box with an output that satisfies a
disjunct with no tolerance.
"""

from __future__ import annotations

import gzip
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from lipbound.attack import box_minimize
from lipbound.io.vnnlib import InputRegion


def model_dtype(model: nn.Module) -> torch.dtype:
    param = next(iter(model.parameters()), None)
    return param.dtype if param is not None else torch.float32


def snap_box(lower: Tensor, upper: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor] | None:
    """The largest box of ``dtype`` numbers inside ``[lower, upper]`` (float64), or None if empty.

    Attacks run on this box, so every point they return is representable in the executor's
    dtype *and* lies in the original box.
    """
    lo = lower.to(dtype)
    up = upper.to(dtype)
    lo = torch.where(lo.double() < lower, torch.nextafter(lo, torch.full_like(lo, math.inf)), lo)
    up = torch.where(up.double() > upper, torch.nextafter(up, torch.full_like(up, -math.inf)), up)
    if bool((lo > up).any()):
        return None
    return lo, up


def violation(y: Tensor, C: Tensor, d: Tensor, owner: Tensor, n_disjuncts: int) -> Tensor:
    """``min over disjuncts of max over its rows (C_j y - d_j)``: <= 0 iff y is unsafe. y [R, K]."""
    v = y @ C.to(y.dtype).T - d.to(y.dtype)  # [R, M]
    out = torch.full((y.shape[0], n_disjuncts), -math.inf, dtype=y.dtype, device=y.device)
    out = out.scatter_reduce(1, owner.to(y.device).expand_as(v), v, reduce="amax",
                             include_self=True)
    return out.min(dim=1).values


class Checker:
    """Re-evaluates candidate counterexamples on the reference executor."""

    def __init__(self, model: nn.Module, in_shape: tuple[int, ...]) -> None:
        self.model = model
        self.in_shape = in_shape
        self.dtype = model_dtype(model)
        self.session = None
        self.executor = "torch"
        source = getattr(model, "source", None)
        if isinstance(source, str) and (source.endswith(".onnx") or source.endswith(".onnx.gz")):
            self._open_onnxruntime(Path(source), getattr(model, "onnx_input_shape", ()))

    def _open_onnxruntime(self, path: Path, declared: tuple) -> None:
        try:
            import onnxruntime as ort  # deferred: heavy optional dependency (onnxruntime)
        except ImportError:  # pragma: no cover - onnxruntime is a declared dependency
            return
        if not path.is_file():
            return
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.ort_shape = tuple(d if isinstance(d, int) else 1 for d in declared) or (-1,)
        self.dtype = torch.float64 if inp.type == "tensor(double)" else torch.float32
        self.executor = "onnxruntime"

    def outputs(self, x: Tensor) -> Tensor:
        """Outputs [R, K] (float64 copies of the executor's values) at inputs x [R, n]."""
        x = x.to(self.dtype)
        if self.session is None:
            with torch.no_grad():
                y = self.model(x.reshape(-1, *self.in_shape).to(model_dtype(self.model)))
            return y.reshape(x.shape[0], -1).double()
        ys = []
        for row in x.cpu().numpy():
            out = self.session.run(None, {self.input_name: row.reshape(self.ort_shape)})[0]
            ys.append(np.asarray(out, dtype=np.float64).reshape(-1))
        return torch.from_numpy(np.stack(ys))

    def confirm(self, region: InputRegion, x: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(x, y)`` (flat float64) if ``x`` (in the executor's dtype) is a real counterexample."""
        x = x.reshape(1, -1).to(self.dtype)
        x64 = x.double().reshape(-1).cpu()
        if not region.contains(x64):
            return None
        y = self.outputs(x)[0]
        if not torch.isfinite(y).all() or not region.is_counterexample(x64, y):
            return None
        return x64, y


def _stacked(region: InputRegion, device: torch.device):
    C, d, owner = region.spec()
    return C.to(device), d.to(device), owner.to(device).unsqueeze(0), len(region.disjuncts)


def screen(model: nn.Module, region: InputRegion, in_shape: tuple[int, ...], checker: Checker,
           x: Tensor) -> tuple[Tensor, Tensor] | None:
    """Evaluate the model at points x [R, n] of the box; confirm the most violating one."""
    if not region.disjuncts:
        return None
    C, d, owner, nd = _stacked(region, x.device)
    with torch.no_grad():
        y = model(x.reshape(-1, *in_shape).to(model_dtype(model))).reshape(x.shape[0], -1)
    v = violation(y.double(), C, d, owner, nd)
    order = torch.argsort(v)
    for i in order[: 3].tolist():
        if float(v[i]) > 1e-6:
            break
        found = checker.confirm(region, x[i])
        if found is not None:
            return found
    return None


def random_points(region: InputRegion, n: int, dtype: torch.dtype,
                  generator: torch.Generator) -> Tensor | None:
    """The centre of the (snapped) box and n - 1 uniform points of it, [n, num_inputs]."""
    box = snap_box(region.lower, region.upper, dtype)
    if box is None:
        return None
    lo, up = box
    u = torch.rand((n, lo.numel()), generator=generator, dtype=torch.float64)
    u[0] = 0.5
    x = (lo.double() + u * (up.double() - lo.double())).to(dtype)
    return torch.minimum(torch.maximum(x, lo), up)


def _region_box(model: nn.Module, region: InputRegion, in_shape: tuple[int, ...]
                ) -> tuple[Tensor, Tensor] | None:
    """The region's box in the model's dtype, shaped like one input, or None if empty."""
    box = snap_box(region.lower, region.upper, model_dtype(model))
    return None if box is None else tuple(t.reshape(in_shape) for t in box)


def attack(model: nn.Module, region: InputRegion, in_shape: tuple[int, ...], checker: Checker,
           *, steps: int, restarts: int, generator: torch.Generator
           ) -> tuple[Tensor, Tensor] | None:
    """PGD on the violation over the region's box; a confirmed counterexample or None."""
    box = _region_box(model, region, in_shape) if region.disjuncts else None
    if box is None:
        return None
    lo, up = box
    C, d, owner, nd = _stacked(region, lo.device)

    def objective(z: Tensor) -> Tensor:
        y = model(z).reshape(z.shape[0], -1)
        return violation(y, C, d, owner, nd)

    x, v = box_minimize(objective, lo, up, steps=steps, restarts=restarts, generator=generator)
    if v > 1e-6:
        return None
    x = torch.minimum(torch.maximum(x.detach(), lo), up)
    return checker.confirm(region, x.reshape(-1))


def targeted_attack(model: nn.Module, region: InputRegion, in_shape: tuple[int, ...],
                    checker: Checker, *, steps: int, restarts: int,
                    generator: torch.Generator, max_disjuncts: int = 16
                    ) -> tuple[Tensor, Tensor] | None:
    """PGD on each disjunct of the region separately, most violated at the centre first.

    The joint objective (min over disjuncts) can stall when two disjuncts trade places during
    the ascent; one attack per disjunct does not. Regions with more than ``max_disjuncts``
    disjuncts are skipped. A confirmed counterexample or None.
    """
    nd = len(region.disjuncts)
    box = _region_box(model, region, in_shape) if 0 < nd <= max_disjuncts else None
    if box is None:
        return None
    lo, up = box
    with torch.no_grad():
        y0 = model(((lo + up) / 2).unsqueeze(0)).reshape(1, -1)
    order = sorted(range(nd), key=lambda i: float(_disjunct_violation(y0, region, i)[0]))
    for i in order:
        C, d = region.disjuncts[i]
        if C.shape[0] == 0:
            continue

        def objective(z: Tensor, i: int = i) -> Tensor:
            return _disjunct_violation(model(z).reshape(z.shape[0], -1), region, i)

        x, v = box_minimize(objective, lo, up, steps=steps, restarts=restarts,
                            generator=generator)
        if v > 1e-6:
            continue
        found = checker.confirm(region, torch.minimum(torch.maximum(x.detach(), lo), up)
                                .reshape(-1))
        if found is not None:
            return found
    return None


def _disjunct_violation(y: Tensor, region: InputRegion, i: int) -> Tensor:
    """``max_j (C_j y - d_j)`` over the rows of disjunct i: <= 0 iff y satisfies it. y [R, K]."""
    C, d = region.disjuncts[i]
    return (y @ C.to(y.dtype).T - d.to(y.dtype)).max(dim=1).values



class SearchWitness:
    """The ``witness_check`` of a verification search (:class:`lipbound.bab.anytime.Anytime`):
    every batch of attained points (box centres, LP points) is screened, and its most
    violating points are confirmed on the reference executor (:class:`Checker`); a pool of the
    ``pool`` most violating points seen so far seeds PGD on the region's violation, for at
    most ``share`` of the search's time. Nothing here proves anything: a counterexample is
    reported only once :meth:`Checker.confirm` accepts it (then ``found`` holds it).
    """

    def __init__(self, model: nn.Module, region: InputRegion, in_shape: tuple[int, ...],
                 checker: Checker, generator: torch.Generator, *, share: float = 0.1,
                 pool: int = 8, steps: int = 30) -> None:
        self.model, self.region, self.in_shape, self.checker = model, region, in_shape, checker
        self.gen, self.share, self.size, self.steps = generator, share, pool, steps
        self.box = _region_box(model, region, in_shape)
        self.found: tuple[Tensor, Tensor] | None = None
        self.start, self.pgd_time = time.perf_counter(), 0.0
        self.pool: Tensor | None = None
        self.pool_v: Tensor | None = None

    def __call__(self, pts: Tensor, viol: Tensor) -> bool:
        if self.box is None or not self.region.disjuncts:
            return False
        lo, up = (t.reshape(-1) for t in self.box)
        x = torch.minimum(torch.maximum(pts.reshape(pts.shape[0], -1).to(lo.dtype), lo), up)
        order = torch.argsort(viol)
        for i in order[:3].tolist():
            if float(viol[i]) > 1e-6:
                break
            self.found = self.checker.confirm(self.region, x[i])
            if self.found is not None:
                return True
        self._merge(x[order[: self.size]], viol[order[: self.size]].to(torch.float64))
        if self.pgd_time <= self.share * (time.perf_counter() - self.start):
            t0 = time.perf_counter()
            self.found = self._pgd()
            self.pgd_time += time.perf_counter() - t0
        return self.found is not None

    def _merge(self, x: Tensor, v: Tensor) -> None:
        if self.pool is not None:
            x, v = torch.cat([self.pool, x]), torch.cat([self.pool_v, v])
        keep = torch.argsort(v)[: self.size]
        self.pool, self.pool_v = x[keep], v[keep]

    def _pgd(self) -> tuple[Tensor, Tensor] | None:
        """PGD on the region's violation from the pool's points (plus as many random
        restarts); the pool's best point is replaced by what PGD reached from it."""
        lo, up = self.box
        C, d, owner, nd = _stacked(self.region, lo.device)

        def objective(z: Tensor) -> Tensor:
            return violation(self.model(z).reshape(z.shape[0], -1), C, d, owner, nd)

        starts = self.pool.reshape(-1, *self.in_shape)
        x, v = box_minimize(objective, lo, up, steps=self.steps, restarts=2 * len(starts),
                            x_init=starts, generator=self.gen)
        x = torch.minimum(torch.maximum(x.detach(), lo), up).reshape(-1)
        self._merge(x[None], torch.tensor([v], dtype=torch.float64))
        return self.checker.confirm(self.region, x) if v <= 1e-6 else None
