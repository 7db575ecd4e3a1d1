"""The module path models logged before the package moved into domain packages import.

Their serving wrapper runs ``from odds_pipeline.tracking import serving_model``; the
code lives in `odds_pipeline.training.tracking` now. Keep this alias while any registered
version predates the move (see odds_pipeline_tests/training/test_legacy_models.py).
"""

from odds_pipeline.training.tracking import serving_model

__all__ = ["serving_model"]
