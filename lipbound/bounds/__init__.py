"""Bound value types and input domains."""

from lipbound.bounds.domains import Box, Domain, LpBall, make_domain
from lipbound.bounds.interval import Interval, LinearFunction

__all__ = ["Box", "Domain", "Interval", "LinearFunction", "LpBall", "make_domain"]
