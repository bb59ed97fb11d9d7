"""wsol: hyperparameter search and experiment tracking for weakly supervised object localization."""

__version__ = "0.1.0"
