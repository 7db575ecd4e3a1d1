"""Model kinds, torch models, the training loop, tuning, evaluation and MLflow tracking."""
