"""``verify``: decide a VNN-LIB property for a network within a time limit.

Stages, while time remains (each region keeps the list of its disjuncts not yet refuted):

1. screening: the model at the centre and 63 random points of every box;
2. CROWN bounds on every region, then a short attack on the violation of every region (every
   attack takes vertex steps, then PGD: :func:`lipbound.attack.box_minimize`);
3. alpha-CROWN on the regions still open, then a longer attack on the whole violation and
   one attack per disjunct (at most 16 disjuncts per region);
4. branch and bound: the one search of :mod:`lipbound.bab.search` towards the proof goals
   (:func:`lipbound.prove_outputs`, brancher "auto": input halves on low-dimensional inputs,
   ReLU signs otherwise); its attained points are screened and seed PGD
   (:class:`~lipbound.verify.falsify.SearchWitness`), so it also finds counterexamples;
   where the MILP stage applies to an open region, the search leaves it ``MILP_SHARE`` of
   the time left;
5. on ReLU / LeakyReLU MLPs whose alpha-CROWN bounds leave at most ``milp.MAX_UNSTABLE``
   neurons unstable, one MILP per region still open (:mod:`lipbound.verify.milp`): it
   refutes every open disjunct or finds a counterexample candidate. After the search, so
   that what the search decides quickly costs no MILP time, and the MILP sees only the
   disjuncts the search left open;
6. the same search with input halves, for regions of more than ``INPUT_SPLIT_MAX_DIM``
   (where step 4 split signs) and at most ``SPLIT_MAX_INPUTS`` inputs;
7. further attack rounds;
8. on regions of at most ``SAMPLE_MAX_INPUTS`` inputs, uniform sampling of the box for
   ``SAMPLE_SHARE`` of the limit (at most 30 s; the stages before it leave that time); "unknown"
   if nothing is found.

The verdict is "sat" as soon as a counterexample is confirmed (see
:mod:`lipbound.verify.falsify`), "unsat" only when every disjunct of every region is refuted by
certified bounds, "timeout" when the limit expires first. Bounds treat the network's weights as
exact real numbers (the usual VNN-COMP convention); counterexamples are checked on the float
executor.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lipbound.api import INPUT_SPLIT_MAX_DIM
from lipbound.errors import InputError, ShapeError
from lipbound.inputs import check_timeout, get_graph, resolve_model
from lipbound.io.vnnlib import InputRegion, VnnlibProperty
from lipbound.progress import bar
from lipbound.verify.deadline import Deadline, Expired, interrupt_at
from lipbound.verify.falsify import (
    Checker,
    SearchWitness,
    attack,
    model_dtype,
    random_points,
    screen,
    targeted_attack,
)
from lipbound.verify.milp import Prepared, prepare, solve
from lipbound.verify.prove import refute
from lipbound.verify.result import VerificationResult
from lipbound.verify.sampling import sample_box, screening_model

#: Fraction of the time limit (at most 10 s) that branch and bound leaves to the stages after
#: it (input splitting, the last attacks).
BAB_RESERVE = 0.03
#: Fraction of the time limit (at most 30 s) that the search and the MILP leave to the last
#: stage, uniform sampling, when an open region has at most ``SAMPLE_MAX_INPUTS`` inputs.
#: On a low-dimensional box, sampling covers the space densely enough to hit counterexample
#: regions that are thin slivers on a plateau of the violation, where PGD's gradients lead
#: nowhere and the search's box centres are too sparse (ACAS Xu 1_9 prop_7: about 5 points in
#: 10^7 violate it; the stage needs 0.4-12.3 s there, 4.9 s in mean over 6 seeds: with 10 %
#: of the 116 s limit, 3 of 5 full runs missed it, with 20 %, 0 of 4). In high dimensions it
#: would hit nothing that PGD misses. The search gives up this share only on regions it has
#: not decided in the rest of the limit.
SAMPLE_SHARE = 0.2
SAMPLE_MAX_INPUTS = 16
#: Input splitting is tried only for regions with at most this many inputs.
SPLIT_MAX_INPUTS = 64
#: The bounding stages ``verify`` knows.
VERIFY_METHODS = ("crown", "alpha-crown", "bab", "milp")
#: Share of the time left that the MILP stage may take (branch and bound gets the rest).
MILP_SHARE = 0.5


class _Found(Exception):
    def __init__(self, cex, stage: str) -> None:
        super().__init__(stage)
        self.cex, self.stage = cex, stage


def input_shape_of(model: nn.Module, num_inputs: int) -> tuple[int, ...]:
    """The per-sample input shape to feed the property's flat inputs to ``model``."""
    shape = tuple(getattr(model, "input_shape", (num_inputs,)))
    if math.prod(shape) != num_inputs:
        raise ShapeError(f"the property has {num_inputs} inputs X_i, the model takes "
                         f"{list(shape)} ({math.prod(shape)} values)")
    return shape


