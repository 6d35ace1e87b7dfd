"""Runnable examples (`python examples/<name>.py`); tests import them."""
