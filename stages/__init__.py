"""Thin DVC stage entry points: `python -m stages.<name>`; each reads its own params.yaml section."""
