"""`--launcher slurm`: options (command line and YAML), the sbatch script and array options
submitit writes (checked with a fake `sbatch` on PATH that records what it was given), `harness
status` from fake `squeue` / `sacct`, the one-line refusal without submitit, and a small grid
run by submitit's local executor in real subprocesses through the SLURM code path, with the
same results as a local run."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.launch import records
from harness.launch.config import load_launcher_config, parse_minutes
from harness.launch.scheduler import _array_ids

ROOT = Path(__file__).resolve().parents[1]
GRID = ["run", "--methods", "zeroshot", "--protocol", "base2novel", "--profile", "tiny", "--splits", "1,2",
        "--no-progress"]


# -- options -----------------------------------------------------------------------------------
def test_time_limits_read_as_sbatch_reads_them():
    assert [parse_minutes(t) for t in ("90", "2:00:00", "1-00:00:00", "0:30:01", "12:30", "2-6")] == \
        [90, 120, 1440, 31, 750, 2880 + 360]
    with pytest.raises(HarnessError, match="launcher time"):
        parse_minutes("soon")


def test_yaml_then_command_line_then_launcher_set(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("partition: big\naccount: lab\ngpus-per-job: 4\nsbatch: ['--exclusive']\ntime: '4:00:00'\n")
    config = load_launcher_config(path, {"partition": "small", "time": None}, ["max_timeouts=5", "setup=[a, b]"])
    assert (config.partition, config.account, config.gpus_per_job, config.minutes) == ("small", "lab", 4, 240)
    assert config.processes == 4 and config.cpus == 32 and config.max_timeouts == 5 and config.setup == ["a", "b"]
    assert config.sbatch_parameters() == {"exclusive": True}


def test_every_bad_launcher_option_is_listed_with_its_file(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("partitoin: big\ntime: soon\nsbatch: ['exclusive']\ngpus_per_job: two\n")
    with pytest.raises(HarnessError) as err:
        load_launcher_config(path, {}, ["nope=1"])
    lines = str(err.value).splitlines()
    assert any("unknown launcher option 'partitoin'" in line and str(path) in line for line in lines)
    assert any("gpus_per_job must be an integer" in line for line in lines)
    assert any("launcher time 'soon'" in line for line in lines)
    assert any("'exclusive': expected a long sbatch option" in line for line in lines)
    assert any(line.startswith("--launcher-set 'nope=1'") for line in lines)


def test_launcher_options_need_the_slurm_launcher(capsys):
    assert main([*GRID, "--partition", "gpu"]) == 2
    assert "--partition: only with --launcher slurm" in capsys.readouterr().err


def test_without_submitit_one_line_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    assert main([*GRID, "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'submitit==1.5.4'" in err[0] and "Traceback" not in err[0]


def test_array_ids_of_squeue_and_sacct_are_expanded():
    assert _array_ids("42_[0-2,5%2]") == ["42_0", "42_1", "42_2", "42_5"]
    assert _array_ids("42_7") == ["42_7"] and _array_ids("43") == ["43"]


# -- a fake SLURM on PATH --------------------------------------------------------------------
FAKE = {
    "sbatch": 'n=$(cat "$FAKE_SLURM/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$FAKE_SLURM/count"\n'
              'cp "$1" "$FAKE_SLURM/script-$n.sh"; echo "$@" > "$FAKE_SLURM/argv-$n"\n'
              'echo "Submitted batch job $((4240+n))"\n',
    "srun": "exit 0\n",
    "scontrol": 'echo "$@" >> "$FAKE_SLURM/scontrol"\n',
    "squeue": 'echo "$@" >> "$FAKE_SLURM/squeue-args"; cat "$FAKE_SLURM/squeue.txt" 2>/dev/null\n',
    "sacct": 'echo "$@" >> "$FAKE_SLURM/sacct-args"; cat "$FAKE_SLURM/sacct.txt" 2>/dev/null\n',
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir, record = tmp_path / "bin", tmp_path / "slurm-record"
    bin_dir.mkdir()
    record.mkdir()
    for name, body in FAKE.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(record))
    return record


def test_sbatch_script_and_array_options(tmp_path, fake_slurm, harness_cache, capsys):
    out = tmp_path / "out"
    code = main([*GRID, "--cache", str(harness_cache), "--out", str(out), "--launcher", "slurm",
                 "--partition", "gpu", "--account", "lab", "--qos", "high", "--time", "2:00:00",
                 "--gpus-per-job", "2", "--cpus-per-job", "12", "--mem-per-job", "64G", "--constraint", "a100",
                 "--sbatch=--exclusive", "--sbatch=--mail-type=END", "--array-parallelism", "1",
                 "--launcher-set", "setup=['module load cuda/12']", "--launcher-set", "signal_delay_s=300"])
    assert code == 0, capsys.readouterr().err
    script = (fake_slurm / "script-1.sh").read_text()
    lines = set(script.splitlines())
    for expected in ("#SBATCH --array=0-1%1", "#SBATCH --partition=gpu", "#SBATCH --account=lab",
                     "#SBATCH --qos=high", "#SBATCH --time=120", "#SBATCH --gpus-per-node=2",
                     "#SBATCH --cpus-per-task=12", "#SBATCH --mem=64GB", "#SBATCH --constraint=a100",
                     "#SBATCH --exclusive", "#SBATCH --mail-type=END", "#SBATCH --signal=USR2@300",
                     "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --job-name=harness",
                     "module load cuda/12"):
        assert expected in lines, f"{expected!r} not in the sbatch script:\n{script}"
    command = [line for line in script.splitlines() if "submitit.core._submit" in line]
    assert len(command) == 1 and command[0].startswith("srun ") and str((out / "slurm").resolve()) in command[0]
    assert not (fake_slurm / "script-2.sh").exists()  # one array for the whole grid
    jobs = sorted((out / "jobs").iterdir())
    ids = sorted(records.read_submission(d)["job_id"] for d in jobs)
    assert ids == ["4241_0", "4241_1"]
    assert "harness status" in capsys.readouterr().out

    # a second submission while the first is queued submits nothing again
    (fake_slurm / "squeue.txt").write_text("4241_[0-1%1]|PENDING|JobArrayTaskLimit|\n")
    assert main([*GRID, "--cache", str(harness_cache), "--out", str(out), "--launcher", "slurm"]) == 0
    assert "already submitted (slurm job 4241_0 pending)" in capsys.readouterr().err
    assert not (fake_slurm / "script-2.sh").exists()


def test_status_shows_scheduler_states(tmp_path, fake_slurm, capsys):
    out = tmp_path / "out"
    for name, scheduler_id in (("a-job", "77_0"), ("b-job", "77_1"), ("c-job", "77_2"), ("d-job", "77_3")):
        records.write_submission(out / "jobs" / name, {"executor": "slurm", "job_id": scheduler_id,
                                                       "stderr": f"/logs/{scheduler_id}_0_log.err"})
    records.add_event(out / "jobs" / "b-job", "start", scheduler_job="77_1")
    records.add_event(out / "jobs" / "b-job", "requeue", scheduler_job="77_1", reason="time limit")
    records.add_event(out / "jobs" / "b-job", "start", scheduler_job="77_1")
    (fake_slurm / "sacct.txt").write_text("77_2|TIMEOUT|0:15|node3\n77_2.batch|CANCELLED|0:15|node3\n"
                                          "77_3|COMPLETED|0:0|node4\n77_0|PENDING|0:0|None assigned\n")
    (fake_slurm / "squeue.txt").write_text("77_0|PENDING|Priority|\n77_1|RUNNING|None|node7\n")
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    rows = {line.split()[0]: line for line in text.splitlines() if line.endswith("-job") or "-job " in line}
    assert "pending  SLURM job 77_0; pending (Priority)" in rows["a-job"]
    assert "running  SLURM job 77_1; running on node7; requeued 1 time" in rows["b-job"]
    assert "failed   SLURM job 77_2; TIMEOUT (exit code 0:15); log: /logs/77_2_0_log.err" in rows["c-job"]
    assert "failed   SLURM job 77_3; ended without a result; log: /logs/77_3_0_log.err" in rows["d-job"]
    assert "-j" in (fake_slurm / "sacct-args").read_text() or "--jobs" in (fake_slurm / "sacct-args").read_text()
    assert (fake_slurm / "sacct-args").read_text().count("\n") == 1  # one call for the whole folder


# -- submitit's local executor -------------------------------------------------------------
@pytest.mark.slow
def test_local_executor_runs_the_grid_in_subprocesses_like_a_local_run(tmp_path, harness_cache):
    config = tmp_path / "local.yaml"
    config.write_text("executor: local\ngpus_per_job: 0\ntime: 30\npoll_s: 1\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_CACHE": str(harness_cache), "OMP_NUM_THREADS": "1"}
    local, slurm = tmp_path / "local", tmp_path / "slurm"
    for out, extra in ((local, []), (slurm, ["--launcher", "slurm", "--wait", "--launcher-config", str(config)])):
        proc = subprocess.run([sys.executable, "-m", "harness.cli", *GRID, "--out", str(out), *extra], env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 job(s): 2 done" in proc.stderr
    pids = set()
    for job_dir in sorted((local / "jobs").iterdir()):
        other = slurm / "jobs" / job_dir.name  # same job ids: the launcher changes where, not what
        a, b = (json.loads((d / "metrics.json").read_text()) for d in (job_dir, other))
        assert {k: v["top1"] for k, v in a["metrics"]["evals"].items()} == \
            {k: v["top1"] for k, v in b["metrics"]["evals"].items()}
        started = records.events(other)
        assert [e["kind"] for e in started] == ["start"]
        pids.add(started[0]["pid"])
        assert records.read_submission(other)["executor"] == "local"
    assert len(pids) == 2 and os.getpid() not in pids  # each job in its own process
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| zeroshot")]
    assert rows and rows == [line for line in (local / "summary.md").read_text().splitlines()
                             if line.startswith("| zeroshot")]
