"""generator: recipes (prompt templates over seed data) → teacher samples with provenance.

A pure library: it knows nothing of databases or HTTP. The public entry points live in
`generator.recipe` (load/validate), `generator.seeds` (seed rows), `generator.pipeline` (run a
recipe through an engine) and `generator.engines` (vLLM offline, OpenAI-compatible servers).
"""