class _Run:
    """State of one verification: open disjuncts per region, stage log."""

    def __init__(self, model, prop, in_shape, checker, deadline, seed, sampling=True):
        self.model, self.prop, self.in_shape = model, prop, in_shape
        self.sampling = sampling
        self.checker, self.deadline = checker, deadline
        self.gen = torch.Generator().manual_seed(seed)
        self.open = {r: list(range(len(reg.disjuncts))) for r, reg in enumerate(prop.regions)}
        self.stages: list[dict[str, Any]] = []
        self.decided_by: str | None = None
        self.prep: dict = {}  # region -> its MILP bounds or why the MILP does not apply

    def open_regions(self) -> list[int]:
        return [r for r, ids in self.open.items() if ids]

    def log(self, stage: str, t0: float, **extra: Any) -> None:
        left = sum(len(v) for v in self.open.values())
        self.stages.append({"stage": stage, "time": round(self.deadline.elapsed() - t0, 4),
                            "open_disjuncts": left, **extra})

    def _confirm(self, region: InputRegion, points: Tensor, stage: str) -> None:
        """Raise ``_Found`` (decided by ``stage``) if the executor confirms one of the most
        violating ``points`` [N, n] of ``region`` as a counterexample."""
        found = screen(self.model, region, self.in_shape, self.checker, points)
        if found is not None:
            raise _Found(found, stage)

    def screen(self) -> None:
        t0 = self.deadline.elapsed()
        for reg in self.prop.regions:
            pts = random_points(reg, 64, model_dtype(self.model), self.gen)
            if pts is not None:
                self._confirm(reg, pts, "screen")
        self.log("screen", t0)

    def attack(self, name: str, steps: int, restarts: int) -> None:
        t0 = self.deadline.elapsed()
        for r in range(len(self.prop.regions)):
            found = attack(self.model, self.prop.regions[r], self.in_shape, self.checker,
                           steps=steps, restarts=restarts, generator=self.gen)
            if found is not None:
                raise _Found(found, name)
        self.log(name, t0)

    def targeted(self, name: str, steps: int, restarts: int) -> None:
        t0 = self.deadline.elapsed()
        for r in range(len(self.prop.regions)):
            found = targeted_attack(self.model, self.prop.regions[r], self.in_shape,
                                    self.checker, steps=steps, restarts=restarts,
                                    generator=self.gen)
            if found is not None:
                raise _Found(found, name)
        self.log(name, t0)

    def bound(self, method: str, split: str = "auto", stage: str | None = None,
              regions: list[int] | None = None, reserve: float | None = None,
              milp_after: bool = False) -> None:
        """Refute the open disjuncts of ``regions`` (default: every open region) with
        ``method`` bounds; under "bab" the search (brancher ``split``) shares the time left
        (less ``reserve``: by default a little for the stages after it, and ``MILP_SHARE``
        of it when ``milp_after`` and the MILP applies to an open region) and its attained
        points are screened as counterexamples."""
        t0 = self.deadline.elapsed()
        stage = stage or method
        todo = self.open_regions() if regions is None else regions
        if reserve is None:  # branch and bound runs to the end; keep a little for later
            reserve = self._reserve() if method == "bab" else 0.0
            if method == "bab" and milp_after and any(self._milp_prep(r) for r in todo):
                reserve = max(reserve, MILP_SHARE * self.deadline.remaining())
        for k, r in enumerate(todo):
            share = (self.deadline.remaining() - reserve) / (len(todo) - k)
            region = self.prop.regions[r]
            witness = (SearchWitness(self.model, region, self.in_shape, self.checker, self.gen)
                       if method == "bab" else None)
            done, points = refute(self.model, region, self.open[r], method, self.in_shape,
                                  timeout=share, split=split, witness_check=witness)
            if witness is not None and witness.found is not None:
                raise _Found(witness.found, stage)
            if points is not None:  # the search's attained points: confirmed or ignored
                self._confirm(region, points, stage)
            self.open[r] = [i for i in self.open[r] if i not in done]
        self.log(stage, t0)
        if not self.open_regions():
            self.decided_by = self.decided_by or stage

    def _reserve(self) -> float:
        """What branch and bound (and the MILP) leave to the stages after them by default."""
        total = self.deadline.end - self.deadline.start
        reserve = min(BAB_RESERVE * total, 10.0)
        if self._sampled():
            reserve = max(reserve, self._sample_budget())
        return reserve

    def _sample_budget(self) -> float:
        return min(SAMPLE_SHARE * (self.deadline.end - self.deadline.start), 30.0)

    def _sampled(self) -> list[int]:
        """The open regions that the sampling stage covers (low-dimensional boxes), if on."""
        return [r for r in self.open_regions() if self.sampling
                and self.prop.regions[r].num_inputs <= SAMPLE_MAX_INPUTS]

    def sample(self) -> None:
        """Uniform points of the open low-dimensional regions' boxes (:func:`sample_box`) for
        ``SAMPLE_SHARE`` of the limit (at most the time left), shared by the regions in turn."""
        t0 = self.deadline.elapsed()
        todo = self._sampled()
        end = min(self.deadline.remaining(), self._sample_budget())
        fast = screening_model(self.model, self.in_shape) if todo else None
        for k, r in enumerate(todo):
            seconds = 0.98 * (end - (self.deadline.elapsed() - t0)) / (len(todo) - k)
            found = sample_box(self.model, self.prop.regions[r], self.in_shape, self.checker,
                               seconds, self.gen, screening=fast)
            if found is not None:
                raise _Found(found, "sample")
        self.log("sample", t0)

    def _milp_prep(self, r: int) -> Prepared | None:
        """Region r's MILP bounds (computed once), or None where the MILP does not apply
        (the reason is kept for the stage log)."""
        if r not in self.prep:
            self.prep[r] = prepare(self.model, self.prop.regions[r], self.in_shape)
        got = self.prep[r]
        return got if isinstance(got, Prepared) else None

    def milp(self, bab_after: bool = False) -> None:
        """The MILP of :mod:`lipbound.verify.milp` on every open region it applies to, in
        the time left (``MILP_SHARE`` of it when ``bab_after``, else less the usual
        reserve), shared evenly by the regions in turn."""
        t0 = self.deadline.elapsed()
        todo = self.open_regions()
        left = self.deadline.remaining()
        budget = MILP_SHARE * left if bab_after else left - self._reserve()
        notes, counts = [], []
        for k, r in enumerate(todo):
            prep, region = self._milp_prep(r), self.prop.regions[r]
            if prep is None:
                notes.append(self.prep[r].why)
                counts.append(self.prep[r].unstable)
                continue
            seconds = (budget - (self.deadline.elapsed() - t0)) / (len(todo) - k)
            out = solve(prep, self.model, region, self.open[r], seconds)
            notes.append(out.why)
            counts.append(out.unstable)
            if out.point is not None:
                self._confirm(region, out.point[None], "milp")
            if out.refuted:
                self.open[r] = []
        self.log("milp", t0, outcomes=notes, unstable=counts)
        if not self.open_regions():
            self.decided_by = self.decided_by or "milp"

    def split(self) -> None:
        """The search with input halves only on the open regions of at most
        ``SPLIT_MAX_INPUTS`` inputs, in the time left (regions small enough for the
        branch-and-bound stage to have split inputs already are skipped)."""
        todo = [r for r in self.open_regions()
                if INPUT_SPLIT_MAX_DIM < self.prop.regions[r].num_inputs <= SPLIT_MAX_INPUTS]
        if todo:
            reserve = self._sample_budget() if self._sampled() else 0.0
            self.bound("bab", split="input", stage="input-split", regions=todo,
                       reserve=reserve)


