"""worldgrad: train image-based robot policies inside learned world models with first-order gradients."""

__version__ = "0.1.0"
