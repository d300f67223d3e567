"""Paths of the evaluation fixtures and the seeded random-weight Inception state dict."""
import pathlib
import sys

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "inception"
GOLDEN = pathlib.Path(__file__).parents[1] / "fixtures" / "golden"
sys.path.insert(0, str(FIXTURES))

from inception_random_weights import random_state_dict  # noqa: E402

__all__ = ["FIXTURES", "GOLDEN", "random_state_dict"]
