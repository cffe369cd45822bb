"""The review UI: page shells under /ui (no database access) and the static scripts that drive /v1."""
