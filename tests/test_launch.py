"""launch/*.sh run for real against stand-in gcloud, sbatch, srun, git, pip and python that record their calls.

The stand-ins (one Python script under several names, first on PATH) write each call's program, argv, working
folder and environment to a JSON file, then act as far as the launchers need: gcloud runs --command in a
clean login shell on every simulated TPU worker, sbatch runs the script from a spool copy with the
allocation's SLURM variables, srun starts one task per node with the per-task variables real srun sets, and
python records instead of training (or, for `python3 -m venv`, makes a venv: a real venv's activate script,
python and pip in it the stand-in again). No JAX: each test takes about a second.
"""

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
PROGRAMS = ("gcloud", "sbatch", "srun", "git", "pip", "python", "python3")
# Overrides as users type them: one value with spaces and shell characters, one with a single quote.
OVERRIDES = ["--config.batch_size=256", "--config.data.source=/data/my photos/*.png",
             "--config.name=it's $HOME; `date`"]

STANDIN = r'''#!{python} -S
import json, os, shutil, subprocess, sys, time

name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
log = os.environ["STANDIN_LOG"]
os.makedirs(log, exist_ok=True)
with open(os.path.join(log, f"{{time.monotonic_ns():020d}}-{{os.getpid()}}.json"), "w") as f:
  json.dump({{"program": name, "argv": args, "cwd": os.getcwd(), "env": dict(os.environ)}}, f)


def make_venv(path):
  """A venv's bin/: a real venv's activate script moved to `path`; python, python3 and pip this stand-in."""
  path = os.path.abspath(path)
  os.makedirs(os.path.join(path, "bin"), exist_ok=True)
  with open(os.path.join({template!r}, "bin", "activate")) as f:
    activate = f.read().replace({template!r}, path)
  with open(os.path.join(path, "bin", "activate"), "w") as f:
    f.write(activate)
  for program in ("python", "python3", "pip"):
    target = os.path.join(path, "bin", program)
    if os.path.lexists(target):
      os.remove(target)
    os.symlink(os.path.realpath(sys.argv[0]), target)


def options(argv):
  """--name=value / --flag options up to the first other word, and the rest."""
  parsed = {{}}
  while argv and argv[0].startswith("-"):
    key, _, value = argv[0].lstrip("-").partition("=")
    parsed[key] = value
    argv = argv[1:]
  return parsed, argv


if name in ("python", "python3"):
  if args[:2] == ["-m", "venv"]:
    make_venv(args[-1])
  sys.exit(3 if f"--process_id={{os.environ.get('STANDIN_FAIL_PROCESS', '')}}" in args else 0)

if name == "git" and args[:1] == ["clone"]:
  os.makedirs(args[-1])

if name == "gcloud":
  command = next(a.split("=", 1)[1] for a in args if a.startswith("--command="))
  workers = next(a.split("=", 1)[1] for a in args if a.startswith("--worker="))
  count = int(os.environ["STANDIN_TPU_WORKERS"])
  status = 0
  for worker in (range(count) if workers == "all" else map(int, workers.split(","))):
    home = os.path.join(os.environ["STANDIN_TPU_HOMES"], f"worker{{worker}}")
    os.makedirs(home, exist_ok=True)
    # a login on another machine: none of this machine's environment
    env = {{"HOME": home, "PATH": os.path.dirname(sys.argv[0]) + ":/usr/bin:/bin", "STANDIN_LOG": log,
           "STANDIN_WORKER": str(worker)}}
    status = max(status, subprocess.run(["bash", "-c", command], cwd=home, env=env).returncode)
  sys.exit(status)

if name == "sbatch":
  given, rest = options(args)
  script, script_args = rest[0], rest[1:]
  settings = {{}}
  for line in open(script).read().splitlines()[1:]:
    if line.startswith("#SBATCH"):
      settings.update(options(line.split()[1:])[0])
    elif line.strip() and not line.startswith("#"):
      break  # sbatch reads directives only up to the first command
  settings.update(given)
  nodes, per_node = int(settings.get("nodes", 1)), int(settings.get("ntasks-per-node", 1))
  job = "4242"
  spool = os.path.join(os.environ["STANDIN_SPOOL"], f"job{{job}}")
  os.makedirs(spool)
  shutil.copy(script, os.path.join(spool, "slurm_script"))
  env = dict(os.environ, SLURM_JOB_ID=job, SLURM_JOBID=job, SLURM_JOB_NAME=settings.get("job-name", "x"),
             SLURM_JOB_NODELIST=f"gpu[001-{{nodes:03d}}]", SLURM_NODELIST=f"gpu[001-{{nodes:03d}}]",
             SLURM_JOB_NUM_NODES=str(nodes), SLURM_NNODES=str(nodes), SLURM_NTASKS_PER_NODE=str(per_node),
             SLURM_NTASKS=str(nodes * per_node), SLURM_SUBMIT_DIR=os.getcwd(),
             STANDIN_SBATCH_SETTINGS=json.dumps(settings))
  for key in ("cpus-per-task", "gpus-per-node"):
    if key in settings:
      env["SLURM_" + key.upper().replace("-", "_")] = settings[key]
  print(f"Submitted batch job {{job}}", flush=True)
  sys.exit(subprocess.run(["bash", os.path.join(spool, "slurm_script"), *script_args], env=env).returncode)

if name == "srun":
  given, command = options(args)
  nodes, per_node = int(os.environ["SLURM_JOB_NUM_NODES"]), int(os.environ["SLURM_NTASKS_PER_NODE"])
  tasks = []
  for task in range(nodes * per_node):
    node = task // per_node
    env = dict(os.environ, SLURM_STEP_ID="0", SLURM_STEPID="0", SLURM_PROCID=str(task),
               SLURM_LOCALID=str(task % per_node), SLURM_NODEID=str(node), SLURMD_NODENAME=f"gpu{{node + 1:03d}}",
               SLURM_STEP_NODELIST=os.environ["SLURM_JOB_NODELIST"], SLURM_STEP_NUM_NODES=str(nodes),
               SLURM_STEP_NUM_TASKS=str(nodes * per_node))
    tasks.append(subprocess.Popen(command, env=env))
  sys.exit(max(task.wait() for task in tasks))
'''


