"""Where the optional shared material (datasets, released weights) and jaxcar's caches live."""

import os
from pathlib import Path

SHARED_ENV = "JAXCAR_SHARED"
DEFAULT_SHARED = "../shared"
CACHE_ENV = "JAXCAR_CACHE"
DEFAULT_CACHE = "~/.cache/jaxcar"


def shared_dir(override: str | os.PathLike | None = None) -> Path:
  """The shared folder: `override` if given, else $JAXCAR_SHARED, else ../shared."""
  return Path(override or os.environ.get(SHARED_ENV) or DEFAULT_SHARED).expanduser()


def cache_dir(use: str) -> Path:
  """The cache folder for one use (`decoded`, `ops-<key>`): a subfolder of $JAXCAR_CACHE, else of
  ~/.cache/jaxcar. Not created here."""
  return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser() / use


def require_shared(relative: str, override: str | os.PathLike | None = None, dataset: str | None = None,
                   fetch: str | None = None) -> Path:
  """A path inside the shared folder, or a one-line error saying how to point at it; for a named
  `dataset`, also how to download it (`python -m jaxcar.data.fetch FETCH`, FETCH defaulting to the name)."""
  path = shared_dir(override) / relative
  if not path.exists():
    if dataset:
      raise FileNotFoundError(
          f"dataset {dataset} not found under {shared_dir(override)} ({relative}); get it with: python -m "
          f"jaxcar.data.fetch {fetch or dataset} --to {shared_dir(override)} (or set ${SHARED_ENV} to the "
          f"folder that holds it)")
    raise FileNotFoundError(
        f"{path} not found; set ${SHARED_ENV} (or the --shared flag) to the folder that holds {relative}")
  return path


def absolute(path: str | os.PathLike) -> str:
  """`path` made absolute against the current directory (Orbax refuses relative paths); a URL such as
  gs://bucket/run is returned as given."""
  text = os.fspath(path)
  return text if "://" in text else os.path.abspath(os.path.expanduser(text))
