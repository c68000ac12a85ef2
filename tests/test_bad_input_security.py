"""Issue 14 (reliability and security): bad or hostile files on disk are refused with one actionable
line, never loaded, served or left behind.

Covers the planted native library (item 1: `jaxcar.ops.native`), the decoded-image cache trusted by
size only (item 2: `jaxcar.data.cache`) and the `*.partial` files a killed cache builder leaves
(item 11, last part). The native tests call `native.load.__wrapped__` / `native._built_library`, so
they never touch the per-process `functools.cache` of `load` and `available` that the other tests use.
"""

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import skimage.data
from PIL import Image

from jaxcar.data import cache, sources
from jaxcar.ops import native

# pylint: disable=protected-access

COMPILER = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
PLANTED_SOURCE = r"""
#include <cstdio>
__attribute__((constructor)) static void planted() {
  if (std::FILE *f = std::fopen(MARKER, "w")) { std::fputs("planted code ran", f); std::fclose(f); }
}
extern "C" int NotJaxcar() { return 1; }
"""


@pytest.fixture(scope="module")
def planted_library(tmp_path_factory):
  """A shared library whose constructor writes a marker file (any file stands in without a compiler)."""
  folder = tmp_path_factory.mktemp("planted")
  marker, library = folder / "marker", folder / "libplanted.so"
  if COMPILER is None:
    library.write_bytes(b"\x7fELF not a real library")
    return library, marker
  (folder / "planted.cc").write_text(PLANTED_SOURCE)
  subprocess.run([COMPILER, "-shared", "-fPIC", f'-DMARKER="{marker}"', str(folder / "planted.cc"),
                  "-o", str(library)], check=True, capture_output=True)
  return library, marker


@pytest.fixture
def library_path(monkeypatch, tmp_path):
  """Where `native` looks for its library, under a JAXCAR_CACHE of this test's own."""
  monkeypatch.setenv("JAXCAR_CACHE", str(tmp_path / "cache"))
  prefix = tmp_path / "onednn"  # never compiled against unless a test puts the real prefix back
  monkeypatch.setattr(native, "_onednn_prefix", lambda: prefix)
  return native._library_path(prefix)


@pytest.fixture
def no_rebuild(monkeypatch):
  """Records the rebuilds asked for instead of compiling; fails them like a missing compiler."""
  calls = []

  def refuse(compiler, prefix, library, reason):
    calls.append(reason)
    raise native.Unavailable(f"test: not compiling ({reason})")

  monkeypatch.setattr(native, "_run_compiler", refuse)
  monkeypatch.setenv("CXX", sys.executable)  # any existing program: _compile gets to _run_compiler
  return calls


def plant(library, planted, mode=0o700, digest=True):
  """Pre-creates the build folder with `mode` and puts `planted` there, with a matching digest."""
  library.parent.mkdir(parents=True)
  os.chmod(library.parent, mode)
  shutil.copyfile(planted, library)
  os.chmod(library, 0o700)
  if digest:
    native._digest_path(library).write_text(f"{hashlib.sha256(planted.read_bytes()).hexdigest()}  x\n")


def test_planted_library_in_a_world_writable_folder_is_refused_not_run(library_path, planted_library,
                                                                       no_rebuild, monkeypatch, caplog):
  """Item 1: a library planted in a pre-created, world-writable ops-<key> folder (even with a matching
  digest beside it) is never loaded: XLA instead, with one logged line naming the folder and the fix."""
  planted, marker = planted_library
  marker.unlink(missing_ok=True)
  plant(library_path, planted, mode=0o777)
  with pytest.raises(native.Unavailable, match=rf"refusing the build folder {library_path.parent}: "
                                               rf"writable by others \(mode 777\); `chmod 700 "):
    native.load.__wrapped__()
  assert not marker.exists(), "the planted library's constructor ran"
  assert not no_rebuild, "nothing may be built into a folder others can write"
  monkeypatch.setattr(native, "load", native.load.__wrapped__)
  with caplog.at_level(logging.WARNING):
    assert native.available.__wrapped__() is False
  lines = [r.getMessage() for r in caplog.records if "oneDNN convolutions unavailable" in r.getMessage()]
  assert len(lines) == 1 and str(library_path.parent) in lines[0] and "\n" not in lines[0]
  assert not marker.exists()


def test_group_writable_folder_is_refused(library_path, planted_library, no_rebuild):
  """Item 1: a group-writable build folder is refused (no load, no build), naming `chmod 700`."""
  planted, marker = planted_library
  marker.unlink(missing_ok=True)
  plant(library_path, planted, mode=0o770)
  with pytest.raises(native.Unavailable, match=r"others \(mode 770\); `chmod 700 .*` or remove it"):
    native.load.__wrapped__()
  assert not marker.exists() and not no_rebuild


