"""``fastckpt.distribute``: data-parallel training over MPI, shaped like ``tf.distribute``.

Launch the same script on every process (``mpiexec -n 4 python train.py``, or ``srun``); create a
``MultiWorkerMirroredStrategy`` before the model and build and compile the model inside
``strategy.scope()``. Without MPI (plain ``python train.py``) the strategy has one replica, so the
same script runs anywhere. MPI comes from ``mpi4py`` (``pip install "fastckpt[mpi]"``).
"""

from fastckpt.distribute.strategy import (MultiWorkerMirroredStrategy, Strategy, get_strategy,
                                          has_strategy, replicated_strategy)

__all__ = ["MultiWorkerMirroredStrategy", "Strategy", "get_strategy", "has_strategy",
           "replicated_strategy"]
