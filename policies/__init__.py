"""shepherd's `policies` package."""

__all__: list[str] = []
