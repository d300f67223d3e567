"""Paths of the evaluation fixtures and the seeded random-weight Inception state dict."""
import pathlib

from inception_random_weights import random_state_dict

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "inception"
GOLDEN = pathlib.Path(__file__).parents[1] / "fixtures" / "golden"

__all__ = ["FIXTURES", "GOLDEN", "random_state_dict"]
