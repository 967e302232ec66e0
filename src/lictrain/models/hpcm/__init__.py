"""HPCM: hierarchical progressive context modelling (Li, Zhang, Li, Liu, ICCV 2025).

Importing this package registers ``hpcm-base``, ``hpcm-large`` and ``hpcm-tiny``.
"""

from lictrain.models.hpcm.model import BASE, HPCM, LARGE, TINY, HPCMConfig

__all__ = ["BASE", "HPCM", "HPCMConfig", "LARGE", "TINY"]
