"""Export a trained or converted network for use outside jaxcar.

    python -m jaxcar.export --config=qcn --workdir=runs/qcn --output_dir=exported
    python -m jaxcar.export --config=dacar3 --weights=../shared/pretrained/dacar3_q10_keras.h5 \
        --output_dir=exported --formats=safetensors,stablehlo

Formats (each written as NAME.EXT with a NAME.EXT.json manifest: config, input convention, value range):
- `safetensors`: the Flax parameters with flat `/`-joined names (`conv1/kernel`), Flax layouts (HWIO).
- `torch`: a PyTorch state_dict with the official key names and layouts (OIHW), for the networks whose
  originals are PyTorch (ARCNN, QCN, QGCN, EDSR, Image Restorer); saved with `torch.save` as `.pth`.
- `stablehlo`: the forward pass with the parameters baked in, serialized by `jax.export`; height, width
  and batch are symbolic, so one file serves any size (a multiple of 8). Load it with
  `jax.export.deserialize(data).call(x)` (or any StableHLO runtime) without the jaxcar code.
"""

import json
from pathlib import Path

from absl import flags, logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import safetensors.numpy

from jaxcar import cli, convert, loading, models, predict
from jaxcar.ops import conv

FORMATS = ("safetensors", "torch", "stablehlo")
EXTENSIONS = {"safetensors": ".safetensors", "torch": ".pth", "stablehlo": ".stablehlo"}
# Sizes that every network here accepts (QCN needs even ones); the StableHLO export asks for this.
SIZE_MULTIPLE = 8
STABLEHLO_PLATFORMS = ("cpu", "cuda", "tpu")

FLAGS = flags.FLAGS


def manifest(config: ml_collections.ConfigDict, model, export_format: str, source: str) -> dict:
  """What a user of the export needs to feed it: layout, channels, value range, extra inputs."""
  dummy = models.dummy_inputs(model)
  data = config.data
  described = {
      "format": export_format,
      "model": config.model.name,
      "source": source,
      "input": {
          "layout": "NHWC float32",
          "channels": int(dummy[0].shape[-1]),
          "color": data.color,
          "value_range": data.value_range,
          "quantization_maps": bool(data.quantization_maps),
          "size_multiple": SIZE_MULTIPLE,
      },
      "output": {"layout": "NHWC float32", "channels": output_channels(model),
                 "value_range": data.value_range, "to_uint8": "clip to the value range, scale to 0-255, round"},
      "config": config.to_dict(),
  }
  if len(dummy) == 2:
    described["input"]["global_input"] = {"shape": list(dummy[1].shape[1:]), "what": "the whole decoded image "
                                          "resized with skimage bicubic (order 3), in the value range"}
  return described


def output_channels(model) -> int:
  """The channel count the network returns (only traced, nothing computed)."""
  output, _ = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), *models.dummy_inputs(model)))
  return int(output.shape[-1])


def flat_params(params) -> dict[str, np.ndarray]:
  # np.array, not np.ascontiguousarray: the latter turns PReLU's 0-d slopes into shape (1,).
  return {"/".join(path): np.array(value, np.float32, order="C")
          for path, value in convert.flatten(params).items()}


def write_safetensors(params, path: Path) -> None:
  # Written by Python, not by `save_file`, whose files get mode 0600: an export is meant to be shared.
  path.write_bytes(safetensors.numpy.save(flat_params(params), metadata={"layout": "flax", "names": "/-joined"}))


def torch_exportable(model_name: str) -> bool:
  """Networks whose originals are PyTorch and whose state_dict jaxcar's parameters fill completely."""
  network = models.network(model_name)
  return network.origin == "pytorch" and not network.partial_weights


def _check_formats(formats, model_name: str) -> None:
  """Refuse before writing anything, so a bad request leaves no half export behind."""
  unknown = sorted(set(formats) - set(FORMATS))
  if unknown:
    raise ValueError(f"unknown export format(s) {unknown}; valid: {list(FORMATS)}")
  if "torch" in formats and not torch_exportable(model_name):
    originals = [name for name in models.names() if torch_exportable(name)]
    raise ValueError(f"{model_name} was not a PyTorch network (PyTorch originals: {originals}); "
                     f"export it as safetensors or stablehlo")


def write_torch(params, path: Path) -> None:
  try:
    import torch  # pylint: disable=import-outside-toplevel  (optional dependency)
  except ImportError:
    raise ValueError("--formats=torch needs PyTorch: pip install torch") from None
  from jaxcar.convert import pytorch  # pylint: disable=import-outside-toplevel
  state_dict = {key: torch.from_numpy(value) for key, value in pytorch.flax_to_state_dict(params).items()}
  torch.save(state_dict, path)


def stablehlo_function(predictor: predict.Predictor) -> jax.export.Exported:
  """The forward pass over symbolic (batch, 8*h, 8*w) inputs, parameters baked in as constants."""
  image, *extra = models.dummy_inputs(predictor.model)
  batch, height, width = jax.export.symbolic_shape("b, 8*h, 8*w")
  specs = [jax.ShapeDtypeStruct((batch, height, width, image.shape[-1]), jnp.float32)]
  specs += [jax.ShapeDtypeStruct((batch,) + e.shape[1:], jnp.float32) for e in extra]
  params = predictor.params
  forward = jax.jit(lambda *inputs: predictor.forward(params, *inputs))
  with conv.xla_only():  # the file runs without jaxcar's oneDNN library, and on GPUs and TPUs
    return jax.export.export(forward, platforms=STABLEHLO_PLATFORMS)(*specs)


def write_stablehlo(predictor: predict.Predictor, path: Path) -> None:
  path.write_bytes(stablehlo_function(predictor).serialize())


def export(loaded: loading.LoadedModel, output_dir: Path, name: str, formats=FORMATS) -> list[Path]:
  """Writes each format (and its manifest) to output_dir; returns the written weight/function files."""
  _check_formats(formats, loaded.config.model.name)
  output_dir.mkdir(parents=True, exist_ok=True)
  written = []
  for export_format in formats:
    path = output_dir / f"{name}{EXTENSIONS[export_format]}"
    predictor = loaded.predictor
    if export_format == "safetensors":
      write_safetensors(predictor.params, path)
    elif export_format == "torch":
      write_torch(predictor.params, path)
    else:
      write_stablehlo(predictor, path)
    described = manifest(loaded.config, predictor.model, export_format, loaded.source)
    loading.manifest_path(path).write_text(json.dumps(described, indent=2, default=str))
    logging.info("wrote %s", path)
    written.append(path)
  return written


def main(argv):
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}")
  loaded = cli.load_model_from_flags()
  name = FLAGS.name or loaded.config.model.name
  for path in export(loaded, Path(FLAGS.output_dir), name, [f.strip() for f in FLAGS.formats if f.strip()]):
    print(path)


def define_flags() -> None:
  cli.define_model_flags()
  flags.DEFINE_string("output_dir", "exported", "Folder for the exported files.")
  flags.DEFINE_string("name", None, "File name stem (default: the model name).")
  flags.DEFINE_list("formats", list(FORMATS), f"Any of {list(FORMATS)}.")


if __name__ == "__main__":
  cli.run(main, define_flags)
