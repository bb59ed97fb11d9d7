"""Distributed hyperparameter search: Ray Tune + Optuna, tracked in MLflow."""
