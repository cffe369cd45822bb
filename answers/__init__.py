"""answers: one definition of a correct answer, shared by the verifier filter and the evaluation.

Pure Python (no service, no torch): `generator`, `trainer` and `service` may all import it.
See `answers.match` for the rule.
"""