@pytest.fixture(scope="module")
def venv_template(tmp_path_factory):
  """A real venv (without pip), once: the stand-in venvs copy its activate script."""
  folder = tmp_path_factory.mktemp("template") / ".venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
  return folder


@pytest.fixture
def standins(tmp_path, venv_template):
  """(PATH-first environment, reader of the recorded calls) with every stand-in installed."""
  bin_dir = tmp_path / "standin-bin"
  bin_dir.mkdir()
  script = bin_dir / "standin"
  script.write_text(STANDIN.format(python=sys.executable, template=str(venv_template)))
  script.chmod(0o755)
  for program in PROGRAMS:
    (bin_dir / program).symlink_to(script)
  env = {key: value for key, value in os.environ.items() if not key.startswith(("SLURM_", "VIRTUAL_ENV"))}
  env.update(PATH=f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", STANDIN_LOG=str(tmp_path / "calls"),
             STANDIN_TPU_HOMES=str(tmp_path / "tpu"), STANDIN_TPU_WORKERS="4", STANDIN_SPOOL=str(tmp_path / "spool"))
  for key in ("TPU_NAME", "ZONE", "PROJECT", "SETUP", "REPO", "NUM_PROCESSES", "PORT"):
    env.pop(key, None)

  def calls(program=None):
    folder = tmp_path / "calls"
    records = [json.loads(p.read_text()) for p in sorted(folder.iterdir())] if folder.is_dir() else []
    return [r for r in records if program is None or r["program"] == program]

  return env, calls


def _run(arguments, env, cwd, **extra_env) -> subprocess.CompletedProcess:
  return subprocess.run(arguments, env={**env, **extra_env}, cwd=cwd, capture_output=True, text=True, timeout=60)


def _venv(folder: Path, env) -> Path:
  """A checkout's .venv as `python3 -m venv .venv` makes it, python in it being the stand-in."""
  subprocess.run(["python3", "-m", "venv", str(folder / ".venv")], env=env, check=True, timeout=60)
  return folder / ".venv"


def _train_calls(calls):
  return [c for c in calls("python") if c["argv"][:2] == ["-m", "jaxcar.train"]]


# --- launch/tpu_pod.sh -------------------------------------------------------------------------------


def _prepare_tpu_workers(tmp_path, env):
  for worker in range(4):
    checkout = tmp_path / "tpu" / f"worker{worker}" / "jaxcar"
    checkout.mkdir(parents=True)
    _venv(checkout, env)


def test_tpu_pod_runs_one_training_command_on_every_worker_with_arguments_intact(standins, tmp_path):
  env, calls = standins
  _prepare_tpu_workers(tmp_path, env)
  result = _run([str(LAUNCH / "tpu_pod.sh"), "qcn", "gs://bucket/runs/qcn", *OVERRIDES], env, tmp_path,
                TPU_NAME="my-v5e-32", ZONE="us-west4-a")
  assert result.returncode == 0, result.stderr

  (gcloud,) = calls("gcloud")
  assert gcloud["argv"][:6] == ["compute", "tpus", "tpu-vm", "ssh", "my-v5e-32", "--zone=us-west4-a"]
  assert "--worker=all" in gcloud["argv"] and not any(a.startswith("--project") for a in gcloud["argv"])
  trains = _train_calls(calls)
  assert sorted(int(c["env"]["STANDIN_WORKER"]) for c in trains) == [0, 1, 2, 3]
  for call in trains:
    # the same command everywhere, the arguments each one word, unchanged by the remote shell
    assert call["argv"] == ["-m", "jaxcar.train", "--distributed", "--config=qcn", "--workdir=gs://bucket/runs/qcn",
                            *OVERRIDES]
    # from the worker's checkout, its venv active (JAX finds the TPU pod by itself: no coordinator flags)
    worker_home = tmp_path / "tpu" / f"worker{call['env']['STANDIN_WORKER']}"
    assert Path(call["cwd"]) == worker_home / "jaxcar"
    assert Path(call["env"]["VIRTUAL_ENV"]) == worker_home / "jaxcar" / ".venv"