def test_folder_owned_by_someone_else_is_refused(library_path, planted_library, no_rebuild, monkeypatch):
  """Item 1: a pre-created build folder owned by another user is refused, whatever its mode."""
  planted, marker = planted_library
  marker.unlink(missing_ok=True)
  plant(library_path, planted, mode=0o700)
  monkeypatch.setattr(os, "geteuid", lambda: os.stat(library_path.parent).st_uid + 1)
  with pytest.raises(native.Unavailable, match=r"owned by uid \d+, not by you; remove it"):
    native.load.__wrapped__()
  assert not marker.exists() and not no_rebuild


def test_library_without_a_recorded_digest_is_not_loaded(library_path, planted_library, no_rebuild):
  """Item 1: a library in a private folder of ours but with no recorded SHA-256 (planted, or from
  before digests were recorded) is not loaded; it is rebuilt instead."""
  planted, marker = planted_library
  marker.unlink(missing_ok=True)
  plant(library_path, planted, digest=False)
  with pytest.raises(native.Unavailable, match="not compiling"):
    native.load.__wrapped__()
  assert not marker.exists()
  assert no_rebuild == ["no recorded SHA-256 beside it"]


def test_digest_mismatch_is_refused_and_rebuilt(library_path, planted_library, no_rebuild):
  """Item 1: a library whose bytes differ from its recorded SHA-256 is not loaded but rebuilt; a
  library writable by others inside our folder likewise."""
  planted, marker = planted_library
  marker.unlink(missing_ok=True)
  plant(library_path, planted)
  native._digest_path(library_path).write_text("0" * 64 + "  libjaxcar_onednn.so\n")
  with pytest.raises(native.Unavailable, match="not compiling"):
    native.load.__wrapped__()
  assert len(no_rebuild) == 1 and "differs from the one recorded at build time" in no_rebuild[0]
  native._digest_path(library_path).write_text(hashlib.sha256(planted.read_bytes()).hexdigest())
  os.chmod(library_path, 0o722)
  with pytest.raises(native.Unavailable, match="not compiling"):
    native.load.__wrapped__()
  assert no_rebuild[-1] == "writable by others (mode 722)"
  assert not marker.exists()


@pytest.mark.skipif(COMPILER is None, reason="no C++ compiler")
def test_digest_mismatch_is_rebuilt_in_the_private_folder(monkeypatch, tmp_path, planted_library):
  """Item 1: with a compiler and oneDNN, the tampered library is replaced by a fresh build whose digest
  is recorded; the result passes the checks (the planted code never runs)."""
  try:
    prefix = native._onednn_prefix()
  except native.Unavailable as error:
    pytest.skip(str(error))
  monkeypatch.setenv("JAXCAR_CACHE", str(tmp_path / "cache"))
  library = native._library_path(prefix)
  planted, marker = planted_library
  marker.unlink(missing_ok=True)
  plant(library, planted, mode=0o755)  # ours and writable by us alone: kept, and made 0700
  native._digest_path(library).write_text("f" * 64)
  assert native._built_library() == library
  assert not marker.exists()
  assert stat.S_IMODE(os.stat(library.parent).st_mode) == 0o700
  assert stat.S_IMODE(os.stat(library).st_mode) & 0o022 == 0
  assert native._read_digest(library) == hashlib.sha256(library.read_bytes()).hexdigest()
  assert native._untrusted(library) is None
  assert not list(library.parent.glob("*.tmp*"))


def test_new_build_folder_is_private(library_path, no_rebuild):
  """Item 1: the build folder jaxcar creates is 0700, whatever the umask."""
  previous = os.umask(0)
  try:
    with pytest.raises(native.Unavailable, match="not compiling"):
      native.load.__wrapped__()
  finally:
    os.umask(previous)
  assert stat.S_IMODE(os.stat(library_path.parent).st_mode) == 0o700
  assert no_rebuild == [None]  # a first build, not a rebuild


def test_a_link_for_the_build_folder_is_refused(library_path, tmp_path, no_rebuild):
  """Item 1: a symlink where the build folder should be (pointing anywhere) is refused."""
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir(mode=0o700)
  library_path.parent.parent.mkdir(parents=True)
  library_path.parent.symlink_to(elsewhere)
  with pytest.raises(native.Unavailable, match="not a plain folder"):
    native.load.__wrapped__()
  assert not no_rebuild


@pytest.mark.skipif(COMPILER is None, reason="no C++ compiler")
def test_library_without_the_symbols_falls_back(library_path, tmp_path):
  """Item 1: a trusted library that lacks the expected symbols gives Unavailable (XLA's convolutions),
  not an AttributeError traceback."""
  source = tmp_path / "empty.cc"
  source.write_text('extern "C" int Unrelated() { return 0; }\n')
  built = tmp_path / "libempty.so"
  subprocess.run([COMPILER, "-shared", "-fPIC", str(source), "-o", str(built)], check=True,
                 capture_output=True)
  plant(library_path, built)
  with pytest.raises(native.Unavailable, match=r"lacks the symbol JaxcarConvForward.*remove .* rebuilt"):
    native.load.__wrapped__()


# Item 2 and item 11: the decoded-image cache.

def photo(height, width, shift=0):
  return np.ascontiguousarray(skimage.data.astronaut()[shift:shift + height, 150:150 + width])


