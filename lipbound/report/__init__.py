"""Bound reports: versioned JSON records, JSON Lines, and HTML/Markdown reports with plots.

=====================  ==================================================================
module                 what it does
=====================  ==================================================================
``schema.py``          the versioned record schema, ``validate(record)``
``records.py``         record builders from LipschitzResult, OutputBounds, smoothing
``audit_records.py``   record builders from the audit reports (lipbound.audit)
``provenance.py``      versions, device, model and input hashes
``jsonl.py``           streaming JSON Lines writer and reader
``files.py``           ``read_records`` for .json / .jsonl result files
``sections.py``        records -> report sections (tables and plots)
``plots.py``           one function per plot (PNG bytes, matplotlib Agg)
``html.py``            self-contained HTML report (inline CSS, base64 PNG)
``markdown.py``        Markdown report with PNG files beside it
``output.py``          writability checks and atomic writes
``verdicts.py``        VNN-COMP verdict CSV (separate owner)
=====================  ==================================================================
"""

from lipbound.report.files import read_records
from lipbound.report.html import write_html
from lipbound.report.jsonl import JsonlWriter
from lipbound.report.markdown import write_markdown
from lipbound.report.records import (
    lipschitz_record,
    output_bounds_record,
    smoothing_record,
    weights_record,
)
from lipbound.report.schema import SCHEMA_VERSION, SchemaError, validate

__all__ = [
    "SCHEMA_VERSION",
    "JsonlWriter",
    "SchemaError",
    "lipschitz_record",
    "output_bounds_record",
    "read_records",
    "smoothing_record",
    "validate",
    "weights_record",
    "write_html",
    "write_markdown",
]
