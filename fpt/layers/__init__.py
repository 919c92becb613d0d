"""Small reusable building blocks shared by our models."""
from .norm import LayerNorm

__all__ = ["LayerNorm"]
