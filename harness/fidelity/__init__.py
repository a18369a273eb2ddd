"""Distribution fidelity: exact targets by DFS, distances to them, and the `cdbench fidelity` run."""
