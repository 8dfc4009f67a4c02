"""Exact and SDP baselines for ReLU / LeakyReLU MLPs: ground truth for lipbound's bounds."""
