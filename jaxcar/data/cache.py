"""An on-disk cache of decoded images, memory-mapped, so each file is decoded once and not once per patch.

Decoding a 481x321 PNG costs ~7 ms; cutting a patch and a JPEG round trip cost ~0.3 ms. The cache is
one flat uint8 file plus a JSON index, named by a fingerprint of the source (every path, size and
mtime) and the colour mode: changing, adding or removing a file gives a new name, so a stale cache is
never read. Workers map the same file, so the page cache holds one copy for all of them.
"""

import concurrent.futures
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from jaxcar.data import sources

CACHE_ENV = "JAXCAR_CACHE"
_FORMAT = 1  # bump when the decoding rules in sources.load_image change


def default_cache_dir() -> Path:
  return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "jaxcar" / "decoded")


class DecodedImages:
  """Sequence of uint8 (H, W, C) read-only views into the memory-mapped cache; cheap to pickle."""

  def __init__(self, data_path: str, index: dict):
    self.data_path = data_path
    self.paths = index["paths"]
    self.shapes = [tuple(shape) for shape in index["shapes"]]
    self.offsets = index["offsets"]
    self.skipped = index["skipped"]
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
             "offsets": [self.offsets[i] for i in indices], "skipped": self.skipped}
    return DecodedImages(self.data_path, index)

  def __getstate__(self):
    return {**self.__dict__, "_data": None}


def decoded_images(source, color: str, cache_dir=None) -> DecodedImages:
  """The decoded images of `source`, building the cache on first use; bad files are skipped, reported."""
  paths = sources.list_images(source)
  folder = Path(cache_dir or default_cache_dir()).expanduser()
  stem = folder / _fingerprint(paths, color)
  index_path, data_path = stem.with_suffix(".json"), stem.with_suffix(".bin")
  if not (index_path.is_file() and data_path.is_file()):
    folder.mkdir(parents=True, exist_ok=True)
    _build(paths, color, data_path, index_path)
  index = json.loads(index_path.read_text())
  sources.report_skipped(index["skipped"], f"image source {source}")
  if not index["paths"]:
    raise FileNotFoundError(f"image source {source} holds no readable image (all {len(paths)} skipped)")
  return DecodedImages(str(data_path), index)


def _fingerprint(paths: list[str], color: str) -> str:
  digest = hashlib.sha256(f"{_FORMAT}|{color}".encode())
  for path in paths:
    stat = os.stat(path)
    digest.update(f"|{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
  return f"{color}-{len(paths)}-{digest.hexdigest()[:24]}"


def _build(paths: list[str], color: str, data_path: Path, index_path: Path) -> None:
  """Decodes every file once (threads: Pillow releases the GIL while decoding) and writes atomically."""
  logging.info("decoding %d images into %s (once; later runs map it)", len(paths), data_path)
  index = {"paths": [], "shapes": [], "offsets": [], "skipped": {}}
  partial = data_path.with_name(f"{data_path.name}.{os.getpid()}.partial")
  offset = 0
  with open(partial, "wb") as out, concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    for path, result in zip(paths, pool.map(lambda p: _try_load(p, color), paths)):
      if isinstance(result, str):
        index["skipped"][path] = result
        continue
      out.write(np.ascontiguousarray(result).tobytes())
      index["paths"].append(path)
      index["shapes"].append(list(result.shape))
      index["offsets"].append(offset)
      offset += result.size
  # Data first, index last: a reader that sees the index always finds complete data. Concurrent
  # builders (several hosts on one file system) write identical content, so the last rename wins.
  os.replace(partial, data_path)
  partial_index = index_path.with_name(f"{index_path.name}.{os.getpid()}.partial")
  partial_index.write_text(json.dumps(index))
  os.replace(partial_index, index_path)


def _try_load(path: str, color: str):
  """The decoded image, or the reason it cannot be used (a string)."""
  try:
    return sources.load_image(path, color)
  except sources.ImageError as error:
    return str(error).removeprefix(f"{path}: ")
