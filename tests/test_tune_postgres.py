"""hacknip tune on several machines: two ``hacknip tune`` processes share one study in a real PostgreSQL server.

The server is Debian's ``postgresql`` (``.ci/run`` installs it), started for this module on a temporary data folder
and a free localhost port, run as the ``postgres`` user (PostgreSQL refuses to run as root), stopped and deleted at
the end. Without its programs the test fails and says how to install them, unless ``HACKNIP_SKIP_POSTGRES=1``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTGRES_ROOT = Path("/usr/lib/postgresql")
DATABASE = "hacknip"
TRIALS = 24
HACKNIP = Path(sys.executable).with_name("hacknip")
"""The installed command line, as each machine would run it (not click's test runner)."""


@dataclass
class Server:
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"


def postgres_programs() -> Path:
    """The bin folder of the newest PostgreSQL server installed by Debian's packages."""
    found = sorted(POSTGRES_ROOT.glob("*/bin/initdb"), key=lambda path: _version(path.parent.parent.name))
    if found:
        return found[-1].parent
    if os.environ.get("HACKNIP_SKIP_POSTGRES") == "1":
        pytest.skip("HACKNIP_SKIP_POSTGRES=1: tuning is not tried on a PostgreSQL server")
    pytest.fail(f"PostgreSQL's server programs are not installed (no {POSTGRES_ROOT}/*/bin/initdb): apt-get install "
                "postgresql (as .ci/run does), or set HACKNIP_SKIP_POSTGRES=1 to skip this test")


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _as_postgres(*command) -> None:
    """Run a PostgreSQL program; as root, as the ``postgres`` system user, since the server refuses root."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    done = subprocess.run([*prefix, *map(str, command)], capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout}\n{done.stderr}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(programs: Path, folder: Path) -> Server:
    data, port = folder / "data", _free_port()
    _as_postgres(programs / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale",
                 "--no-sync")
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off"  # its socket in folder, not /run
    try:
        _as_postgres(programs / "pg_ctl", "start", "-w", "-D", data, "-l", folder / "server.log", "-o", options)
    except AssertionError:
        log = folder / "server.log"
        raise AssertionError(log.read_text() if log.exists() else "no server log") from None
    _as_postgres(programs / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", DATABASE)
    return Server(port)


@pytest.fixture(scope="module")
def postgres():
    programs = postgres_programs()
    folder = Path(tempfile.mkdtemp(prefix="hacknip-postgres-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
        server = _start(programs, folder)
        try:
            yield server
        finally:
            _as_postgres(programs / "pg_ctl", "stop", "-w", "-m", "fast", "-D", folder / "data")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _options(phonons_path: Path) -> list[str]:
    return ["--data", str(phonons_path), "--backbone", "chgnet", "--limit", "100"]


def _tune_command(phonons_path: Path, server: Server, seed: int, out: Path) -> list[str]:
    """What every machine runs: the same options, the same storage, its own seed."""
    return [str(HACKNIP), "tune", *_options(phonons_path), "--head", "lightgbm", "--protocol", "paper", "--layers",
            "2", "--trials", str(TRIALS), "--patience", "100", "--storage", server.url, "--seed", str(seed),
            "--out", str(out)]


def _hacknip(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def _create_optuna_tables(url: str) -> None:
    """Once, before any worker: workers started together on an empty database can collide creating them (optuna#1092)."""
    import optuna

    optuna.storages.RDBStorage(url).engine.dispose()


def _read_study(url: str):
    """The one study in the database: its trials and its best trial, read back with Optuna."""
    import optuna

    storage = optuna.storages.RDBStorage(url)
    try:
        (summary,) = optuna.get_all_study_summaries(storage)
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        return study.trials, study.best_trial
    finally:
        storage.engine.dispose()


def _deploy_study(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    (study,) = results["tuning"]["deploy"]["studies"]
    return study


def test_storage_url_passes_database_urls_through_unchanged():
    from hacknip.evaluation.tuning import storage_url

    for url in ("postgresql://hacknip:secret@db.example.org:5432/hacknip", "postgresql+psycopg://hacknip@db/hacknip",
                "postgresql+psycopg2://hacknip@db/hacknip", "postgresql+psycopg://postgres@/hacknip?host=/run/pg"):
        assert storage_url(url) == url


def test_two_workers_share_one_study_on_a_postgres_server(postgres, phonons_path, tmp_path):
    _create_optuna_tables(postgres.url)
    # featurise once first, so both workers spend their time on trials rather than racing to fill the store
    _hacknip([str(HACKNIP), "featurize", *_options(phonons_path)], tmp_path)
    workers = [subprocess.Popen(_tune_command(phonons_path, postgres, seed, tmp_path / f"worker{seed}"), cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for seed in (1, 2)]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs

    trials, best = _read_study(postgres.url)
    assert {trial.state.name for trial in trials} == {"COMPLETE"}  # nothing failed or left running
    assert [trial.number for trial in trials] == list(range(len(trials)))  # none lost, none numbered twice
    # the stopping rule counts the stored trials: the other worker may finish the one it had started, no more
    assert TRIALS <= len(trials) <= TRIALS + 1
    expected_workers = {f"{socket.gethostname()}:{worker.pid}" for worker in workers}
    assert {trial.user_attrs["worker"] for trial in trials} == expected_workers  # both contributed, no one else

    reported = [_deploy_study(tmp_path / f"worker{seed}") for seed in (1, 2)]
    assert max(study["trials"] for study in reported) == len(trials)  # the last to finish saw every trial
    for study in reported:  # each reports a stored trial, the best of those it saw
        assert trials[study["best_trial"]].value == study["best_value"] >= best.value
        assert trials[study["best_trial"]].user_attrs["head_params"] == study["head_params"]

    # reading the results: the same command again finds the study finished, runs no trial, reports the stored best
    _hacknip(_tune_command(phonons_path, postgres, 3, tmp_path / "read"), tmp_path)
    assert len(_read_study(postgres.url)[0]) == len(trials)
    results = json.loads((tmp_path / "read" / "results.json").read_text())
    deploy = results["tuning"]["deploy"]
    assert _deploy_study(tmp_path / "read")["best_trial"] == best.number
    assert deploy["head_params"] == best.params == results["params"]["head_params"]
    assert deploy["validation_score"] == best.value
    assert results["mae_mean"] == pytest.approx(best.value)  # the paper protocol reports the winning trial's score
    assert json.loads((tmp_path / "read" / "params.json").read_text()) == results["params"]


def test_a_missing_driver_and_an_unreachable_database_are_one_clear_line():
    import optuna

    from hacknip.errors import InputError
    from hacknip.evaluation.tuning import open_study

    sampler = optuna.samplers.RandomSampler(seed=0)
    with pytest.raises(ImportError, match=r"mysql://u:\*\*\*@db/x: no database driver .* pip install pymysql"):
        open_study("s", "mysql://u:secret@db/x", "minimize", sampler)
    port = _free_port()
    with pytest.raises(InputError, match=rf"postgresql\+psycopg://u:\*\*\*@127.0.0.1:{port}/x: the database refused"):
        open_study("s", f"postgresql+psycopg://u:secret@127.0.0.1:{port}/x", "minimize", sampler)
