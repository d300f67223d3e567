"""The catalogue reuses the training tests' toy task: put tests/train on the import path."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "train"))
