"""var_jax: VAR (next-scale prediction) in JAX/Flax."""
from var_jax.configs import VARConfig, VQVAEConfig

__version__ = "0.1.0"
__all__ = ["VARConfig", "VQVAEConfig", "sample", "__version__"]


def __getattr__(name):
    # The sampler pulls in both models; import it only when asked for.
    if name == "sample":
        from var_jax.sampling import sample
        return sample
    raise AttributeError(f"module 'var_jax' has no attribute {name!r}")