def images_folder(tmp_path, count=3):
  folder = tmp_path / "images"
  folder.mkdir()
  for i in range(count):
    Image.fromarray(photo(24 + 4 * i, 32, shift=20 * i)).save(folder / f"{i}.png")
  return folder


def test_cache_bytes_overwritten_in_place_are_detected_and_rebuilt(tmp_path, caplog):
  """Item 2: bytes of a cached image overwritten in place (same size) are never served: opening the
  cache logs one warning and rebuilds it, and the pixels are the decoded file's."""
  folder, cache_dir = images_folder(tmp_path), tmp_path / "cache"
  images = cache.decoded_images(folder, "rgb", cache_dir)
  size = os.path.getsize(images.data_path)
  with open(images.data_path, "r+b") as data:  # zero the second image, keeping the size
    data.seek(images.offsets[1])
    data.write(bytes(int(np.prod(images.shapes[1]))))
  assert os.path.getsize(images.data_path) == size
  with caplog.at_level(logging.WARNING):
    reopened = cache.decoded_images(folder, "rgb", cache_dir)
  warnings = [r.getMessage() for r in caplog.records if "differ from the SHA-256" in r.getMessage()]
  assert len(warnings) == 1 and "1 of 3 images" in warnings[0] and "1.png" in warnings[0]
  for i, path in enumerate(reopened.paths):
    np.testing.assert_array_equal(reopened[i], sources.load_image(path, "rgb"))
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    cache.decoded_images(folder, "rgb", cache_dir)
  assert "differ from the SHA-256" not in caplog.text  # the rebuilt cache is sound


def test_cache_without_recorded_digests_is_rebuilt(tmp_path):
  """Item 2: an index from before digests were recorded is not trusted; it is rebuilt in place."""
  folder, cache_dir = images_folder(tmp_path, count=2), tmp_path / "cache"
  images = cache.decoded_images(folder, "grey", cache_dir)
  index_path = images.data_path.removesuffix(".bin") + ".json"
  with open(index_path) as file:
    legacy = file.read()
  with open(index_path, "w") as file:
    file.write(legacy.replace('"digests"', '"unused"'))
  with open(images.data_path, "r+b") as data:
    data.write(bytes(16))
  reopened = cache.decoded_images(folder, "grey", cache_dir)
  assert reopened.data_path == images.data_path
  np.testing.assert_array_equal(reopened[0], sources.load_image(reopened.paths[0], "grey"))


def test_partial_of_a_builder_killed_with_sigkill_is_removed_by_the_next_build(tmp_path, caplog):
  """Item 11 (last part): `kill -9` during a cache build leaves a `*.partial`; the next build removes it."""
  folder, cache_dir = images_folder(tmp_path), tmp_path / "cache"
  child = textwrap.dedent(f"""
      import os, signal
      from jaxcar.data import cache
      load = cache._try_load
      def killed_midway(path, color):
        if path.endswith("2.png"):
          os.kill(os.getpid(), signal.SIGKILL)
        return load(path, color)
      cache._try_load = killed_midway
      cache.decoded_images({str(folder)!r}, "rgb", {str(cache_dir)!r})
      """)
  result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=False,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == -9, result.stderr
  left = list(cache_dir.glob("*.partial"))
  assert len(left) == 1 and f".{os.getpid()}." not in left[0].name
  with caplog.at_level(logging.WARNING):
    images = cache.decoded_images(folder, "rgb", cache_dir)
  assert not list(cache_dir.glob("*.partial"))
  assert "removed 1 stale partial file(s)" in caplog.text and left[0].name in caplog.text
  np.testing.assert_array_equal(images[2], sources.load_image(images.paths[2], "rgb"))


def test_only_partials_of_dead_or_silent_writers_are_removed(tmp_path):
  """Item 11 (last part): a partial whose writer (this host, pid in its name) is gone, or that nobody
  wrote to for an hour, is removed; a live writer's fresh partial is left alone."""
  folder, cache_dir = images_folder(tmp_path, count=1), tmp_path / "cache"
  cache_dir.mkdir()
  finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True)
  dead_pid = int(finished.stdout)
  host = cache._host()
  dead = cache_dir / f"rgb-1-x.bin.{host}.{dead_pid}.abcd1234.partial"
  live = cache_dir / f"rgb-1-x.bin.{host}.{os.getpid()}.abcd1234.partial"
  other_host_fresh = cache_dir / f"rgb-1-x.bin.elsewhere-{host}.{dead_pid}.abcd1234.partial"
  old_unnamed = cache_dir / "rgb-1-x.binq8z3k1.partial"  # the naming before pids were recorded
  for path in (dead, live, other_host_fresh, old_unnamed):
    path.write_bytes(b"half")
  hours_ago = time.time() - 2 * 3600
  os.utime(old_unnamed, (hours_ago, hours_ago))
  cache.decoded_images(folder, "rgb", cache_dir)
  left = {path.name for path in cache_dir.glob("*.partial")}
  assert left == {live.name, other_host_fresh.name}
