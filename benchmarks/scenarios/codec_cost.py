"""Scenario 7: what the codec costs, typed against pickle.

The measuring belongs to :mod:`benchmarks.codec` (``python -m benchmarks.codec``),
whose ``measure()`` returns, for each mode, ``(name, codec µs, codec + json µs,
payload bytes)``; this turns its typed and pickle rows into two lines of the table.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..runner import Context, Result, log

NAN = float("nan")


def run(ctx: Context) -> list[Result]:
    log("  codec")
    try:
        codec_benchmark: Any = importlib.import_module("benchmarks.codec")
        rows = {row[0]: row for row in codec_benchmark.measure()}
        typed, pickled = rows["typed"], rows["pickle"]
    except (ImportError, AttributeError, KeyError, IndexError, TypeError) as exc:
        note = f"placeholder: benchmarks/codec.py gave no typed and pickle rows through measure() ({exc!r})"
        return [Result("7", "codec encode+decode", "-", "µs", NAN, NAN, "pickle", NAN, note=note)]
    return [
        Result(
            "7",
            "codec: encode + decode of a 10-field event, + envelope JSON",
            "-",
            "µs",
            typed[2],
            pickled[2],
            "pickle codec",
            typed[2] / pickled[2],
            note=f"codec alone: typed {typed[1]:.1f} µs, pickle {pickled[1]:.1f} µs (python -m benchmarks.codec)",
        ),
        Result(
            "7",
            "codec: payload size as JSON",
            "-",
            "bytes",
            typed[3],
            pickled[3],
            "pickle codec",
            typed[3] / pickled[3],
        ),
    ]
