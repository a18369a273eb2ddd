"""cdbench: a benchmark harness for constrained and structured decoding."""

__version__ = "0.1.0"
