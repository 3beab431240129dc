"""Imagination: environments driven by learned world models (rollout engine, gymnasium vector env)."""
