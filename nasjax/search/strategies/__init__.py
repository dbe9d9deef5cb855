"""The search strategies, one module per method (see :data:`nasjax.search.STRATEGIES`).

Importing a strategy's module registers it; the registries import every module of this
package on the first lookup of a name they do not hold yet.
"""
