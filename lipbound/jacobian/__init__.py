"""Clarke-Jacobian graphs and the local-Lipschitz bound computations built on them."""

from lipbound.jacobian.build import JacobianGraph, jacobian_graph

__all__ = ["JacobianGraph", "jacobian_graph"]
