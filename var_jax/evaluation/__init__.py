"""Evaluation: the FID Inception in Flax, FID / sFID / IS / precision-recall, reference stats."""
from var_jax.evaluation.features import (Activations, activations_of, inception_activations,
                                         inception_features)
from var_jax.evaluation.frechet import (feature_statistics, frechet_distance,
                                        frechet_distance_of_features)
from var_jax.evaluation.inception_score import inception_score
from var_jax.evaluation.inception_weights import load_inception
from var_jax.evaluation.precision_recall import precision_recall
from var_jax.evaluation.reference_stats import (ReferenceStats, read_reference_npz,
                                                reference_from_source, write_reference_npz)

__all__ = ["Activations", "ReferenceStats", "activations_of", "feature_statistics",
           "frechet_distance", "frechet_distance_of_features", "inception_activations",
           "inception_features", "inception_score", "load_inception", "precision_recall",
           "read_reference_npz", "reference_from_source", "write_reference_npz"]
