"""Sources on other file systems (gs://, through etils.epath, faked here on a local folder) and
per-process shards cut before decoding."""

import contextlib
import os
import threading

import numpy as np
import pytest
import skimage.data
from etils.epath import testing as epath_testing
from PIL import Image

from jaxcar.configs import base
from jaxcar.data import cache, pairs, pipeline, sources

BUCKET = "gs://bucket"


@contextlib.contextmanager
def fake_bucket(root):
  """gs://bucket/... served from the local folder `root` through epath's own mocking hooks: the real
  epath code paths for a gs:// path, and no network."""
  local = lambda path: str(path).replace(BUCKET, str(root), 1)
  remote = lambda path: str(path).replace(str(root), BUCKET, 1)
  on_local = lambda original, path, *args, **kwargs: original(local(path), *args, **kwargs)

  def walk(original, top, **kwargs):
    for folder, folders, files in original(local(top), **kwargs):
      yield remote(folder), folders, files

  def refuse_glob(original, pattern):
    raise AssertionError(f"glob({pattern}) on a bucket: epath refuses recursive globs on GCS")

  with epath_testing.mock_epath(open=on_local, exists=on_local, isdir=on_local, stat=on_local,
                                listdir=on_local, walk=walk, glob=refuse_glob):
    yield


def photo(i, height=40, width=56):
  return np.ascontiguousarray(skimage.data.astronaut()[60 * i:60 * i + height, 70 * i:70 * i + width])


def photos(folder, count):
  folder.mkdir(parents=True)
  for i in range(count):
    Image.fromarray(photo(i)).save(folder / f"{i}.png")
  return folder


def test_a_bucket_folder_is_listed_read_and_cached_through_epath(tmp_path):
  photos(tmp_path / "bucket" / "photos" / "deeper", 2)
  Image.fromarray(photo(2)).save(tmp_path / "bucket" / "photos" / "top.png")
  with fake_bucket(tmp_path / "bucket"):
    found = sources.list_images(f"{BUCKET}/photos")
    assert found == [f"{BUCKET}/photos/deeper/0.png", f"{BUCKET}/photos/deeper/1.png", f"{BUCKET}/photos/top.png"]
    np.testing.assert_array_equal(sources.load_image(found[1], "rgb"), photo(1))
    images = cache.decoded_images(f"{BUCKET}/photos", "rgb", tmp_path / "cache")
    assert images.paths == found and os.path.dirname(images.data_path) == str(tmp_path / "cache")
    np.testing.assert_array_equal(images[2], photo(2))
    # A changed file (epath's mtime is in seconds) gives a new cache, as locally.
    changed = tmp_path / "bucket" / "photos" / "top.png"
    Image.fromarray(photo(3)).save(changed)
    os.utime(changed, (0, os.stat(changed).st_mtime + 5))
    rebuilt = cache.decoded_images(f"{BUCKET}/photos", "rgb", tmp_path / "cache")
    assert rebuilt.data_path != images.data_path
    np.testing.assert_array_equal(rebuilt[2], photo(3))


def test_a_list_file_and_pairs_in_a_bucket(tmp_path):
  root = photos(tmp_path / "bucket" / "photos", 2).parent
  (root / "train.txt").write_text("photos/1.png\nphotos/missing.png\n")
  pair_folder = root / "pairs"
  pair_folder.mkdir()
  Image.fromarray(photo(0)).save(pair_folder / "x.bmp")
  Image.fromarray(photo(0)).save(pair_folder / "x.jpg", quality=20)
  with fake_bucket(root):
    assert sources.list_images(f"{BUCKET}/train.txt") == [f"{BUCKET}/photos/1.png"]
    entries = sources.list_images(f"pairs:{BUCKET}/pairs")
    assert entries == [pairs.join(f"{BUCKET}/pairs/x.jpg", f"{BUCKET}/pairs/x.bmp")]
    images = cache.decoded_images(f"pairs:{BUCKET}/pairs", "rgb", tmp_path / "cache")
    np.testing.assert_array_equal(images[0][..., 3:], photo(0))
    assert images.pair(0)[1] == 16


def test_a_missing_bucket_file_is_skipped_like_a_local_one(tmp_path):
  root = photos(tmp_path / "bucket" / "photos", 1).parent
  with fake_bucket(root):
    with pytest.raises(sources.ImageError, match="gs://bucket/photos/9.png"):
      sources.load_image(f"{BUCKET}/photos/9.png", "rgb")


@pytest.fixture
def count_decodes(monkeypatch):
  """The paths each sources.load_image call decodes (the cache decodes in threads)."""
  decoded, lock, original = [], threading.Lock(), sources.load_image

  def counting(path, color, orient=True):
    with lock:
      decoded.append(str(path))
    return original(path, color, orient)

  monkeypatch.setattr(sources, "load_image", counting)
  return decoded


def test_each_process_decodes_and_caches_only_its_own_shard(tmp_path, count_decodes):
  folder = photos(tmp_path / "photos", 7)
  config = base.get_config().data
  config.update(source=str(folder), cache_dir=str(tmp_path / "cache"), patch_size=16, validation="split:1")
  training, _ = sources.training_and_validation(config.source, config.validation)
  shards = []
  for process in range(2):
    count_decodes.clear()
    dataset = pipeline.train_dataset(config, batch_size=2, seed=0, process_index=process, process_count=2)
    assert sorted(count_decodes) == sorted(training[process::2])  # its half, each file once
    assert next(iter(dataset))["targets"].shape[0] == 2
    shards.append(set(count_decodes))
  assert not shards[0] & shards[1] and shards[0] | shards[1] == set(training)
  assert len(list((tmp_path / "cache").glob("*.bin"))) == 2  # one cache per shard
  count_decodes.clear()
  pipeline.train_dataset(config, batch_size=2, seed=0, process_index=1, process_count=2)
  assert not count_decodes  # the shard's cache is reused


def test_more_processes_than_images_is_a_one_line_error(tmp_path):
  config = base.get_config().data
  config.update(source=str(photos(tmp_path / "photos", 2)), cache_dir=str(tmp_path / "cache"), patch_size=16,
                validation="")
  with pytest.raises(ValueError, match="2 images cannot feed 3 processes"):
    pipeline.train_dataset(config, batch_size=1, seed=0, process_index=0, process_count=3)
