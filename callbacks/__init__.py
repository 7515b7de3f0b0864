"""Lightning callbacks (W&B tables, per-region summaries, latency reports) live here."""
