"""mrcnn's Hydra sweeper for Optuna: ``hydra/sweeper=mrcnn_optuna`` (``hparams_search=optuna``).

It replaces hydra-optuna-sweeper, whose last release pins optuna<3 (and so SQLAlchemy 1.x), with
the same settings on a current Optuna. Hydra finds it by scanning the ``hydra_plugins`` namespace
package (hence no ``hydra_plugins/__init__.py``) and imports every module here whose name does
not start with ``_`` on every run of every Hydra app: those modules import Hydra only. Optuna is
imported from the ``_`` modules once a search starts.
"""
