"""samples domain."""
