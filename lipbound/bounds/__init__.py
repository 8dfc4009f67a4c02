"""Bound value types, input domains and restrictions of a bound call to sub-domains."""

from lipbound.bounds.domains import Box, Domain, LpBall, make_domain
from lipbound.bounds.interval import Interval, LinearFunction
from lipbound.bounds.restriction import UNRESTRICTED, Restriction

__all__ = [
    "UNRESTRICTED",
    "Box",
    "Domain",
    "Interval",
    "LinearFunction",
    "LpBall",
    "Restriction",
    "make_domain",
]
