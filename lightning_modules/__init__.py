"""clipita's model library: encoders, fusion, heads, losses, metrics, the CLIP-ITA model and its Lightning wrapper."""

from __future__ import annotations

__version__ = "0.1.0"
