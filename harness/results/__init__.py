"""Run directories, manifests, fingerprints, row types and the metric registry."""
