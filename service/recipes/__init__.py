"""recipes domain."""
