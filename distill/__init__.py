"""shepherd's `distill` package."""

__all__: list[str] = []
