"""SACAR6 (Albluwi et al. 2018): the DACAR3 recipe (configs/dacar3.py) with the SACAR6 network, for 70 epochs:
the shipped SACAR optimizer counted 570,920 iterations = 70 x 8,156. Variants: `:small`.
"""

from jaxcar.configs import dacar3


def get_config(arg=None):
  return dacar3.get_config(arg, name="sacar6", epochs=70)
