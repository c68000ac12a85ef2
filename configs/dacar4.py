"""DACAR4 (Albluwi et al. 2018): the DACAR3 recipe (configs/dacar3.py) with the DACAR4 network. Variants: `:small`."""

from jaxcar.configs import dacar3


def get_config(arg=None):
  return dacar3.get_config(arg, name="dacar4")
