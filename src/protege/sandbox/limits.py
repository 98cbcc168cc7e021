"""What a sandboxed program may use: the worker's resource limits and the imports the guard allows."""

from __future__ import annotations

from dataclasses import dataclass, fields

from protege.errors import UserError

# The guard's default allowlist lives with the worker (it runs there); the app reads the same file.
from protege.sandbox.child.guard import ALLOWED_IMPORTS


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one worker process. A call's time limit is `Sandbox.run(timeout_s=...)`.

    memory_mb: address space of the worker (the interpreter takes ~30 MB of it); file_size_mb: largest file a
    program may write in its scratch folder; open_files: descriptors; processes: RLIMIT_NPROC (not enforced for
    root; seccomp refuses new processes for everyone); worker_cpu_s: CPU a worker may use over its life (it is
    replaced at half); max_output_bytes: largest answer (as JSON) a call may return.
    """

    memory_mb: int = 256
    file_size_mb: int = 8
    open_files: int = 32
    processes: int = 1
    worker_cpu_s: int = 600
    max_output_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        floors = {
            "memory_mb": 64,
            "file_size_mb": 0,
            "open_files": 8,
            "processes": 0,
            "worker_cpu_s": 2,
            "max_output_bytes": 64,
        }
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < floors[f.name]:
                raise UserError(f"SandboxLimits.{f.name}={value!r} is not allowed: give an int >= {floors[f.name]}")

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


__all__ = ["ALLOWED_IMPORTS", "SandboxLimits"]
