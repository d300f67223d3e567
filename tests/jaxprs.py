"""Walking jaxprs in tests: every equation, nested jaxprs (scan, remat, custom VJP) included."""
import jax


def equations(jaxpr):
    """Every equation of `jaxpr` and of the jaxprs in its equations' params, depth first."""
    for eqn in jaxpr.eqns:
        yield eqn
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    yield from equations(inner)