def test_tpu_pod_setup_clones_and_installs_on_every_worker_first_and_passes_the_project(standins, tmp_path):
  env, calls = standins
  result = _run([str(LAUNCH / "tpu_pod.sh"), "qcn:small", "gs://bucket/runs/q s"], env, tmp_path,
                TPU_NAME="pod", ZONE="europe-west4-b", PROJECT="my-project", SETUP="1",
                REPO="https://example.com/jaxcar.git", STANDIN_TPU_WORKERS="2")
  assert result.returncode == 0, result.stderr

  setup, train = calls("gcloud")
  for call in (setup, train):
    assert call["argv"][4:7] == ["pod", "--zone=europe-west4-b", "--project=my-project"]
    assert "--worker=all" in call["argv"]
  for worker in range(2):
    in_order = [(c["program"], c["argv"]) for c in calls() if c["env"].get("STANDIN_WORKER") == str(worker)]
    assert in_order == [("git", ["clone", "https://example.com/jaxcar.git", "jaxcar"]),
                        ("python3", ["-m", "venv", ".venv"]),
                        ("pip", ["install", "-q", "-e", "."]),
                        ("pip", ["install", "-q", "jax[tpu]==0.10.2"]),
                        ("python", ["-m", "jaxcar.train", "--distributed", "--config=qcn:small",
                                    "--workdir=gs://bucket/runs/q s"])], worker
    assert Path(calls("pip")[0]["cwd"]).name == "jaxcar"

  # a rerun with SETUP=1 (e.g. after a preemption) keeps each worker's checkout: no second clone
  result = _run([str(LAUNCH / "tpu_pod.sh"), "qcn:small", "gs://bucket/runs/q s"], env, tmp_path,
                TPU_NAME="pod", ZONE="europe-west4-b", SETUP="1", REPO="https://example.com/jaxcar.git",
                STANDIN_TPU_WORKERS="2")
  assert result.returncode == 0, result.stderr
  assert len(calls("git")) == 2 and len(_train_calls(calls)) == 4


@pytest.mark.parametrize("missing", ["TPU_NAME", "ZONE", "arguments", "REPO"])
def test_tpu_pod_refuses_before_any_gcloud_call_without_what_it_needs(standins, tmp_path, missing):
  env, calls = standins
  settings = {"TPU_NAME": "pod", "ZONE": "us-west4-a", "SETUP": "1", "REPO": "https://example.com/jaxcar.git"}
  settings.pop(missing, None)
  arguments = [] if missing == "arguments" else ["qcn", "gs://bucket/runs/qcn"]
  result = _run([str(LAUNCH / "tpu_pod.sh"), *arguments], env, tmp_path, **settings)
  assert result.returncode != 0 and (missing if missing != "arguments" else "usage") in result.stderr
  assert calls("gcloud") == []


def test_tpu_pod_fails_when_a_worker_fails(standins, tmp_path):
  env, _ = standins
  _prepare_tpu_workers(tmp_path, env)
  (tmp_path / "tpu" / "worker2" / "jaxcar" / ".venv" / "bin" / "activate").unlink()  # a broken worker
  result = _run([str(LAUNCH / "tpu_pod.sh"), "qcn", "gs://bucket/runs/qcn"], env, tmp_path, TPU_NAME="pod",
                ZONE="us-west4-a")
  assert result.returncode != 0


# --- launch/slurm.sh ---------------------------------------------------------------------------------


def _submit(env, checkout, *arguments, **extra_env):
  """`sbatch --nodes=4 --gpus-per-node=8 launch/slurm.sh ...` from the checkout, as the README says."""
  return _run(["sbatch", "--nodes=4", "--gpus-per-node=8", "launch/slurm.sh", *arguments], env, checkout,
              **extra_env)


@pytest.fixture
def checkout(tmp_path, standins):
  """A checkout: launch/ (a copy of this one's) and a .venv."""
  folder = tmp_path / "checkout"
  (folder / "launch").mkdir(parents=True)
  for script in LAUNCH.glob("*.sh"):
    (folder / "launch" / script.name).write_bytes(script.read_bytes())
    (folder / "launch" / script.name).chmod(0o755)
  _venv(folder, standins[0])
  return folder


