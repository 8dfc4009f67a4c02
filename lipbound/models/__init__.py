"""Shipped models: ``lipbound.models.load("digits-cnn")``."""

from lipbound.models.registry import ModelInfo, available, info, load, register

__all__ = ["ModelInfo", "available", "info", "load", "register"]
