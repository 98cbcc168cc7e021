"""The drift tests' synthetic stream: the drift benchmark's (bench/drift_stream.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` is a top-level package beside src/
    sys.path.insert(0, str(ROOT))

from bench.drift_stream import DE, EN, Email, Order, eval_confidences, make_input, student, teacher, truth  # noqa: E402

__all__ = ["DE", "EN", "Email", "Order", "eval_confidences", "make_input", "student", "teacher", "truth"]
