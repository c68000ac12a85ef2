"""jaxcar's own grey model (`jaxcar.models.pretrained("grey")`): configs/zoo_color.py's recipe on luma.

Data: BSDS500 (as MATLAB rgb2ycbcr Y) + Train400 (grey), 16 of the 800 held out for validation.
"""

from jaxcar.configs import zoo_color


def get_config(arg=None):
  return zoo_color.get_config(arg, color="grey")