def verify(model: nn.Module | str, prop: VnnlibProperty, timeout: float, *, seed: int = 0,
           progress: bool | str = False,
           methods: tuple[str, ...] = ("crown", "alpha-crown", "bab", "milp"),
           input_split: bool = True, attack_rounds: int = 3,
           sampling: bool = True) -> VerificationResult:
    """Decide whether ``prop`` holds for ``model`` within ``timeout`` seconds.

    ``model``: an eval-mode ``nn.Module`` on the CPU (InputError otherwise) whose per-sample
    input holds ``prop.num_inputs`` values (``model.input_shape`` if it has one, else flat) and
    which returns ``[B, prop.num_outputs]``, or a path to an ONNX file. Returns a
    :class:`VerificationResult`; "unsat" is certified by sound bounds (every disjunct of every
    region refuted), "sat" carries a counterexample re-checked on onnxruntime (ONNX models) or
    the module itself. The limit is enforced with SIGALRM in the main thread (elsewhere it is
    checked between stages, so a stage may overrun).
    Loading the model, opening onnxruntime and tracing come first and do not count: their time
    is ``details["prepare_time"]`` (VNN-COMP's preparation phase); ``result.time`` is the rest.
    ``methods``: the bounding stages in order, from "crown", "alpha-crown", "bab", "milp"
    (the first two are each followed by attacks; "bab" and "milp" split the time between
    them when both are listed). ``input_split``, ``attack_rounds`` and ``sampling`` switch
    the later stages (see the module doc).
    """
    timeout = check_timeout(timeout, optional=False)
    unknown = [m for m in methods if m not in VERIFY_METHODS]
    if unknown:
        raise InputError(f"unknown verify methods {unknown}; choose from {VERIFY_METHODS}")
    prep = Deadline(math.inf)
    model = resolve_model(model)
    if not isinstance(prop, VnnlibProperty):
        raise InputError(f"prop must be a VnnlibProperty (see read_vnnlib), got {type(prop)}")
    _check_cpu(model)
    in_shape = input_shape_of(model, prop.num_inputs)
    checker = Checker(model, in_shape)
    if prop.regions:
        _check_outputs(model, prop, in_shape)
    details: dict[str, Any] = {"executor": checker.executor, "regions": len(prop.regions),
                               "disjuncts": sum(len(r.disjuncts) for r in prop.regions),
                               "prepare_time": prep.elapsed()}
    deadline = Deadline(float(timeout))
    run = _Run(model, prop, in_shape, checker, deadline, seed, sampling)
    plan = _plan(run, methods, input_split, attack_rounds)
    verdict, cex = "unknown", None
    try:
        with interrupt_at(deadline):
            for stage in bar(plan, progress=progress, desc="verify", total=len(plan)):
                if not run.open_regions():
                    break
                stage()
                if deadline.expired():
                    raise Expired()
        verdict = "unknown" if run.open_regions() else "unsat"
    except _Found as hit:
        verdict, cex, run.decided_by = "sat", hit.cex, hit.stage
    except Expired:
        verdict = "timeout"
    if verdict == "unsat" and not prop.regions:
        run.decided_by = "no-regions"
    details.update(stages=run.stages, decided_by=run.decided_by)
    return VerificationResult(verdict, cex, deadline.elapsed(), details)


