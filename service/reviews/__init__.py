"""Human review of samples: accept/reject/reset, edits with revisions, tags and notes, bulk review."""
