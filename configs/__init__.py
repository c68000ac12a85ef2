"""jaxcar's training recipes, one file per network; installed as the `jaxcar.configs` package.

`--config=NAME[:variants]` loads `NAME.py` here and calls its `get_config(variants)`. The files import
each other as `from jaxcar.configs import common`, which works from this repository and from an
installed jaxcar alike, and so does a config file of your own anywhere.
"""
