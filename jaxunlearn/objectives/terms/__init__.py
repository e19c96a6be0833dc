"""The objective terms, one file each; importing a file registers its term (in this order,
which error messages and listings follow).

Adding a term: a file here with its numerator decorated by `register_term` (streams,
denominator, options dataclass, reference needs), one name in the import below, and a
preset YAML under configs/ (docs/dev/adding-an-objective.md)."""

from . import ga, npo, simnpo, dpo, idk, me, undial, wga, rmu, dist, dist_out, gd, kl, ap  # noqa: F401,I001
