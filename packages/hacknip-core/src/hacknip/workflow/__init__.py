"""The workflow: a whole run (featurise, sweep layers, cross-validate, report) and saved models."""
