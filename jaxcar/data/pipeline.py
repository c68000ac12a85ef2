"""The Grain training pipeline: paths -> this process's shard -> decoded images -> batches -> workers.

The per-example step stays in uint8 (crop, flip, JPEG round trip, tables), and so do the batches the
workers ship: uint8 images and one 8x8 period of the quantization maps (`transforms.to_model_batch`),
a fifth of the bytes of floats. The jitted train step makes the model's floats from them on the device
(`training.steps.model_batch`), bit for bit what `prepare.batch_model_inputs` gives on the host.

Deterministic for a seed: a batch is a pure function of the seed and its number, so the batches do
not depend on the worker count, and the iterator state (get_state/set_state, or
grain.checkpoint.CheckpointSave inside an Orbax checkpoint) resumes at exactly the next batch.
"""

from absl import flags
import grain
import numpy as np

from jaxcar.data import cache, sources, transforms
from jaxcar.ops import host_memory


def train_iterator(data_config, *, batch_size: int, seed: int, process_index: int | None = None,
                   process_count: int | None = None, num_workers: int | None = None,
                   keep_freed_memory: bool = True):
  """A grain DatasetIterator of per-process batches (dicts of numpy arrays, see BUILD_NOTES.md, Layout).

  process_index/process_count default to JAX's; num_workers defaults to `data_config.num_workers`
  (0 runs the transforms in this process). keep_freed_memory=False leaves the workers' malloc at
  glibc's defaults (the input benchmark's A/B of that choice).
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
    dataset = grain.experimental.WithOptionsIterDataset(
        dataset, grain.experimental.DatasetOptions(min_shm_size=MIN_SHARED_MEMORY_BYTES))
    dataset = dataset.mp_prefetch(options, worker_init_fn=_keep_freed_memory if keep_freed_memory else None)
  return iter(dataset)


# Arrays smaller than this go from a worker to the training process through the pipe, pickled; larger
# ones through shared memory (Grain's default sends every array that way). Each shared-memory array
# costs a segment created, registered with multiprocessing's resource tracker, mapped twice and
# unlinked: for a batch of 16-64 patches (0.2-0.8 MB per array) that cost more CPU than the pickling
# copy, for 256 (3 MB) less (docs/performance.md, Input).
MIN_SHARED_MEMORY_BYTES = 1 << 20


def _keep_freed_memory(worker_index: int = 0, worker_count: int = 1) -> None:
  """Worker start-up: glibc keeps freed batch buffers for reuse (`host_memory`) instead of unmapping
  them; each batch's ~8 MB of fresh arrays otherwise costs ~1,500 page faults (docs/performance.md, Input pipeline)."""
  del worker_index, worker_count  # Grain's worker_init_fn signature
  host_memory.keep_freed_memory()


def train_dataset(data_config, *, batch_size: int, seed: int, process_index: int | None = None,
                  process_count: int | None = None, prefetch: int = 2) -> grain.IterDataset:
  """The pipeline up to (not including) the worker processes; `prefetch` batches are made ahead."""
  if process_index is None or process_count is None:
    process_index, process_count = _jax_process()
  settings = transforms.PairSettings.from_config(data_config)
  paths, _ = sources.training_and_validation(data_config.source, data_config.get("validation", ""))
  if len(paths) < process_count:
    raise ValueError(f"{data_config.source}: {len(paths)} images cannot feed {process_count} processes "
                     f"(each needs usable images of its own)")
  # Shard the sorted list before decoding (the same split on every host): each host reads, decodes
  # and caches only its own files, which on a pod reading gs:// is 1/process_count of the traffic.
  shard = paths[process_index::process_count]
  what = data_config.source if process_count == 1 else f"{data_config.source} (process {process_index}'s shard)"
  images = cache.decoded_images(what, data_config.color, data_config.get("cache_dir"), shard)
  usable = large_enough(images, settings.crop_size)
  if not usable:
    raise ValueError(f"{what}: no usable images ({len(shard)} files, all smaller than the "
                     f"{settings.crop_size}x{settings.crop_size} crop or unreadable)")
  # Different processes hold different images but the same batch numbers: fold the process in so
  # their crops and qualities are not drawn in lockstep.
  process_seed = int(np.random.SeedSequence([seed, process_index]).generate_state(1)[0])
  batches = TrainBatches(images.subset(usable), settings, batch_size, process_seed)
  # Grain's default reads ahead 500 elements on 16 threads: here 500 batches (GBs) per process, and
  # threads fighting over the GIL. One thread per process, a few batches ahead, is enough: parallelism
  # comes from worker processes.
  return grain.MapDataset.source(batches).to_iter_dataset(
      grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch))


class TrainBatches:
  """Endless random-access sequence of training batches: batch k is a pure function of (seed, k).

  Example e (= k * batch_size + j) is image `order(e // n)[e % n]` of the n images: every epoch visits
  each image once, in a fresh order. Its crop, transform and quality come from the batch's own
  generator, drawn example by example, so every example is an independent random crop.

  Grain sees one element per *batch*, not per example: its per-element machinery (index shuffling,
  per-element generators, stacking) cost more CPU than cropping and compressing a patch. Because a
  batch depends only on its number, Grain still splits batches across workers, checkpoints the next
  batch number and resumes there, and the batches do not depend on the worker count.
  """

  def __init__(self, images: cache.DecodedImages, settings: transforms.PairSettings, batch_size: int,
               seed: int):
    self.images, self.settings, self.batch_size, self.seed = images, settings, batch_size, seed
    self._order_epoch, self._order = -1, None

  def __len__(self) -> int:
    return _ENDLESS

  def __getitem__(self, k: int) -> dict:
    n = len(self.images)
    examples = np.arange(k * self.batch_size, (k + 1) * self.batch_size)
    rng = np.random.default_rng([self.seed, _CROPS, k])
    patches = [self.patch(int(self.order(epoch)[position]), rng)
               for epoch, position in zip(*np.divmod(examples, n))]
    return transforms.to_model_batch(patches, self.settings)

  def patch(self, i: int, rng: np.random.Generator) -> dict:
    """Image i's example: a clean image degraded here, or an aligned crop of a real JPEG pair."""
    pair = self.images.pair(i)
    if pair is None:
      return transforms.degrade_patch(self.images[i], self.settings, rng)
    return transforms.aligned_pair_patch(self.images[i], *pair, self.settings, rng)

  def order(self, epoch: int) -> np.ndarray:
    """The permutation of the images in `epoch` (the last one is kept: a batch rarely spans two)."""
    if self._order_epoch != epoch:
      self._order = np.random.default_rng([self.seed, _ORDER, int(epoch)]).permutation(len(self.images))
      self._order_epoch = int(epoch)
    return self._order


_ENDLESS = 2**62  # batches; an epoch ends inside the sequence, not at its end
_ORDER, _CROPS = 0, 1  # separate random streams for the visiting order and the per-example draws


def large_enough(images: cache.DecodedImages, size: int) -> list[int]:
  """Indices of the images at least size x size; the others are reported once, by name."""
  small = {path: f"smaller than the {size}x{size} crop ({shape[0]}x{shape[1]})"
           for path, shape in zip(images.paths, images.shapes) if min(shape[:2]) < size}
  sources.report_skipped(small, "training images smaller than the crop")
  return [i for i, shape in enumerate(images.shapes) if min(shape[:2]) >= size]


def _jax_process() -> tuple[int, int]:
  import jax  # pylint: disable=import-outside-toplevel  (only the main process needs it)
  return jax.process_index(), jax.process_count()
