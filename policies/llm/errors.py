"""Errors of the LLM teacher and its chat-completions client.

Messages name the endpoint, the status and the fix. None of them contains the API key:
the client removes the key from any server text it quotes.
"""

from __future__ import annotations

from policies.teacher import TeacherError


class LLMError(TeacherError):
    """Base class of the errors of the LLM teacher."""


class LLMAuthError(LLMError):
    """The endpoint rejected the API key (HTTP 401 or 403)."""


class LLMRequestError(LLMError):
    """The endpoint rejected the request itself with a 4xx status that a retry cannot fix.

    HTTP 404 usually means a wrong ``base_url`` or model name; 400 and 422 a request the
    server does not support, such as ``logprobs`` on a server without them.
    """


class RetriesExhaustedError(LLMError):
    """A chat request failed on every attempt: timeouts, connection errors, 429, 5xx or
    malformed replies."""


class LLMUnavailableError(LLMError):
    """The endpoint never answered, or failed so often in a row that fallback labels
    would replace the teacher; the run stops instead of producing them."""
