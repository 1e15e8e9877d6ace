"""The pure model of sqlrs: states, instances, names, jobs, cache keys, eviction.

Nothing in this package performs I/O or imports a framework.
"""
