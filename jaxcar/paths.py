"""Where the optional shared material (datasets, released weights) lives."""

import os
from pathlib import Path

SHARED_ENV = "JAXCAR_SHARED"
DEFAULT_SHARED = "../shared"


def shared_dir(override: str | os.PathLike | None = None) -> Path:
  """The shared folder: `override` if given, else $JAXCAR_SHARED, else ../shared."""
  return Path(override or os.environ.get(SHARED_ENV) or DEFAULT_SHARED).expanduser()


def require_shared(relative: str, override: str | os.PathLike | None = None) -> Path:
  """A path inside the shared folder, or a one-line error saying how to point at it."""
  path = shared_dir(override) / relative
  if not path.exists():
    raise FileNotFoundError(
        f"{path} not found; set ${SHARED_ENV} (or the --shared flag) to the folder that holds {relative}")
  return path


def absolute(path: str | os.PathLike) -> str:
  """`path` made absolute against the current directory (Orbax refuses relative paths); a URL such as
  gs://bucket/run is returned as given."""
  text = os.fspath(path)
  return text if "://" in text else os.path.abspath(os.path.expanduser(text))
