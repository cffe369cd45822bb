"""Training runs: a student fine-tuned on a dataset version by a `train` worker, scored vs the teacher."""
