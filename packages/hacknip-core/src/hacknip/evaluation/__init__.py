"""Evaluation: folds, metrics and cross-validation, hyperparameter tuning, the Matbench leaderboard."""
