"""Statistics for comparing benchmark runs (compare, gate, leaderboard)."""
