"""The Grain training pipeline: decoded images -> shard -> shuffle -> repeat -> degrade -> batch -> workers.

The per-example step stays in uint8 (crop, flip, JPEG round trip, tables); the float conversion and
the quantization maps are made per batch, where numpy runs at memory speed instead of call overhead.

Deterministic for a seed: Grain seeds each example's generator from the seed and the element index, so
the batches do not depend on the worker count, and the iterator state (get_state/set_state, or
grain.checkpoint.CheckpointSave inside an Orbax checkpoint) resumes at exactly the next batch.
"""

import ctypes

from absl import flags
import grain
import numpy as np

from jaxcar.data import cache, sources, transforms


def train_iterator(data_config, *, batch_size: int, seed: int, process_index: int | None = None,
                   process_count: int | None = None, num_workers: int | None = None):
  """A grain DatasetIterator of per-process batches (dicts of numpy arrays, see BUILD_NOTES.md).

  process_index/process_count default to JAX's; num_workers defaults to `data_config.num_workers`
  (0 runs the transforms in this process).
  """
  dataset = train_dataset(data_config, batch_size=batch_size, seed=seed, process_index=process_index,
                          process_count=process_count, prefetch=data_config.prefetch_buffer_size)
  workers = data_config.num_workers if num_workers is None else num_workers
  if workers > 0:
    if not flags.FLAGS.is_parsed():
      # Grain reads its own absl flags when it starts workers; outside an absl app (tests, notebooks)
      # they are unparsed and reading them raises, so take their defaults.
      flags.FLAGS.mark_as_parsed()
    options = grain.MultiprocessingOptions(num_workers=workers,
                                           per_worker_buffer_size=data_config.prefetch_buffer_size)
    dataset = dataset.mp_prefetch(options, worker_init_fn=keep_freed_memory)
  return iter(dataset)


def keep_freed_memory(worker_index: int = 0, worker_count: int = 1) -> None:
  """Worker start-up: make glibc keep freed batch buffers for reuse instead of unmapping them.

  Every batch allocates ~8 MB of fresh arrays; by default glibc maps and unmaps such blocks, so each
  batch pays ~1,500 page faults. Keeping them on the heap measured ~25% more patches per CPU second
  per worker (see BUILD_NOTES.md). A no-op where glibc is absent.
  """
  del worker_index, worker_count  # Grain's worker_init_fn signature
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return
  m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
  libc.mallopt(m_mmap_threshold, 1 << 30)
  libc.mallopt(m_trim_threshold, 1 << 30)


def train_dataset(data_config, *, batch_size: int, seed: int, process_index: int | None = None,
                  process_count: int | None = None, prefetch: int = 2) -> grain.IterDataset:
  """The pipeline up to (not including) the worker processes; `prefetch` batches are made ahead."""
  if process_index is None or process_count is None:
    process_index, process_count = _jax_process()
  settings = transforms.PairSettings.from_config(data_config)
  images = cache.decoded_images(data_config.source, data_config.color, data_config.get("cache_dir"))
  usable = large_enough(images, settings.crop_size)
  if len(usable) < process_count:
    raise ValueError(
        f"{data_config.source}: {len(usable)} usable images cannot feed {process_count} processes")
  # Different processes hold different images but the same element indices: fold the process in so
  # their crops and qualities are not drawn in lockstep.
  process_seed = int(np.random.SeedSequence([seed, process_index]).generate_state(1)[0])
  return (grain.MapDataset.source(images.subset(usable))[process_index::process_count]
          .seed(process_seed)
          .shuffle()
          .repeat()
          .random_map(transforms.DegradePatch(settings))
          .batch(batch_size, drop_remainder=True)
          .map(transforms.ToModelBatch(settings))
          # Grain's default reads ahead 500 elements on 16 threads: here 500 batches (GBs) per process,
          # and threads fighting over the GIL. One thread per process, a few batches ahead, is enough:
          # parallelism comes from worker processes.
          .to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch)))


def large_enough(images: cache.DecodedImages, size: int) -> list[int]:
  """Indices of the images at least size x size; the others are reported once, by name."""
  small = {path: f"smaller than the {size}x{size} crop ({shape[0]}x{shape[1]})"
           for path, shape in zip(images.paths, images.shapes) if min(shape[:2]) < size}
  sources.report_skipped(small, "training images smaller than the crop")
  return [i for i, shape in enumerate(images.shapes) if min(shape[:2]) >= size]


def _jax_process() -> tuple[int, int]:
  import jax  # pylint: disable=import-outside-toplevel  (only the main process needs it)
  return jax.process_index(), jax.process_count()
