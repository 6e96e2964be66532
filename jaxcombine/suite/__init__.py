"""``jaxcombine eval-suite``: recipes × pairs × content weights, run as a batch and judged."""
