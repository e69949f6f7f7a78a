"""ranksuite: declarative benchmarks of the rank and dimension structure of neural networks.

Public API: :func:`load_spec`, :func:`expand_cases`, the registries' decorators
(:func:`register_metric`, :func:`register_dataset`, :func:`register_builtin_net`,
:func:`register_model_source`, :func:`register_theory`, :func:`register_check`) and
:func:`suite.linalg.numerical_rank`. The command line lives in :mod:`suite.cli`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
