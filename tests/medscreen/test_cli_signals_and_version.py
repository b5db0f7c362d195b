"""The command line as an operator meets it, in real processes: Ctrl-C ends a long batch command with one line and
exit code 130, leaving what it wrote whole; progress bars are drawn on a terminal only; ``medscreen --version``
(review: http_cli defect 5)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
import tomllib
from pathlib import Path

import pytest

import medscreen
from benchmarks.study_factory import wrap_radiograph
from tests.conftest import FIXTURES, REPO

KERMANY = FIXTURES / "datasets" / "kermany" / "train"
STUDIES = 60


def _pyproject_version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def _home(tmp_path: Path, registered_store: Path) -> dict[str, str]:
    """The environment of a command on a home whose registry holds the shipped models (as after a first start)."""
    home = tmp_path / "var"
    home.mkdir()
    shutil.copyfile(registered_store, home / "mlflow.db")
    return {**os.environ, "MEDSCREEN_HOME": str(home)}


def _as_from_a_terminal() -> None:
    # Ctrl-C reaches a command started from a shell with SIGINT's default disposition; a test runner's process may
    # ignore SIGINT, which a child would inherit (and Python then installs no KeyboardInterrupt).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_when(process: subprocess.Popen[bytes], ready, what: str) -> None:  # type: ignore[no-untyped-def]
    """Send Ctrl-C (SIGINT to the process group, as a terminal does) once ``ready()``; fail if it ends first."""
    deadline = time.monotonic() + 300  # start-up and model loading on a loaded machine
    while not ready():
        assert process.poll() is None, f"the command ended (exit {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within 300 s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=120)


def test_version_is_the_installed_release() -> None:
    result = subprocess.run([sys.executable, "-m", "medscreen", "--version"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"medscreen {_pyproject_version()}\n"
    assert medscreen.__version__ == _pyproject_version()  # the fallback where no metadata is installed


@pytest.mark.integration
def test_ctrl_c_in_score_stops_quietly_with_130_and_whole_lines(tmp_path: Path, registered_store: Path) -> None:
    # It had printed a KeyboardInterrupt traceback (exit code 1); and, stderr not being a terminal, the bars'
    # redraws filled the log.
    folder = tmp_path / "site-data"
    films = sorted((KERMANY / "NORMAL").glob("*.jpeg")) + sorted((KERMANY / "PNEUMONIA").glob("*.jpeg"))
    for index in range(STUDIES):
        wrap_radiograph(films[index % len(films)], folder / f"cxr{index:03d}.dcm", patient_id=f"P{index}")
    out, err = tmp_path / "results.ndjson", tmp_path / "stderr.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "medscreen", "score", str(folder)], stdout=stdout, stderr=stderr,
            env=_home(tmp_path, registered_store), cwd=REPO, start_new_session=True, preexec_fn=_as_from_a_terminal,
        )
        try:
            _interrupt_when(process, lambda: b"\n" in out.read_bytes(), "first study's line")
        finally:
            if process.poll() is None:
                process.kill()
    log = err.read_text()
    assert process.returncode == 130, log
    assert "Traceback" not in log and log.endswith("medscreen score: interrupted\n"), log
    lines = out.read_bytes().decode().splitlines(keepends=True)
    assert 1 <= len(lines) < STUDIES, "interrupted mid-run"
    assert all(line.endswith("\n") and json.loads(line)["study_instance_uid"] for line in lines)  # none cut short
    assert "scoring studies" not in log and "\r" not in log  # no progress bar into a file


@pytest.mark.integration
def test_progress_bars_are_drawn_on_a_terminal(tmp_path: Path, registered_store: Path) -> None:
    wrap_radiograph(sorted((KERMANY / "NORMAL").glob("*.jpeg"))[0], tmp_path / "cxr.dcm")
    primary, secondary = pty.openpty()
    # A terminal 120 columns wide: a new pty is 0 x 0, in which tqdm draws an empty bar.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "medscreen", "score", str(tmp_path / "cxr.dcm")], stdout=subprocess.PIPE,
        stderr=secondary, env=_home(tmp_path, registered_store), cwd=REPO,
    )
    os.close(secondary)
    terminal = b""
    try:
        while True:  # read as it comes, so that a full terminal buffer never holds the command up
            readable, _, _ = select.select([primary], [], [], 300)
            assert readable, "no output on the terminal within 300 s"
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the command closed the terminal's last descriptor
                break
            if not chunk:
                break
            terminal += chunk
        assert process.wait(timeout=120) == 0, terminal.decode(errors="replace")
    finally:
        os.close(primary)
        if process.poll() is None:
            process.kill()
    assert b"scoring studies" in terminal and b"1/1" in terminal
    assert len(process.stdout.read().splitlines()) == 1  # type: ignore[union-attr]


def test_ctrl_c_in_screen_emr_leaves_no_half_written_output_and_the_run_resumes(tmp_path: Path) -> None:
    from datasets.fhir_emr import record_to_bundle
    from tests.screening.conftest import ordinary_child, syndromic_child

    extract = tmp_path / "extract.ndjson"
    records = [ordinary_child(f"child-{i}") for i in range(20)] + [syndromic_child(f"syndromic-{i}") for i in range(3)]
    extract.write_text("".join(json.dumps(record_to_bundle(record)) + "\n" for record in records))
    out, err = tmp_path / "flags.ndjson", tmp_path / "stderr.log"
    command = [sys.executable, "-m", "medscreen", "screen-emr", str(extract), "--out", str(out), "--all",
               "--no-store", "--as-of", "2024-03-01"]
    env = {**os.environ, "MEDSCREEN_HOME": str(tmp_path / "var")}
    (tmp_path / "var").mkdir()  # an installation's home: each child written is audited in its database, --no-store too
    with err.open("wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=REPO,
                                   start_new_session=True, preexec_fn=_as_from_a_terminal)
        try:
            # The extract is split (the work folder's manifest written): the 6 s of loading the knowledge follow.
            _interrupt_when(process, (tmp_path / "flags.ndjson.work" / "manifest.json").is_file, "split extract")
        finally:
            if process.poll() is None:
                process.kill()
    log = err.read_text()
    assert process.returncode == 130, log
    assert "Traceback" not in log and log.endswith("medscreen screen-emr: interrupted\n"), log
    assert not out.exists() and not list(tmp_path.rglob("*.tmp")), "no output, and nothing half-written"
    # What it kept is a consistent work folder: run again, it finishes from there.
    again = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert again.returncode == 0, again.stderr
    assert len([json.loads(line) for line in out.read_text().splitlines()]) == len(records)
    assert "\r" not in again.stderr and not (tmp_path / "flags.ndjson.work").exists()


def test_a_ctrl_c_swallowed_in_code_called_from_c_is_raised_again() -> None:
    """An interrupt raised where Python can only print it ("Exception ignored in", here a finaliser, in CI pydantic-core
    building a validator) had let `screen-emr` run on to the end: it is sent again a moment later, unprinted."""
    from medscreen.cli import interrupts_not_swallowed

    class Finalised:
        def __del__(self) -> None:
            raise KeyboardInterrupt

    printed: list[object] = []
    previous = sys.unraisablehook
    sys.unraisablehook = printed.append
    try:
        with pytest.raises(KeyboardInterrupt), interrupts_not_swallowed():
            Finalised()  # finalised at once, its KeyboardInterrupt unraisable
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the interrupt, sent again, arrives here
                time.sleep(0.01)
    finally:
        sys.unraisablehook = previous
    assert printed == []  # not printed as "Exception ignored"
