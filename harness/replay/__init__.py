"""Model-free replay: force labelled instances' tokens through each engine (MaskBench-style)."""
