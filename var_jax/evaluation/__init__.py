"""Evaluation: the FID Inception in Flax, FID / sFID / IS / precision-recall, reference stats."""
from var_jax.evaluation.features import (Activations, activations_of, inception_activations,
                                         inception_features)
from var_jax.evaluation.inception_weights import load_inception

__all__ = ["Activations", "activations_of", "inception_activations", "inception_features",
           "load_inception"]
