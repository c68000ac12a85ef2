"""`python -m jaxcar.data.fetch NAME... --to DIR`: download the datasets and files the recipes name.

    python -m jaxcar.data.fetch div2k live1 classic5 --to $JAXCAR_SHARED
    python -m jaxcar.data.fetch vgg19 --to ../shared     # NoGAN's perceptual loss
    python -m jaxcar.data.fetch --list

Each download goes to FILE.partial first and continues from there (an HTTP Range request) after an
interruption, where the server allows it; its SHA-256 is checked against `DOWNLOADS` (a digest not yet
pinned is printed, to pin); archives are unpacked (zip, tar, tgz; a member with an absolute path or `..`
is refused, tar members also pass tarfile's "data" filter) straight into the layout jaxcar's named
datasets expect (`jaxcar.data.sources.DATASETS`), so `--to $JAXCAR_SHARED` makes e.g.
data/train/DIV2K_train_HR. A marker file (DIR/.jaxcar-fetch/NAME.json) records each completed NAME; a
second run then does nothing and says so. Only the standard library (urllib) and tqdm.
"""

import dataclasses
import datetime
import hashlib
import http.client
import json
import os
from pathlib import Path, PurePosixPath
import shutil
import socket
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile

from absl import flags
from tqdm import tqdm

from jaxcar import cli, paths

FLAGS = flags.FLAGS
MARKER_DIR = ".jaxcar-fetch"   # under DIR: one NAME.json per completed fetch
DOWNLOAD_DIR = "downloads"     # under DIR: archives while they download (and after, with --keep_archives)
PARTIAL = ".partial"
CHUNK = 1 << 20
TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class Download:
  url: str
  sha256: str | None  # None: unverified, the first download prints the digest to pin
  size: int | None = None  # bytes, where known (the progress bar's total when the server gives none)
  note: str = ""


