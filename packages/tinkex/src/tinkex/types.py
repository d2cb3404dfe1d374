"""Every wire model of tinkex, as ``tinker.types`` offers them (``from tinkex import types``).

This module re-exports all of :mod:`tinkex_types` and adds the few aliases the official SDK's
``tinker.types`` has under other names.
"""

from __future__ import annotations

from tinkex_types import *  # noqa: F403
from tinkex_types import SaveWeightsForSamplerResponse

#: A package path, so that ``tinkex.types.<module>`` (tinker's module paths) import.
__path__: list[str] = []

#: A training run / model id (a plain string), as in ``tinker.types.ModelID``.
ModelID = str
#: A future's request id (a plain string), as in ``tinker.types.RequestID``.
RequestID = str
#: The official SDK's internal name of the ``save_weights_for_sampler`` result.
SaveWeightsForSamplerResponseInternal = SaveWeightsForSamplerResponse
