"""Bound reports: JSON, JSON Lines, TSV, CSV verdicts and HTML/Markdown with plots."""
