"""An on-disk cache of decoded images, memory-mapped, so each file is decoded once and not once per patch.

Decoding a 481x321 PNG costs ~7 ms; cutting a patch and a JPEG round trip cost ~0.3 ms. The cache is
one flat uint8 file plus a JSON index, named by a fingerprint of the source (every path, size and
mtime) and the colour mode: changing, adding or removing a file gives a new name, so a stale cache is
never read. Workers map the same file, so the page cache holds one copy for all of them.

The index also records each image's SHA-256, checked every time the cache is opened (0.1-0.6 s for
the 400 BSDS500 images, 185 MB, hashed in threads on 2 cores): bytes changed after the cache was
written are never served as pixels; the cache is rebuilt instead, with one warning. A builder killed
midway leaves a `*.partial` file named after its host and pid; the next build removes those whose
writer is gone.

A pair of a `pairs:` source is one entry: its decoded JPEG and clean image side by side on the channel
axis, its JPEG's quantization tables and block grid in the index ("extras"); the fingerprint stamps
both files. Sources on other file systems (gs://) are stamped through epath; the cache stays local.
"""

import concurrent.futures
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxcar import paths as jaxcar_paths
from jaxcar.data import pairs, sources

_FORMAT = 1  # bump when the decoding rules in sources.load_image change
_STALE_AFTER_S = 3600  # a *.partial not written to for this long has no live writer (any host)
_PARTIAL_NAME = re.compile(r"\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^.]*\.partial$")


def default_cache_dir() -> Path:
  """$JAXCAR_CACHE/decoded, default ~/.cache/jaxcar/decoded."""
  return jaxcar_paths.cache_dir("decoded")


class DecodedImages:
  """Sequence of uint8 (H, W, C) read-only views into the memory-mapped cache; cheap to pickle."""

  def __init__(self, data_path: str, index: dict):
    self.data_path = data_path
    self.paths = index["paths"]
    self.shapes = [tuple(shape) for shape in index["shapes"]]
    self.offsets = index["offsets"]
    self.skipped = index["skipped"]
    # Per pair: its JPEG's tables as an array once here, not per patch (a list-to-array copy per patch
    # cost more than cropping it).
    self.extras = [None if extra is None else {"tables": np.asarray(extra["tables"], np.int32),
                                               "grid": int(extra["grid"])}
                   for extra in index.get("extras") or [None] * len(self.paths)]
    self._data = None

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int) -> np.ndarray:
    if self._data is None:  # opened lazily, so each worker process maps the file itself
      self._data = np.memmap(self.data_path, np.uint8, mode="r")
    shape = self.shapes[i]
    return self._data[self.offsets[i]:self.offsets[i] + int(np.prod(shape))].reshape(shape)

  def subset(self, indices: list[int]) -> "DecodedImages":
    """The same cache restricted to `indices` (in that order)."""
    index = {"paths": [self.paths[i] for i in indices], "shapes": [self.shapes[i] for i in indices],
             "offsets": [self.offsets[i] for i in indices], "skipped": self.skipped,
             "extras": [self.extras[i] for i in indices]}
    return DecodedImages(self.data_path, index)

  def pair(self, i: int) -> tuple[np.ndarray, int] | None:
    """(quantization tables (n, 8, 8) int32, block grid) of entry i if it is a real JPEG pair, else None."""
    extra = self.extras[i]
    return None if extra is None else (extra["tables"], extra["grid"])

  def __getstate__(self):
    return {**self.__dict__, "_data": None}


def decoded_images(source, color: str, cache_dir=None, paths=None) -> DecodedImages:
  """The decoded images of `source` (or of `paths`, a part of it), building the cache on first use;
  bad files are skipped, reported."""
  paths = sources.list_images(source) if paths is None else paths
  folder = Path(cache_dir or default_cache_dir()).expanduser()
  stem = folder / _fingerprint(paths, color)
  index_path, data_path = stem.with_suffix(".json"), stem.with_suffix(".bin")
  index = _read_index(index_path, data_path)
  if index is not None:
    changed = _changed_images(index, data_path)
    if changed:
      logging.warning("decoded-image cache %s: %d of %d images differ from the SHA-256 recorded when it "
                      "was written (first: %s); rebuilding it from the source images",
                      data_path, len(changed), len(index["paths"]), changed[0])
      index = None
  if index is None:
    folder.mkdir(parents=True, exist_ok=True)
    _build(paths, color, data_path, index_path)
    index = _read_index(index_path, data_path)
    if index is None:
      raise OSError(f"could not write a complete decoded-image cache at {data_path}; check the disk")
  sources.report_skipped(index["skipped"], f"image source {source}")
  if not index["paths"]:
    raise FileNotFoundError(f"image source {source} holds no readable image (all {len(paths)} skipped)")
  return DecodedImages(str(data_path), index)


