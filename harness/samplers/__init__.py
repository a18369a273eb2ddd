"""Samplers. Adding one: a module with a class offering generate()/settings() and a line here."""
from ..registry import Registry
from .base import Generation, Sampler

SAMPLERS: Registry[Sampler] = Registry("sampler")
SAMPLERS.register("masking", "harness.samplers.masking:MaskingSampler")
SAMPLERS.register("awrs", "harness.samplers.smc:AWRSSampler")
SAMPLERS.register("awrs-smc", "harness.samplers.smc:AWRSSMCSampler")
SAMPLERS.register("asap", "harness.samplers.asap:ASApSampler")
SAMPLERS.register("gcd", "harness.samplers.asap:GCDSampler")

__all__ = ["SAMPLERS", "Generation", "Sampler"]
