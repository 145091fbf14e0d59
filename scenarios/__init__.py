"""Scenario files users launch, their schema and loader, and the ``shepherd`` command line."""

__all__: list[str] = []