def _read_index(index_path: Path, data_path: Path) -> dict | None:
  """The index if it and its data file are complete (a crash or a full disk can leave either short)
  and it records the images' digests (an index from before they were recorded is rebuilt)."""
  try:
    index = json.loads(index_path.read_text())
    expected = sum(int(np.prod(shape)) for shape in index["shapes"])
    if len(index["digests"]) != len(index["paths"]):
      return None
    return index if data_path.stat().st_size == expected else None
  except (OSError, ValueError, KeyError, TypeError):
    return None


def _changed_images(index: dict, data_path: Path) -> list[str]:
  """The images whose cached bytes no longer match their recorded SHA-256 (hashed in threads:
  hashlib releases the GIL)."""
  data = np.memmap(data_path, np.uint8, mode="r") if index["paths"] else np.zeros(0, np.uint8)
  sizes = [int(np.prod(shape)) for shape in index["shapes"]]

  def matches(i: int) -> bool:
    offset = index["offsets"][i]
    return hashlib.sha256(data[offset:offset + sizes[i]]).hexdigest() == index["digests"][i]

  with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
    verdicts = list(pool.map(matches, range(len(sizes))))
  return [path for path, ok in zip(index["paths"], verdicts) if not ok]


def _fingerprint(paths: list[str], color: str) -> str:
  digest = hashlib.sha256(f"{_FORMAT}|{color}".encode())
  for path in paths:
    files = pairs.split(path) if pairs.is_pair(path) else (path,)
    digest.update("".join(_stamp(file) for file in files).encode())
  return f"{color}-{len(paths)}-{digest.hexdigest()[:24]}"


def _stamp(path: str) -> str:
  """|path|size|mtime: what changes when the file does (epath's mtime, in seconds, for a URI)."""
  if sources.is_uri(path):
    stat = sources.as_path(path).stat()
    return f"|{path}|{stat.length}|{stat.mtime}"
  stat = os.stat(path)
  return f"|{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"


def _build(paths: list[str], color: str, data_path: Path, index_path: Path) -> None:
  """Decodes every file once (threads: Pillow releases the GIL while decoding) and writes atomically."""
  _remove_stale_partials(data_path.parent)
  logging.info("decoding %d images into %s (once; later runs map it)", len(paths), data_path)
  index = {"paths": [], "shapes": [], "offsets": [], "digests": [], "skipped": {}, "extras": []}
  handle, partial = _make_partial(data_path)
  try:
    with os.fdopen(handle, "wb") as out, concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
      for path, result in zip(paths, pool.map(lambda p: _try_load(p, color), paths)):
        if isinstance(result, str):
          index["skipped"][path] = result
          continue
        result, extra = result if isinstance(result, tuple) else (result, None)
        index["extras"].append(extra)
        data = np.ascontiguousarray(result).tobytes()
        index["paths"].append(path)
        index["shapes"].append(list(result.shape))
        index["offsets"].append(out.tell())
        index["digests"].append(hashlib.sha256(data).hexdigest())
        out.write(data)
    # Data first, index last, each renamed into place whole: a reader never sees a partial file.
    # Concurrent builders (several hosts on one file system) write identical content; the last rename wins.
    os.replace(partial, data_path)
    _write_atomically(index_path, json.dumps(index))
  finally:
    if os.path.exists(partial):
      os.remove(partial)


def _write_atomically(path: Path, text: str) -> None:
  handle, partial = _make_partial(path)
  with os.fdopen(handle, "w") as out:
    out.write(text)
  os.replace(partial, path)


def _host() -> str:
  return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _make_partial(path: Path) -> tuple[int, str]:
  """A new `<name>.<host>.<pid>.<random>.partial` beside `path`: the name says whose it is, so a later
  build can tell that its writer is dead."""
  return tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.{_host()}.{os.getpid()}.", suffix=".partial")


def _remove_stale_partials(folder: Path) -> None:
  """Removes the `*.partial` files of dead builders (killed midway, e.g. `kill -9`): those of this host
  whose pid no longer runs, and any not written to for an hour (another host's, or an old name)."""
  removed = []
  for partial in folder.glob("*.partial"):
    match = _PARTIAL_NAME.search(partial.name)
    try:
      dead = match is not None and match["host"] == _host() and not _running(int(match["pid"]))
      if dead or time.time() - partial.stat().st_mtime > _STALE_AFTER_S:
        partial.unlink()
        removed.append(partial.name)
    except OSError:  # gone meanwhile (its writer finished, or another builder removed it)
      continue
  if removed:
    logging.warning("removed %d stale partial file(s) left in %s by an interrupted cache build: %s",
                    len(removed), folder, ", ".join(sorted(removed)))


def _running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process
    return True
  return True


def _try_load(path: str, color: str):
  """The decoded image (a pair: (stacked pixels, extras)), or the reason it cannot be used (a string)."""
  try:
    return pairs.load_pair(path, color) if pairs.is_pair(path) else sources.load_image(path, color)
  except sources.ImageError as error:
    return str(error).removeprefix(f"{path}: ")