def _check_cpu(model: nn.Module) -> None:
    """InputError unless every parameter and buffer of ``model`` is on the CPU: the regions,
    the attacks' points and the counterexample re-checks are CPU tensors."""
    devices = {t.device.type for t in (*model.parameters(), *model.buffers())} - {"cpu"}
    if devices:
        raise InputError(f"verify runs the model on the CPU; it has tensors on {sorted(devices)} "
                         "(move it with model.cpu())")


def _check_outputs(model: nn.Module, prop: VnnlibProperty, in_shape: tuple[int, ...]) -> None:
    x = prop.regions[0].lower.reshape(1, *in_shape).to(model_dtype(model))
    with torch.no_grad():
        y = model(x)
    if y.numel() != prop.num_outputs:
        raise ShapeError(f"the property has {prop.num_outputs} outputs Y_j, the model returns "
                         f"{y.numel()} values per input")
    get_graph(model, x, torch.float64, x.device)  # trace now, outside the interruptible part


def _plan(run: _Run, methods, input_split: bool, attack_rounds: int) -> list:
    def extra_attacks() -> None:
        for k in range(attack_rounds):
            if run.deadline.expired():
                raise Expired()
            run.attack(f"attack-{k + 3}", steps=100, restarts=32 * 2**k)

    plan: list = [run.screen]
    for k, m in enumerate(methods):
        later = methods[k + 1:]
        if m == "milp":
            plan.append(lambda later=later: run.milp(bab_after="bab" in later))
        else:
            plan.append(lambda m=m, later=later: run.bound(m, milp_after="milp" in later))
        if k == 0:
            plan.append(lambda: run.attack("attack-1", steps=30, restarts=4))
        if k == 1:
            plan.append(lambda: run.attack("attack-2", steps=100, restarts=16))
            plan.append(lambda: run.targeted("attack-targeted", steps=100, restarts=8))
    if input_split:
        plan.append(run.split)
    plan.append(extra_attacks)
    if run.sampling:
        plan.append(run.sample)
    return plan
