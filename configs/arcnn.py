"""ARCNN as the QGCN repository re-implements it (nets/arcnn.py, through its main.py), colour by default.

That repository trains ARCNN through the same main.py as QCN (`--net arcnn --dataloader jpeg`): no
quantization maps, [-1, 1] values, L1, Adam lr 1e-4 x0.1 every 20 epochs, 50 epochs, 64x64 dihedral
crops. It gives no command line, so the quality range is QCN's colour one, [1, 60] [GUESS], and the
batch the README's 256. Variants: `:grey` (the original paper's Y-channel network), `:small`.
"""

from jaxcar.configs import common, qcn


def get_config(arg=None):
  config = qcn.get_config(arg, name="qcn")  # the shared recipe; the network is replaced below
  color = config.data.color
  common.set_model(config, "arcnn", color=color)
  config.data.quality_range = (1, 60)
  return config
