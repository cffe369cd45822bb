"""Curation filters: verdicts with reasons, stored per sample and filter, re-runnable.

`specs` validates what users ask for (the API imports only that); `builtin/` holds the filters as
plain objects over sample dicts (workers import them); `execution` applies a filter run to the
database in fenced chunks; `conditions` turns stored verdicts into sample-listing conditions.
"""
