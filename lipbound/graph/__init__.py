"""Tracing PyTorch models into lipbound's immutable graph, and normalising it."""

from lipbound.graph.ir import CONST, INPUT, Graph, Node

__all__ = ["CONST", "INPUT", "Graph", "Node"]
