"""Runtime plumbing shared by training, evaluation and tests: device choice and CPU mode."""
