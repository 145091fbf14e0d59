"""The LLM teacher: action labels from a chat model behind an OpenAI-compatible API.

Modules: ``prompts`` (observations as chat messages), ``client`` (HTTP with timeouts and
retries), ``answers`` (replies as action distributions), ``teacher`` (the spec, the
teacher and its failure policy), ``errors``.
"""

from policies.llm.client import ChatClient, ChatReply
from policies.llm.errors import (
    LLMAuthError,
    LLMError,
    LLMRequestError,
    LLMUnavailableError,
    RetriesExhaustedError,
)
from policies.llm.prompts import PromptTemplate, available_templates, make_template
from policies.llm.teacher import (
    BASE_URL_ENV,
    DEFAULT_API_KEY_ENV,
    MODEL_ENV,
    LLMStats,
    LLMTeacher,
    LLMTeacherSpec,
)

__all__ = [
    "BASE_URL_ENV",
    "ChatClient",
    "ChatReply",
    "DEFAULT_API_KEY_ENV",
    "LLMAuthError",
    "LLMError",
    "LLMRequestError",
    "LLMStats",
    "LLMTeacher",
    "LLMTeacherSpec",
    "LLMUnavailableError",
    "MODEL_ENV",
    "PromptTemplate",
    "RetriesExhaustedError",
    "available_templates",
    "make_template",
]
