"""The version of lipbound (one home: the package facade and the report records read it)."""

__version__ = "0.1.0"
