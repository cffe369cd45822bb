"""Read-only sample aggregates for the review UI (histograms, pass/fail, review counts)."""
