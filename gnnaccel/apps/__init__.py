"""Applications built on gnnaccel's engines (top of the dependency stack: they call engines, serving and
pruning; nothing below imports them)."""
