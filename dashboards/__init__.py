"""shepherd's `dashboards` package."""

__all__: list[str] = []
