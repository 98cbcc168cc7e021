"""The sandbox for teacher-written programs: warm worker processes confined by the kernel (rlimits, Landlock,
seccomp) with an import guard as a second wall. See RELIABILITY.md for what it does and does not promise."""

from protege.sandbox.limits import ALLOWED_IMPORTS, SandboxLimits
from protege.sandbox.sandbox import Sandbox, SandboxResult, SandboxUnavailable

__all__ = ["ALLOWED_IMPORTS", "Sandbox", "SandboxLimits", "SandboxResult", "SandboxUnavailable"]
