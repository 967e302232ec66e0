"""HPCM: hierarchical progressive context modelling (Li, Zhang, Li, Liu, ICCV 2025).

Importing this package registers ``hpcm-base``, ``hpcm-large`` and ``hpcm-tiny``, and
``hpcm-base-official``/``hpcm-large-official`` (the official code's s2 hyperprior placement,
for weights converted from the official release by :mod:`lictrain.models.hpcm.official`).
"""

from lictrain.models.hpcm.model import BASE, HPCM, LARGE, TINY, HPCMConfig

__all__ = ["BASE", "HPCM", "HPCMConfig", "LARGE", "TINY"]
