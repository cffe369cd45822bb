"""Frozen dataset versions: rows copied from curated samples (plus ground truth), lineage, digest,
deterministic splits, and exports TRL reads (prompt–completion, messages, Alpaca)."""
