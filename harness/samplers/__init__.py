"""Samplers. Adding one: a module with a class offering generate()/settings() and a line here."""
from ..registry import Registry
from .base import Generation, Sampler

SAMPLERS: Registry[Sampler] = Registry("sampler")
SAMPLERS.register("masking", "harness.samplers.masking:MaskingSampler")

__all__ = ["SAMPLERS", "Generation", "Sampler"]