# Digests: the DIV2K ones are TensorFlow Datasets' (tensorflow_datasets/url_checksums/div2k.txt, with
# the same sizes); VGG19's begins with the 8 hex digits torchvision puts in its file name
# (hash_prefix). None of the files was downloaded where this table was written.
DOWNLOADS = {
    "DIV2K_train_HR.zip": Download(
        "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",
        "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335", 3_530_603_713),
    "DIV2K_valid_HR.zip": Download(
        "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip",
        "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc", 448_993_893),
    "Flickr2K.tar": Download(
        "https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar",
        None, note="unverified: first download prints the digest to pin; EDSR's release, HR and LR images"),
    "BSR_bsds500.tgz": Download(
        "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz",
        None, note="unverified: first download prints the digest to pin"),
    # LIVE1 and Classic5 as FBCNN distributes them: folders of its repository (testsets/), which has
    # no release archive of them; GitHub builds this branch archive on demand, so its bytes can change
    # with the branch [URL and layout not confirmed by a download].
    "FBCNN-main.zip": Download(
        "https://github.com/jiaxi-jiang/FBCNN/archive/refs/heads/main.zip",
        None, note="unverified: first download prints the digest to pin; a branch archive, not pinnable"),
    # DnCNN's Train400 (TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400) [not confirmed by a download].
    "DnCNN-master.zip": Download(
        "https://github.com/cszn/DnCNN/archive/refs/heads/master.zip",
        None, note="unverified: first download prints the digest to pin; a branch archive, not pinnable"),
    "vgg19-dcbb9e9d.pth": Download(
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44", 574_673_361),
}


@dataclasses.dataclass(frozen=True)
class Item:
  """One NAME: the file it downloads and where it lands under DIR. `places` maps an archive folder
  (a leading `*/` stands for the archive's top folder, whatever its name) to a folder under DIR; a
  download that is not an archive has one place, the file's path under DIR."""
  download: str
  places: dict
  what: str


ITEMS = {
    "div2k": Item("DIV2K_train_HR.zip", {"DIV2K_train_HR": "data/train/DIV2K_train_HR"},
                  "DIV2K train HR, 800 2K PNGs (QCN, QGCN, ARCNN, NoGAN, Image Restorer)"),
    "div2k_valid": Item("DIV2K_valid_HR.zip", {"DIV2K_valid_HR": "data/eval/DIV2K_valid_HR"},
                        "DIV2K valid HR, 100 2K PNGs"),
    "flickr2k": Item("Flickr2K.tar", {"Flickr2K/Flickr2K_HR": "data/train/Flickr2K"},
                     "Flickr2K HR, 2650 2K PNGs (the archive also holds LR copies: not kept)"),
    "bsds500": Item("BSR_bsds500.tgz", {"BSR/BSDS500/data/images/train": "data/train/bsds500_train",
                                        "BSR/BSDS500/data/images/test": "data/train/bsds500_test",
                                        "BSR/BSDS500/data/images/val": "data/eval/BSD100"},
                    "BSDS500: train + test, 400 481x321 JPEGs (DACAR/SACAR); val = BSD100 (DACAR's test set)"),
    "live1": Item("FBCNN-main.zip", {"*/testsets/LIVE1_color": "data/eval/LIVE1_color",
                                     "*/testsets/LIVE1_gray": "data/eval/LIVE1_gray"},
                  "LIVE1, 29 images, colour and grey (FBCNN's test sets)"),
    "classic5": Item("FBCNN-main.zip", {"*/testsets/Classic5": "data/eval/Classic5"},
                     "Classic5, 5 grey 512x512 (FBCNN's test sets)"),
    "train400": Item("DnCNN-master.zip",
                     {"*/TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400": "data/train/train400_gray"},
                     "Train400, 400 grey 180x180 crops (DnCNN)"),
    "vgg19": Item("vgg19-dcbb9e9d.pth", {"": "models/vgg19-dcbb9e9d.pth"},
                  "torchvision VGG19 weights for NoGAN's perceptual loss (config.nogan.vgg19_weights)"),
}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz")


class FetchError(cli.UsageError):
  """A download, checksum or archive problem: one line naming the URL or file."""


def destinations(name: str, root: str | os.PathLike) -> list[Path]:
  return [Path(root) / place for place in ITEMS[name].places.values()]


def marker(name: str, root: str | os.PathLike) -> Path:
  return Path(root) / MARKER_DIR / f"{name}.json"


def fetch(name: str, root: str | os.PathLike, keep_archives: bool = False, progress: bool = True) -> str:
  """Download, check and place NAME under `root`; returns what was done, in one line."""
  if name not in ITEMS:
    raise FetchError(f"unknown name {name!r}; valid: {', '.join(ITEMS)}")
  root = Path(root).expanduser()
  item, download = ITEMS[name], DOWNLOADS[ITEMS[name].download]
  targets = destinations(name, root)
  if marker(name, root).is_file() and all(t.exists() for t in targets):
    return f"{name}: already in place under {root} ({marker(name, root)}); nothing to do"
  missing = [t for t in targets if not t.exists()]
  if not missing:
    return (f"{name}: {', '.join(str(t) for t in targets)} already there (not fetched by this tool; "
            f"delete to fetch again); nothing to do")
  if not item.download.endswith(ARCHIVE_SUFFIXES):
    (target,) = targets
    digest = _download(download, target, progress)
  else:
    archive = root / DOWNLOAD_DIR / item.download
    digest = _download(download, archive, progress)
    _extract(archive, root, {folder: place for folder, place in item.places.items()
                             if root / place in missing})
    if not keep_archives:
      archive.unlink()
  marker(name, root).parent.mkdir(parents=True, exist_ok=True)
  marker(name, root).write_text(json.dumps({
      "name": name, "url": download.url, "sha256": digest, "places": list(item.places.values()),
      "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}, indent=1) + "\n")
  return f"{name}: done, {', '.join(str(t) for t in targets)}"


# --- download ---

def _download(download: Download, target: Path, progress: bool) -> str:
  """`target` downloaded (or already there) and checked; returns its SHA-256."""
  if target.is_file():
    digest = _sha256(target)
    _check(download, target, digest)
    return digest
  target.parent.mkdir(parents=True, exist_ok=True)
  partial = target.with_name(target.name + PARTIAL)
  _get(download, partial, progress)
  digest = _sha256(partial)
  _check(download, partial, digest)
  partial.replace(target)
  return digest


def _get(download: Download, partial: Path, progress: bool) -> None:
  """Fills `partial`, continuing it with a Range request when it already holds bytes."""
  offset = partial.stat().st_size if partial.is_file() else 0
  request = urllib.request.Request(download.url, headers={"User-Agent": "jaxcar-fetch"})
  if offset:
    request.add_header("Range", f"bytes={offset}-")
  try:
    response = urllib.request.urlopen(request, timeout=TIMEOUT_S)  # pylint: disable=consider-using-with
  except urllib.error.HTTPError as error:
    if error.code == 416 and offset:  # nothing after `offset`: the partial file is already whole
      return
    raise FetchError(f"cannot download {download.url}: HTTP {error.code} {error.reason}") from None
  except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
    raise FetchError(f"cannot download {download.url}: {_reason(error)}") from None
  with response:
    resumed = bool(offset) and response.status == 206 and _range_start(response) == offset
    if response.status == 206 and not resumed:
      raise FetchError(f"cannot download {download.url}: the server sent a range that does not continue "
                       f"{partial}; delete it to download again")
    if not resumed:
      offset = 0  # the server sent the whole file: start again
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length and length.isdigit() else download.size
    try:
      with open(partial, "ab" if resumed else "wb") as out, tqdm(
          total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=partial.name[:-len(PARTIAL)],
          disable=not progress, file=sys.stderr) as bar:
        while chunk := response.read(CHUNK):
          out.write(chunk)
          bar.update(len(chunk))
    except (OSError, http.client.HTTPException) as error:
      raise FetchError(f"cannot download {download.url}: {_reason(error)} (rerun to continue "
                       f"from {partial})") from None
  if total is not None and partial.stat().st_size < total:
    raise FetchError(f"cannot download {download.url}: the connection closed at {partial.stat().st_size} of "
                     f"{total} bytes (rerun to continue from {partial})")


def _range_start(response) -> int | None:
  value = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
  try:
    return int(value.split()[1].split("-")[0])
  except (IndexError, ValueError):
    return None


def _reason(error: Exception) -> str:
  reason = getattr(error, "reason", None) or error
  if isinstance(reason, socket.timeout):
    return f"no answer in {TIMEOUT_S} s"
  return str(reason).splitlines()[0] if str(reason) else type(reason).__name__


def _sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as file:
    while chunk := file.read(CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _check(download: Download, path: Path, digest: str) -> None:
  if download.sha256 is None:
    print(f"{path.name.removesuffix(PARTIAL)}: sha256 {digest} (unverified: pin it in jaxcar/data/fetch.py)",
          file=sys.stderr)
  elif digest != download.sha256:
    raise FetchError(f"{path} (from {download.url}) has sha256 {digest}, expected {download.sha256}; "
                     f"the file is kept for inspection: delete it to download again")


# --- archives ---

def _extract(archive: Path, root: Path, places: dict) -> None:
  """Unpacks the members under each folder of `places` into its place under `root`, through a
  PLACE.partial folder renamed when complete. Any absolute or `..` member refuses the whole archive."""
  try:
    if archive.name.endswith(".zip"):
      with zipfile.ZipFile(archive) as opened:
        members = [(info.filename, info) for info in opened.infolist()]
        _refuse_unsafe(archive, [name for name, _ in members])
        _unpack(archive, root, places, members, lambda info, folder, relative: _zip_member(opened, info, folder / relative))
    else:
      if not hasattr(tarfile, "data_filter"):
        raise FetchError(f"{archive}: unpacking a tar safely needs tarfile's data filter (Python >= 3.11.4)")
      with tarfile.open(archive) as opened:
        members = [(info.name, info) for info in opened.getmembers()]
        _refuse_unsafe(archive, [name for name, _ in members])
        _unpack(archive, root, places, members,
                lambda info, folder, relative: opened.extract(info.replace(name=relative, deep=False),
                                                              folder, filter="data"))
  except (zipfile.BadZipFile, tarfile.TarError) as error:
    raise FetchError(f"{archive}: cannot unpack ({type(error).__name__}: {error}); delete it to download "
                     f"again") from None


def _refuse_unsafe(archive: Path, names: list[str]) -> None:
  for name in names:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
      raise FetchError(f"{archive}: refusing member {name!r} (an absolute or parent path); nothing unpacked")


def _unpack(archive: Path, root: Path, places: dict, members: list, write) -> None:
  for folder, place in places.items():
    target = root / place
    staging = target.with_name(target.name + PARTIAL)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    found = 0
    for name, info in members:
      relative = _inside(name, folder)
      if relative and not name.endswith("/") and not getattr(info, "isdir", lambda: False)():
        write(info, staging, relative)
        found += 1
    if not found:
      shutil.rmtree(staging)
      raise FetchError(f"{archive}: no files under {folder!r}; the archive is not laid out as expected")
    staging.replace(target)


def _inside(name: str, folder: str) -> str | None:
  """The member's path relative to `folder` (`*/` = any top folder), or None if it is not inside it."""
  parts = PurePosixPath(name.replace("\\", "/")).parts
  wanted = PurePosixPath(folder).parts
  if wanted[:1] == ("*",):
    parts, wanted = parts[1:], wanted[1:]
  if len(parts) > len(wanted) and parts[:len(wanted)] == wanted:
    return "/".join(parts[len(wanted):])
  return None


def _zip_member(opened: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with opened.open(info) as source, open(path, "wb") as out:
    shutil.copyfileobj(source, out, CHUNK)


# --- command line ---

def listing() -> str:
  width = max(map(len, ITEMS))
  return "\n".join(f"  {name:<{width}}  {item.what}; -> {', '.join(item.places.values())}"
                   for name, item in ITEMS.items())


def define_flags() -> None:
  flags.DEFINE_string("to", None, "the folder to fill (default $JAXCAR_SHARED, else ../shared); the layout "
                      "under it is the one jaxcar's named datasets expect")
  flags.DEFINE_bool("keep_archives", False, f"keep the downloaded archives (in DIR/{DOWNLOAD_DIR})")
  flags.DEFINE_bool("list", False, "list the names and where each lands, then stop")


def main(argv: list[str]) -> None:
  names = argv[1:]
  if FLAGS.list:
    print(listing())
    return
  if not names:
    raise cli.UsageError(f"name what to fetch: {', '.join(ITEMS)} (--list says what each is)")
  unknown = [name for name in names if name not in ITEMS]
  if unknown:
    raise cli.UsageError(f"unknown name(s) {unknown}; valid: {', '.join(ITEMS)}")
  root = paths.shared_dir(FLAGS.to)
  names = list(dict.fromkeys(names))
  for index, name in enumerate(names):
    later = {ITEMS[other].download for other in names[index + 1:]}  # LIVE1 and Classic5 share an archive
    print(fetch(name, root, keep_archives=FLAGS.keep_archives or ITEMS[name].download in later))


if __name__ == "__main__":
  cli.run(main, define_flags)
