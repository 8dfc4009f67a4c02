"""lipbound.io.vnnlib: VNN-LIB properties, clipped l_inf boxes and VNN-COMP instance lists."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
import torch

from lipbound.errors import InputError, ShapeError
from lipbound.io import (
    Conjunction,
    center_radius_linf,
    is_counterexample,
    is_refuted,
    load_onnx,
    parse_vnnlib,
    read_instances,
    read_vnnlib,
    stack_conjunctions,
)

BENCH = Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "vnncomp2021"
SHARED_PROPS = sorted(BENCH.glob("**/*.vnnlib")) if BENCH.is_dir() else []
needs_bench = pytest.mark.skipif(not SHARED_PROPS, reason="shared VNN-COMP benchmarks not present")

INPUTS = {"acasxu": 5, "mnistfc": 784, "eran": 784, "verivital": 784, "cifar10_resnet": 3072,
          "oval21": 3072, "test": 1}  # fmt: skip


def _props(folder: str) -> list[Path]:
    return [p for p in SHARED_PROPS if p.relative_to(BENCH).parts[0] == folder]


@needs_bench
@pytest.mark.parametrize("path", SHARED_PROPS, ids=lambda p: str(p.relative_to(BENCH)))
def test_every_shared_property_parses(path):
    folder = path.relative_to(BENCH).parts[0]
    k = 1 if folder == "test" else (5 if folder == "acasxu" else 10)
    prop = read_vnnlib(path, num_inputs=INPUTS[folder], num_outputs=k)
    assert prop.regions
    for region in prop.regions:
        assert region.lower.dtype == torch.float64 and region.lower.shape == (INPUTS[folder],)
        assert bool((region.lower <= region.upper).all())
        assert region.disjuncts
        for c in region.disjuncts:
            assert c.C.shape == (c.d.shape[0], k) and c.C.dtype == torch.float64


@needs_bench
@pytest.mark.parametrize("path", _props("mnistfc") if SHARED_PROPS else [], ids=lambda p: p.name)
def test_mnistfc_box_matches_label_and_eps_of_the_file(path):
    prop = read_vnnlib(path)
    eps_name = float(re.fullmatch(r"prop_\d+_([\d.]+)\.vnnlib", path.name).group(1))
    label = int(re.search(r"label: (\d+)", prop.comments[0]).group(1))
    (region,) = prop.regions
    x0, eps = center_radius_linf(region.lower, region.upper, (0.0, 1.0))
    assert eps == pytest.approx(eps_name, abs=1e-6)
    assert bool((x0 >= 0).all() and (x0 <= 1).all())
    # the clipped ball is the box
    torch.testing.assert_close((x0 - eps).clamp(0, 1), region.lower, rtol=0, atol=1e-6)
    torch.testing.assert_close((x0 + eps).clamp(0, 1), region.upper, rtol=0, atol=1e-6)
    # the unsafe set is "some other class scores at least as high as the label"
    assert len(region.disjuncts) == 9
    others = sorted(set(range(10)) - {label})
    for c, j in zip(region.disjuncts, others):
        expected = torch.zeros(1, 10, dtype=torch.float64)
        expected[0, label], expected[0, j] = 1.0, -1.0
        torch.testing.assert_close(c.C, expected)
        assert c.d.tolist() == [0.0]
    y = torch.zeros(10)
    y[label] = 1.0
    assert not is_counterexample(y, region.disjuncts)
    y[others[3]] = 1.0  # a tie is unsafe: the constraints are non-strict
    assert is_counterexample(y, region.disjuncts)


@needs_bench
def test_mnistfc_centres_are_classified_as_their_label():
    """Ties the two readers together: the 256x2 network predicts the label at each centre."""
    net = load_onnx(BENCH / "mnistfc" / "mnist-net_256x2.onnx", input_shape=(784,))
    for path in _props("mnistfc"):
        prop = read_vnnlib(path, num_inputs=784, num_outputs=net.output_size)
        label = int(re.search(r"label: (\d+)", prop.comments[0]).group(1))
        x0, _ = center_radius_linf(prop.regions[0].lower, prop.regions[0].upper)
        with torch.no_grad():
            y = net(x0.float()[None])[0]
        assert int(y.argmax()) == label
        assert not prop.is_counterexample(x0, y)


@needs_bench
def test_eran_and_normalised_cifar_boxes():
    prop = read_vnnlib(BENCH / "eran" / "specs" / "mnist_spec_idx_56_eps_0.01200.vnnlib")
    _, eps = center_radius_linf(prop.regions[0].lower, prop.regions[0].upper)
    assert eps == pytest.approx(0.012, abs=1e-7)
    # CIFAR boxes are normalised per channel: one radius cannot describe them
    cifar = read_vnnlib(BENCH / "cifar10_resnet" / "vnnlib" / "prop_0_eps_0.008.vnnlib")
    r = cifar.regions[0]
    with pytest.raises(InputError, match="not an l_inf ball"):
        center_radius_linf(r.lower, r.upper, data_range=None)
    # ... but each channel is one, of radius 0.008 / (the channel's std, about 0.25)
    radii = []
    for ch in range(3):
        lo, hi = r.lower[ch * 1024 : (ch + 1) * 1024], r.upper[ch * 1024 : (ch + 1) * 1024]
        x0, eps = center_radius_linf(lo, hi, data_range=None)
        torch.testing.assert_close(x0, (lo + hi) / 2)
        radii.append(eps)
    assert all(0.2 < 0.008 / e < 0.3 for e in radii) and len({round(e, 6) for e in radii}) == 3


@needs_bench
def test_acasxu_disjunctions():
    prop6 = read_vnnlib(BENCH / "acasxu" / "prop_6.vnnlib")
    assert len(prop6.regions) == 2  # two input boxes, the same four output disjuncts each
    a, b = prop6.regions
    assert a.upper[1] == pytest.approx(0.499999896) and a.lower[1] == pytest.approx(0.11140846)
    assert b.upper[1] == pytest.approx(-0.11140846) and b.lower[1] == pytest.approx(-0.499999896)
    for r in prop6.regions:
        C, d, owner = r.spec()
        assert C.shape == (4, 5) and owner.tolist() == [0, 1, 2, 3]
        # (<= Y_j Y_0): Y_j - Y_0 <= 0
        for j in range(4):
            assert C[j].tolist() == [-1.0] + [1.0 if i == j else 0.0 for i in range(4)]
    prop1 = read_vnnlib(BENCH / "acasxu" / "prop_1.vnnlib")
    (c,) = prop1.regions[0].disjuncts
    assert c.C.tolist() == [[-1.0, 0, 0, 0, 0]] and c.d.tolist() == [-3.991125645861615]
    prop7 = read_vnnlib(BENCH / "acasxu" / "prop_7.vnnlib")
    assert [c.C.shape[0] for c in prop7.regions[0].disjuncts] == [3, 3]
    # four separate asserts make one conjunction
    prop3 = read_vnnlib(BENCH / "acasxu" / "prop_3.vnnlib")
    assert [c.C.shape[0] for c in prop3.regions[0].disjuncts] == [4]
    # prop 4 pins X_2 to 0
    prop4 = read_vnnlib(BENCH / "acasxu" / "prop_4.vnnlib")
    assert prop4.regions[0].lower[2] == prop4.regions[0].upper[2] == 0.0


# ---------------------------------------------------------------------------- semantics
HEADER = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n" \
    "(declare-const Y_1 Real)\n(declare-const Y_2 Real)\n"  # fmt: skip


def test_semantics_of_disjuncts_and_refutation():
    text = (
        HEADER
        + """
    ; input box
    (assert (>= X_0 -1)) (assert (<= X_0 1.5))
    (assert (and (>= X_1 0) (<= (* 2 X_1) 1)))
    (assert (or (and (<= Y_0 Y_1) (>= Y_2 0.5))
                (and (< (+ Y_0 (* -1 Y_2)) (- 3)))))
    """
    )
    prop = parse_vnnlib(text, "mem")
    (region,) = prop.regions
    assert region.lower.tolist() == [-1.0, 0.0] and region.upper.tolist() == [1.5, 0.5]
    first, second = region.disjuncts
    assert first.C.tolist() == [[1, -1, 0], [0, 0, -1]] and first.d.tolist() == [0, -0.5]
    assert second.C.tolist() == [[1, 0, -1]] and second.d.tolist() == [-3]
    assert is_counterexample(torch.tensor([0.0, 1.0, 1.0]), region.disjuncts)  # first disjunct
    assert is_counterexample(torch.tensor([[-5.0, -9.0, 0.0]]), region.disjuncts)  # second
    assert not is_counterexample(torch.tensor([2.0, 1.0, 0.0]), region.disjuncts)
    assert prop.is_counterexample(torch.tensor([0.0, 0.25]), torch.tensor([0.0, 1.0, 1.0]))
    assert not prop.is_counterexample(torch.tensor([2.0, 0.25]), torch.tensor([0.0, 1.0, 1.0]))
    C, d, owner = stack_conjunctions(region.disjuncts)
    assert C.shape == (3, 3) and owner.tolist() == [0, 0, 1]
    # one violated row per disjunct refutes the region; a row exactly at d does not
    assert is_refuted(torch.tensor([-1.0, 0.0, -2.9]), region.disjuncts)
    assert region.is_refuted(torch.tensor([0.1, -9.0, -2.9]))
    assert not is_refuted(torch.tensor([0.0, -0.5, -2.9]), region.disjuncts)
    assert not is_refuted(torch.tensor([1.0, 0.0, -3.0]), region.disjuncts)
    with pytest.raises(ShapeError):
        is_refuted(torch.zeros(2), region.disjuncts)
    with pytest.raises(ShapeError):
        is_counterexample(torch.zeros(4), region.disjuncts)


def test_or_over_input_boxes_and_empty_regions():
    text = (
        HEADER
        + """
    (assert (or (and (>= X_0 0) (<= X_0 1))
                (and (>= X_0 2) (<= X_0 3))
                (and (>= X_0 5) (<= X_0 4))))
    (assert (= X_1 0.5))
    (assert (or (>= Y_0 1) (>= Y_1 1)))
    """
    )
    prop = parse_vnnlib(text)
    assert [r.lower.tolist() for r in prop.regions] == [[0.0, 0.5], [2.0, 0.5]]  # [5, 4] is empty
    assert all(len(r.disjuncts) == 2 for r in prop.regions)
    # (A or B) and (C or D) and E: four disjuncts that all keep E
    text = (
        HEADER
        + """
    (assert (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1)))
    (assert (and (or (>= Y_0 1) (>= Y_1 2)) (or (>= Y_2 3) (<= Y_2 -3)) (<= Y_0 9)))
    """
    )
    (region,) = parse_vnnlib(text).regions
    rows = [(c.C.tolist(), c.d.tolist()) for c in region.disjuncts]
    assert len(rows) == 4 and all(len(C) == 3 for C, _ in rows)
    assert all(C[0] == [1.0, 0.0, 0.0] and d[0] == 9.0 for C, d in rows)  # E comes first
    assert [C[1:] for C, _ in rows] == [
        [[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]],
        [[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        [[0.0, -1.0, 0.0], [0.0, 0.0, -1.0]],
        [[0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
    ]
    assert [d[1:] for _, d in rows] == [[-1.0, -3.0], [-1.0, -3.0], [-2.0, -3.0], [-2.0, -3.0]]


def test_center_radius_linf_roundtrip_and_rejection():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, generator=g, dtype=torch.float64)
    x[:20], x[20:40] = 0.0, 1.0  # saturated pixels get clipped
    eps = 0.07
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    x0, e = center_radius_linf(lo, hi)
    assert e == pytest.approx(eps, abs=1e-12)
    torch.testing.assert_close(x0, x)
    # other data ranges and no clipping
    x0, e = center_radius_linf(lo * 255, hi * 255, data_range=(0, 255))
    assert e == pytest.approx(eps * 255)
    x0, e = center_radius_linf(x - 0.2, x + 0.2, data_range=None)
    assert e == pytest.approx(0.2) and torch.allclose(x0, x)
    bad = hi.clone()
    bad[100] += 0.01  # one pixel wider than the others
    with pytest.raises(InputError, match="not an l_inf ball"):
        center_radius_linf(lo, bad)
    with pytest.raises(InputError, match="data range"):
        center_radius_linf(lo - 0.5, hi)
    with pytest.raises(InputError):
        center_radius_linf(hi, lo)


# ---------------------------------------------------------------------------- malformed files
MALFORMED = [
    (
        "(assert (<= X_0 1)\n(assert (>= X_0 0))",
        r"line 6: unbalanced parentheses: 1 .\(. not closed",
    ),
    ("(assert (<= X_0 1)))", r"line 6: unbalanced parentheses: '\)' without"),
    (
        "(assert (<= X_0 1))\n(assert (>= X_7 0))",
        r"line 7: variable 'X_7' is used but not declared",
    ),
    ("(assert (<= X_0 1))\n(assert (=> X_0 0))", r"line 7: unknown operator '=>'"),
    ("(assert (<= X_0 1))\n(assert (>= X_0 zero))", r"line 7: unknown token 'zero'"),
    ("(assert (<= X_0 (* X_1 X_1)))", r"line 6: non-linear"),
    ("(assert (<= X_0 Y_1))", r"line 6: a constraint mixes inputs and outputs"),
    ("(assert (<= X_0 1))\n(frobnicate)", r"line 7: unknown command 'frobnicate'"),
    ("(assert (<= X_0 1)) (assert (>= X_0 0)) (assert (<= X_1 1))", r"X_1 has no lower bound"),
    ("(declare-const Z_0 Real)", r"line 6: variable 'Z_0'"),
    ("(declare-const X_0 Real)", r"line 6: variable 'X_0' declared twice"),
]


@pytest.mark.parametrize("body,pattern", MALFORMED)
def test_malformed_input_names_file_and_line(tmp_path, body, pattern):
    path = tmp_path / "bad.vnnlib"
    path.write_text(HEADER + body + "\n")
    with pytest.raises(InputError, match=pattern) as info:
        read_vnnlib(path)
    assert "bad.vnnlib" in str(info.value)


def test_declaration_checks_and_gzip(tmp_path):
    with pytest.raises(InputError, match="not numbered"):
        parse_vnnlib("(declare-const X_1 Real)(declare-const Y_0 Real)")
    with pytest.raises(InputError, match="no Y_i"):
        parse_vnnlib("(declare-const X_0 Real)(assert (<= X_0 1))(assert (>= X_0 0))")
    text = HEADER + "(assert (and (<= X_0 1) (>= X_0 0) (<= X_1 1) (>= X_1 0) (<= Y_0 Y_2)))"
    with pytest.raises(ShapeError, match="3 outputs"):
        parse_vnnlib(text, num_outputs=10)
    gz = tmp_path / "p.vnnlib.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    prop = read_vnnlib(gz, num_inputs=2, num_outputs=3)
    assert prop.regions[0].upper.tolist() == [1.0, 1.0]
    with pytest.raises(InputError, match="not found"):
        read_vnnlib(tmp_path / "nope.vnnlib")


# ---------------------------------------------------------------------------- instances
@needs_bench
def test_read_shared_instances():
    rows = read_instances(BENCH / "mnistfc" / "mnistfc_instances.csv")
    assert len(rows) == 90
    assert rows[0].onnx == BENCH / "mnistfc" / "mnist-net_256x2.onnx"
    assert rows[0].vnnlib == BENCH / "mnistfc" / "prop_0_0.03.vnnlib" and rows[0].timeout == 120.0
    present = [r for r in rows if r.onnx.is_file() and r.vnnlib.is_file()]
    assert len(present) == 48  # 3 networks x 16 shipped properties
    eran = read_instances(BENCH / "eran" / "eran_instances.csv")
    assert eran[-1].timeout == 300.0 and eran[-1].onnx.name == "ffnnSIGMOID__Point_6x200.onnx"


def test_instances_errors(tmp_path):
    csv_path = tmp_path / "i.csv"
    csv_path.write_text("a.onnx,b.vnnlib,10\n\nc.onnx,d.vnnlib\n")
    with pytest.raises(InputError, match="line 3: expected 'onnx,vnnlib,timeout'"):
        read_instances(csv_path)
    csv_path.write_text("a.onnx,b.vnnlib,soon\n")
    with pytest.raises(InputError, match="line 1: timeout 'soon'"):
        read_instances(csv_path)
    csv_path.write_text("a.onnx, sub/b.vnnlib ,12.5\n")
    (row,) = read_instances(csv_path)
    assert row.vnnlib == tmp_path / "sub" / "b.vnnlib" and row.timeout == 12.5
    assert isinstance(Conjunction(torch.zeros(1, 2), torch.zeros(1)), tuple)
