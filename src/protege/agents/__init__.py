"""Models and the agent machinery. Light to import: provider SDKs load only when a spec string needs them."""

from protege.agents.models.base import (
    FINAL_TOOL,
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
    resolve_model,
)
from protege.agents.models.function import FunctionModel, ScriptedModel
from protege.agents.models.reference import ReferenceModel

__all__ = [
    "FINAL_TOOL",
    "FunctionModel",
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "ReferenceModel",
    "ScriptedModel",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "resolve_model",
]
