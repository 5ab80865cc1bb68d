"""Analyses of trained models and features."""
