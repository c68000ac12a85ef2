"""QGCN (Li et al. 2020, VDIGPKU/QGCN): the QCN recipe (configs/qcn.py) plus the global branch, grey by default.

The README trains QGCN on the Y channel with q uniform in [1, 100]; the global input is the whole
64x64 patch resized (bicubic, skimage order 3) to 112x112. Variants: `:rgb` (colour, q in [1, 60]),
`:small` (4 blocks, split over QGCN's two residual groups).
"""

from jaxcar.configs import qcn


def get_config(arg=None):
  variants = {v.strip() for v in (arg or "").split(",")}
  if "rgb" not in variants and "grey" not in variants:
    arg = ",".join(filter(None, [arg, "grey"]))
  config = qcn.get_config(arg, name="qgcn")
  if "small" in variants:
    config.model.options.num_blocks = 4
  return config

