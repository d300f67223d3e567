"""`var-jax demo`: train a tiny VAR on bundled digits, sample, and judge the samples."""
