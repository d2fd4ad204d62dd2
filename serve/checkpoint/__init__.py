"""Checkpoints the kit builds for tests and demos: a real trained model from a registry package
(:mod:`serve.checkpoint.real_model`)."""
