"""jaxcar.data.fetch against a local HTTP server (127.0.0.1, Range support) serving small archives built
here: download, SHA-256, unpacking into the named datasets' layout, resuming, refusals, idempotence."""

import hashlib
import http.server
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from jaxcar import cli, paths
from jaxcar.data import fetch, sources

ROOT = Path(__file__).resolve().parents[1]


def _png(seed: int) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), np.uint8)).save(buffer, "PNG")
  return buffer.getvalue()


def _zip(members: dict) -> bytes:
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as archive:
    for name, data in members.items():
      archive.writestr(name, data)
  return buffer.getvalue()


def _tar(members: dict, mode="w:gz") -> bytes:
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode=mode) as archive:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))
  return buffer.getvalue()


def _sha(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


class Server(http.server.ThreadingHTTPServer):
  files: dict          # URL path -> bytes
  honour_range = True
  requests: list       # (path, Range header or None)


class Handler(http.server.BaseHTTPRequestHandler):
  def do_GET(self):  # pylint: disable=invalid-name
    server = self.server
    server.requests.append((self.path, self.headers.get("Range")))
    data = server.files.get(self.path)
    if data is None:
      self.send_error(404)
      return
    start = 0
    wanted = self.headers.get("Range")
    if wanted and server.honour_range:
      start = int(wanted.removeprefix("bytes=").split("-")[0])
      if start >= len(data):
        self.send_response(416)
        self.send_header("Content-Range", f"bytes */{len(data)}")
        self.send_header("Content-Length", "0")
        self.end_headers()
        return
      self.send_response(206)
      self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    else:
      self.send_response(200)
    self.send_header("Content-Length", str(len(data) - start))
    self.end_headers()
    self.wfile.write(data[start:])

  def log_message(self, *args):  # quiet
    pass


@pytest.fixture
def server():
  httpd = Server(("127.0.0.1", 0), Handler)
  httpd.files, httpd.requests = {}, []
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield httpd
  httpd.shutdown()
  httpd.server_close()


def _serve(server, monkeypatch, file: str, data: bytes, sha256: str | None = "right"):
  """Serves `data` as `file` and points the module's table at it (sha256 "right" = its real digest)."""
  server.files[f"/{file}"] = data
  url = f"http://127.0.0.1:{server.server_address[1]}/{file}"
  downloads = dict(fetch.DOWNLOADS)
  downloads[file] = fetch.Download(url, _sha(data) if sha256 == "right" else sha256)
  monkeypatch.setattr(fetch, "DOWNLOADS", downloads)
  return url


DIV2K = {"DIV2K_train_HR/0001.png": _png(1), "DIV2K_train_HR/0002.png": _png(2)}


def test_download_checksum_and_unpack_into_the_named_layout(server, monkeypatch, tmp_path):
  _serve(server, monkeypatch, "DIV2K_train_HR.zip", _zip(DIV2K))
  message = fetch.fetch("div2k", tmp_path, progress=False)
  folder = tmp_path / "data/train/DIV2K_train_HR"
  assert "done" in message and sorted(p.name for p in folder.iterdir()) == ["0001.png", "0002.png"]
  assert (folder / "0001.png").read_bytes() == DIV2K["DIV2K_train_HR/0001.png"]
  assert json.loads(fetch.marker("div2k", tmp_path).read_text())["name"] == "div2k"
  assert not (tmp_path / "downloads/DIV2K_train_HR.zip").exists()  # archives go once unpacked
  monkeypatch.setenv(paths.SHARED_ENV, str(tmp_path))  # where the recipes' `div2k` looks
  assert sources.list_images("div2k") == [str(folder / "0001.png"), str(folder / "0002.png")]


def test_a_tgz_with_several_places_and_an_unpinned_digest(server, monkeypatch, tmp_path, capsys):
  images = "BSR/BSDS500/data/images"
  data = _tar({f"{images}/train/1.jpg": b"a", f"{images}/test/2.jpg": b"b", f"{images}/val/3.jpg": b"c",
               "BSR/BSDS500/data/groundTruth/train/1.mat": b"d"})
  _serve(server, monkeypatch, "BSR_bsds500.tgz", data, sha256=None)
  fetch.fetch("bsds500", tmp_path, progress=False)
  assert _sha(data) in capsys.readouterr().err  # printed, to pin
  for folder, name in (("data/train/bsds500_train", "1.jpg"), ("data/train/bsds500_test", "2.jpg"),
                       ("data/eval/BSD100", "3.jpg")):
    assert [p.name for p in (tmp_path / folder).iterdir()] == [name]
  assert not list(tmp_path.rglob("*.mat"))


def test_a_single_file_lands_where_the_nogan_recipe_looks(server, monkeypatch, tmp_path):
  _serve(server, monkeypatch, "vgg19-dcbb9e9d.pth", b"weights")
  fetch.fetch("vgg19", tmp_path, progress=False)
  monkeypatch.setenv(paths.SHARED_ENV, str(tmp_path))
  configured = Path(cli.load_config("nogan").nogan.vgg19_weights)  # resolved when the config is built
  assert configured == tmp_path / "models/vgg19-dcbb9e9d.pth" and configured.read_bytes() == b"weights"


@pytest.mark.parametrize("honour_range", [True, False])
def test_resumes_a_partial_download(server, monkeypatch, tmp_path, honour_range):
  data = _zip({f"DIV2K_valid_HR/{i:04d}.png": _png(i) for i in range(801, 806)})
  _serve(server, monkeypatch, "DIV2K_valid_HR.zip", data)
  server.honour_range = honour_range
  partial = tmp_path / "downloads/DIV2K_valid_HR.zip.partial"
  partial.parent.mkdir(parents=True)
  partial.write_bytes(data[:len(data) // 2])
  fetch.fetch("div2k_valid", tmp_path, progress=False)
  assert server.requests == [("/DIV2K_valid_HR.zip", f"bytes={len(data) // 2}-")]
  assert len(list((tmp_path / "data/eval/DIV2K_valid_HR").iterdir())) == 5 and not partial.exists()


def test_a_checksum_mismatch_is_one_line_and_keeps_the_file(server, monkeypatch, tmp_path):
  url = _serve(server, monkeypatch, "DIV2K_train_HR.zip", _zip(DIV2K), sha256="0" * 64)
  for _ in range(2):  # the second run finds the whole file kept and says the same (no new download)
    with pytest.raises(fetch.FetchError) as error:
      fetch.fetch("div2k", tmp_path, progress=False)
    message = str(error.value)
    assert "\n" not in message and url in message and "expected " + "0" * 64 in message
  assert (tmp_path / "downloads/DIV2K_train_HR.zip.partial").read_bytes() == _zip(DIV2K)
  assert not (tmp_path / "data").exists() and not fetch.marker("div2k", tmp_path).exists()
  assert server.requests[1][1] == f"bytes={len(_zip(DIV2K))}-"  # answered 416: nothing more to send


def test_a_second_run_does_nothing(server, monkeypatch, tmp_path):
  _serve(server, monkeypatch, "DIV2K_train_HR.zip", _zip(DIV2K))
  fetch.fetch("div2k", tmp_path, progress=False)
  requests = len(server.requests)
  assert "nothing to do" in fetch.fetch("div2k", tmp_path, progress=False)
  assert len(server.requests) == requests


def test_folders_already_there_are_left_alone(tmp_path):
  for folder in ("data/eval/LIVE1_color", "data/eval/LIVE1_gray"):
    (tmp_path / folder).mkdir(parents=True)
  assert "nothing to do" in fetch.fetch("live1", tmp_path, progress=False)  # no server: nothing fetched


def test_shared_archive_serves_two_names(server, monkeypatch, tmp_path):
  top = "FBCNN-main/testsets"
  _serve(server, monkeypatch, "FBCNN-main.zip", _zip({f"{top}/LIVE1_color/a.png": b"c", f"{top}/LIVE1_gray/a.png": b"g",
                                                      f"{top}/Classic5/b.png": b"5", "FBCNN-main/README.md": b""}))
  fetch.fetch("live1", tmp_path, keep_archives=True, progress=False)
  fetch.fetch("classic5", tmp_path, progress=False)
  assert len(server.requests) == 1  # the kept archive served the second name
  assert (tmp_path / "data/eval/LIVE1_gray/a.png").read_bytes() == b"g"
  assert (tmp_path / "data/eval/Classic5/b.png").read_bytes() == b"5"


@pytest.mark.parametrize("evil", ["../evil", "/tmp/evil", "BSR/../../evil"])
def test_a_tar_with_a_parent_or_absolute_member_is_refused(server, monkeypatch, tmp_path, evil):
  images = "BSR/BSDS500/data/images"
  _serve(server, monkeypatch, "BSR_bsds500.tgz", _tar({f"{images}/train/1.jpg": b"a", evil: b"x",
                                                       f"{images}/test/2.jpg": b"b", f"{images}/val/3.jpg": b"c"}))
  root = tmp_path / "shared"
  with pytest.raises(fetch.FetchError, match="refusing member") as error:
    fetch.fetch("bsds500", root, progress=False)
  assert "\n" not in str(error.value)
  assert not (tmp_path / "evil").exists() and not (root / "data").exists()


def test_a_zip_with_a_parent_member_is_refused(server, monkeypatch, tmp_path):
  _serve(server, monkeypatch, "DIV2K_train_HR.zip", _zip({**DIV2K, "DIV2K_train_HR/../../evil": b"x"}))
  with pytest.raises(fetch.FetchError, match="refusing member"):
    fetch.fetch("div2k", tmp_path / "shared", progress=False)
  assert not (tmp_path / "evil").exists()


def test_an_archive_laid_out_otherwise_is_a_clear_error(server, monkeypatch, tmp_path):
  _serve(server, monkeypatch, "DIV2K_train_HR.zip", _zip({"elsewhere/0001.png": b"a"}))
  with pytest.raises(fetch.FetchError, match="no files under 'DIV2K_train_HR'"):
    fetch.fetch("div2k", tmp_path, progress=False)
  assert not (tmp_path / "data/train/DIV2K_train_HR").exists()


def test_network_failures_are_one_line_naming_the_url(server, monkeypatch, tmp_path):
  with socket.socket() as probe:  # a port nothing listens on
    probe.bind(("127.0.0.1", 0))
    closed = probe.getsockname()[1]
  url = f"http://127.0.0.1:{closed}/DIV2K_train_HR.zip"
  monkeypatch.setattr(fetch, "DOWNLOADS", {**fetch.DOWNLOADS, "DIV2K_train_HR.zip": fetch.Download(url, None)})
  with pytest.raises(fetch.FetchError) as error:
    fetch.fetch("div2k", tmp_path, progress=False)
  assert f"cannot download {url}" in str(error.value) and "\n" not in str(error.value)
  missing = f"http://127.0.0.1:{server.server_address[1]}/nothing.zip"
  monkeypatch.setattr(fetch, "DOWNLOADS", {**fetch.DOWNLOADS, "DIV2K_train_HR.zip": fetch.Download(missing, None)})
  with pytest.raises(fetch.FetchError, match=f"cannot download {missing}: HTTP 404"):
    fetch.fetch("div2k", tmp_path, progress=False)


def test_every_named_dataset_has_a_fetch_that_makes_its_folders():
  places = {place for item in fetch.ITEMS.values() for place in item.places.values()}
  for name, folders in sources.DATASETS.items():
    fetch_name = sources.FETCHED_AS.get(name, name)
    assert fetch_name in fetch.ITEMS, name
    assert set(folders) <= set(fetch.ITEMS[fetch_name].places.values()) <= places, name
  assert all(item.download in fetch.DOWNLOADS for item in fetch.ITEMS.values())
  for download in fetch.DOWNLOADS.values():
    assert download.url.startswith("https://")
    assert download.sha256 is None or (len(download.sha256) == 64 and int(download.sha256, 16) >= 0)


@pytest.mark.parametrize("name, fetch_name", [("div2k", "div2k"), ("live1_color", "live1"), ("bsd100", "bsds500")])
def test_a_missing_named_dataset_says_how_to_get_it(monkeypatch, tmp_path, name, fetch_name):
  monkeypatch.setenv(paths.SHARED_ENV, str(tmp_path))
  with pytest.raises(FileNotFoundError) as error:
    sources.list_images(name)
  message = str(error.value)
  assert f"dataset {name} not found under {tmp_path}" in message and "\n" not in message
  assert f"get it with: python -m jaxcar.data.fetch {fetch_name} --to {tmp_path}" in message


def test_the_command_line(tmp_path):
  fetch.marker("vgg19", tmp_path).parent.mkdir(parents=True)
  fetch.marker("vgg19", tmp_path).write_text("{}")
  (tmp_path / "models").mkdir()
  (tmp_path / "models/vgg19-dcbb9e9d.pth").write_bytes(b"w")
  run = lambda *args: subprocess.run([sys.executable, "-m", "jaxcar.data.fetch", *args], cwd=ROOT,
                                     capture_output=True, text=True, timeout=120)
  done = run("vgg19", f"--to={tmp_path}")  # in place: no network
  assert done.returncode == 0 and "nothing to do" in done.stdout, done.stderr
  wrong = run("div2kk", f"--to={tmp_path}")
  assert wrong.returncode != 0 and wrong.stderr.strip().splitlines() == [wrong.stderr.strip()]
  assert "unknown name(s) ['div2kk']" in wrong.stderr and "div2k" in wrong.stderr
  listed = run("--list")
  assert listed.returncode == 0 and all(name in listed.stdout for name in fetch.ITEMS)