def test_slurm_starts_one_task_per_node_with_the_variables_jax_reads(standins, checkout):
  env, calls = standins
  result = _submit(env, checkout, "qcn", "/shared/runs/qcn", *OVERRIDES)
  assert result.returncode == 0, result.stderr

  assert len(calls("sbatch")) == 1
  (srun,) = calls("srun")
  settings = json.loads(srun["env"]["STANDIN_SBATCH_SETTINGS"])
  assert settings["ntasks-per-node"] == "1" and settings["signal"] == "TERM@120"  # what the script promises
  assert "--kill-on-bad-exit=1" in srun["argv"]
  # srun gets the job's CPUs per task itself (Slurm 22.05+ steps no longer inherit --cpus-per-task)
  assert "--cpus-per-task=16" in srun["argv"]

  trains = sorted(_train_calls(calls), key=lambda c: int(c["env"]["SLURM_PROCID"]))
  assert len(trains) == 4  # one task per node, each with all 8 of its node's GPUs
  for rank, call in enumerate(trains):
    assert call["argv"] == ["-m", "jaxcar.train", "--distributed", "--config=qcn", "--workdir=/shared/runs/qcn",
                            *OVERRIDES]
    variables = call["env"]
    # what jax.distributed.initialize() reads to find the cluster (jax._src.clusters.SlurmCluster): the
    # coordinator is the first host of the step's node list, process count and id from the task's variables
    assert variables["SLURM_JOB_ID"] == "4242" and variables["SLURM_STEP_NODELIST"] == "gpu[001-004]"
    assert (variables["SLURM_NTASKS"], variables["SLURM_PROCID"], variables["SLURM_LOCALID"]) == ("4", str(rank), "0")
    assert variables["SLURMD_NODENAME"] == f"gpu{rank + 1:03d}" and variables["SLURM_GPUS_PER_NODE"] == "8"
    # in the submit folder (relative paths are the user's), with the checkout's venv active
    assert Path(call["cwd"]) == checkout and Path(variables["VIRTUAL_ENV"]) == checkout / ".venv"
  assert len({c["env"]["SLURM_PROCID"] for c in trains}) == 4


def test_slurm_fails_without_arguments_before_srun(standins, checkout):
  env, calls = standins
  result = _submit(env, checkout, "qcn")
  assert result.returncode != 0 and "usage" in result.stderr
  assert calls("srun") == []


def test_slurm_reports_a_failed_task(standins, checkout):
  env, _ = standins
  result = _submit(env, checkout, "qcn", "/shared/runs/qcn", "--process_id=2", STANDIN_FAIL_PROCESS="2")
  assert result.returncode != 0


# --- launch/local.sh ---------------------------------------------------------------------------------


def test_local_runs_one_process_with_the_arguments_unchanged(standins, tmp_path):
  env, calls = standins
  result = _run([str(LAUNCH / "local.sh"), "qcn:small", "runs/qcn small", *OVERRIDES], env, tmp_path)
  assert result.returncode == 0, result.stderr
  (train,) = _train_calls(calls)
  assert train["argv"] == ["-m", "jaxcar.train", "--config=qcn:small", "--workdir=runs/qcn small", *OVERRIDES]
  assert Path(train["cwd"]) == tmp_path  # no cd: relative paths stay the user's


def test_local_num_processes_starts_cpu_processes_over_gloo(standins, tmp_path):
  env, calls = standins
  result = _run([str(LAUNCH / "local.sh"), "qcn:small", "runs/q", *OVERRIDES], env, tmp_path,
                NUM_PROCESSES="3", PORT="23456")
  assert result.returncode == 0, result.stderr
  trains = sorted(_train_calls(calls), key=lambda c: [a for a in c["argv"] if "process_id" in a])
  assert len(trains) == 3
  for rank, call in enumerate(trains):
    assert call["argv"] == ["-m", "jaxcar.train", "--config=qcn:small", "--workdir=runs/q", "--distributed",
                            "--coordinator=127.0.0.1:23456", "--num_processes=3", f"--process_id={rank}", *OVERRIDES]
    assert call["env"]["JAX_PLATFORMS"] == "cpu" and call["env"]["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] == "gloo"


def test_local_fails_when_one_of_its_processes_fails(standins, tmp_path):
  env, calls = standins
  result = _run([str(LAUNCH / "local.sh"), "qcn:small", "runs/q"], env, tmp_path, NUM_PROCESSES="2",
                STANDIN_FAIL_PROCESS="0")
  assert result.returncode == 3 and len(_train_calls(calls)) == 2
