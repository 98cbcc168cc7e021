"""Serving a verified program: one sandboxed call, cut down to the fields the program is verified for.

The program tier calls `run_program`; when the answer is `complete` (every output field verified and filled) the
tier validates it like any tier's answer (schema, `check`) and serves it; otherwise its `fields` become the next
tier's `ModelRequest.fixed_output`, and a failed run escalates with `error` recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from protege.skills.program_check import ENTRY


@dataclass(frozen=True)
class ProgramAnswer:
    """What a program call gives the cascade: the verified fields it filled, and whether that is all of them."""

    ok: bool
    fields: dict[str, Any] = field(default_factory=dict)
    complete: bool = False
    error: str | None = None
    kind: str | None = None
    elapsed_s: float = 0.0


def run_program(
    sandbox: Any,
    source: str,
    task_input: dict[str, Any],
    verified_fields: Sequence[str],
    output_fields: Sequence[str],
    *,
    timeout_s: float = 1.0,
) -> ProgramAnswer:
    """Run `solve(**task_input)` in `sandbox`; keep only `verified_fields` of its answer (a dict)."""
    result = sandbox.run(source, ENTRY, task_input, timeout_s=timeout_s)
    if not result.ok:
        return ProgramAnswer(False, error=result.error, kind=result.kind, elapsed_s=result.elapsed_s)
    if not isinstance(result.value, dict):
        return ProgramAnswer(
            False,
            error=f"the program answered {type(result.value).__name__}, not an object",
            kind="invalid_answer",
            elapsed_s=result.elapsed_s,
        )
    kept = {name: result.value[name] for name in verified_fields if name in result.value}
    complete = bool(output_fields) and all(name in kept for name in output_fields)
    return ProgramAnswer(True, fields=kept, complete=complete, elapsed_s=result.elapsed_s)


async def arun_program(
    sandbox: Any,
    source: str,
    task_input: dict[str, Any],
    verified_fields: Sequence[str],
    output_fields: Sequence[str],
    *,
    timeout_s: float = 1.0,
) -> ProgramAnswer:
    """`run_program` off the event loop (the cascade is async)."""
    import asyncio

    return await asyncio.to_thread(
        run_program, sandbox, source, task_input, verified_fields, output_fields, timeout_s=timeout_s
    )


__all__ = ["ProgramAnswer", "arun_program", "run_program"]
