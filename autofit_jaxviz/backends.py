"""Where a quick update is drawn: one name, ``Backend``, for the three choices.

``"process"``
    a long-lived render process (a fresh interpreter) (the default of the PyAutoFit
    integration and the demo): drawing never competes with a Python-bound
    sampler for the GIL;
``"thread"``
    one renderer thread in the sampler's process: nothing to pickle or start;
``"sync"``
    inside ``submit``, on the sampler's thread (autofit's historic behaviour,
    and what a fit gets when background updates are not switched on).
"""

from __future__ import annotations

from typing import Literal, get_args

Backend = Literal["thread", "process", "sync"]
#: Every backend a worker can run.
BACKENDS: tuple[Backend, ...] = get_args(Backend)
#: The backends the ``backend`` setting chooses between (off the sampler thread).
BACKGROUND_BACKENDS: tuple[Backend, ...] = ("thread", "process")
