"""Command groups of kalikoctl, one module each; every module exposes ``register(app: typer.Typer)``."""
