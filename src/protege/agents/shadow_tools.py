"""A shadow check's tools: the served answer's recorded results, never the tools themselves.

A shadow re-asks the teacher, in the background, an input a cheaper tier already answered. Running the task's tools
again would repeat their side effects (a card charged twice) for a comparison the caller never asked for. So the
shadow's teacher is answered from the served attempt's transcript where it makes the same call (tool name and
arguments, defaults filled in), and any other call is refused, not run — unless its tool is marked
`@protege.read_only` (a lookup with no side effects), which the check runs. A refused call makes the shadow's answer no
reference (it was written without data the served answer had or did not need): its trace is invalid, so it is
neither scored nor trained on.
"""

from __future__ import annotations

import json
from typing import Any

from protege.agents.models.base import ToolCall
from protege.agents.tools import ToolBox, call_results

SHADOW_REFUSED = "shadow check: refused tool call(s)"  # an attempt error's start: the answer is no reference
# why the tools are not run, and whose calls are answered: a shadow of a served answer, or a skill's evidence
# replayed on an input the teacher solved
PURPOSES = {
    "shadow": ("shadow check", "a background check of an answer already served", "the served answer"),
    "evidence": ("skill check", "a check of a skill on an input the teacher already solved", "the teacher"),
}
REFUSED = (
    "error: not run: this is {check}, and its tools are not run again (they may have side effects); only the calls "
    "{whose} made are answered, from their recorded results, and {call} was not one of them"
)


class RecordedTools(ToolBox):
    """The task's tools as the model sees them (same names and specs), answered from a recorded transcript."""

    def __init__(self, box: ToolBox, messages: list[Any] | None, purpose: str = "shadow"):
        self.tools, self.timeout = box.tools, box.timeout  # the specs offered stay the task's own
        self.recorded = _recorded_results(self, messages or [])
        self.refused: list[str] = []
        self.label, self.check, self.whose = PURPOSES[purpose]

    async def call(self, call: ToolCall) -> tuple[str, bool]:
        if call.arguments_error is not None:  # unreadable arguments: said back, as the real tools do
            return f"error: {call.arguments_error}", False
        results = self.recorded.get(_call_key(self, call.name, call.arguments))
        tool = self.tools.get(call.name)
        if not results and tool is not None and tool.read_only:  # a lookup: safe to run for the check
            return await super().call(call)
        if not results:
            shown = f"{call.name}({json.dumps(call.arguments, ensure_ascii=False, default=str)})"
            self.refused.append(shown)
            return REFUSED.format(check=self.check, whose=self.whose, call=shown), False
        return (results.pop(0) if len(results) > 1 else results[0]), True  # repeats of a call get its last result

    def errors(self) -> list[str]:
        """Why the answer made with these tools is no reference (empty when every call had a recorded result)."""
        if not self.refused:
            return []
        calls = "; ".join(self.refused)[:300]
        return [f"{self.label}: refused tool call(s) {self.whose} did not make, not run again: {calls}"]


def shadow_errors(tools: ToolBox) -> list[str]:
    """The refusals of a shadow's tools as an attempt's errors; none for a task's own tools."""
    return tools.errors() if isinstance(tools, RecordedTools) else []


def _recorded_results(box: ToolBox, messages: list[Any]) -> dict[tuple[str, str], list[str]]:
    """Each call of the transcript (by name and arguments) -> the results its tool turns held, in order."""
    recorded: dict[tuple[str, str], list[str]] = {}
    for call, result in call_results(messages):
        if result is not None:
            key = _call_key(box, call.get("name", ""), call.get("arguments") or {})
            recorded.setdefault(key, []).append(result)
    return recorded


def _call_key(box: ToolBox, name: str, arguments: dict[str, Any]) -> tuple[str, str]:
    """A call's identity: `lookup(email=x)` and `lookup(email=x, verbose=False)` are the same call."""
    tool = box.tools.get(name)
    try:
        args = tool.args_model.model_validate(arguments).model_dump(mode="json") if tool else arguments
    except Exception:  # arguments the tool would refuse: compared as given
        args = arguments
    return name, json.dumps(args, sort_keys=True, ensure_ascii=False, default=str)


__all__ = ["SHADOW_REFUSED", "RecordedTools", "shadow_errors"]
