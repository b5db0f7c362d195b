"""Latency of ``GET /api/worklist`` with 100,000 studies in the database, under 50 concurrent clients,
on SQLite and on PostgreSQL.

    python benchmarks/worklist_api.py [--studies 100000] [--open 100000] [--clients 50] [--seconds 20]
                                      [--backends sqlite,postgresql]

The database is filled through the real migrations, then the app runs in its own process (uvicorn, one
worker, as ``medscreen serve`` runs it) and the clients (one asyncio loop, another process) log in as a
radiologist and ask for pages: 70% the first page, 20% the first page of one modality, 10% a random page
among the open studies. Every request is a real one: token check, role lookup, count, page, audit row.
Two loads: **paced**, each client asks once a second (50 radiologists whose pages follow live updates),
and **saturated**, each client asks again as soon as it has its answer (the server's ceiling).
PostgreSQL is a throw-away server from ``tests/postgres.py`` (fsync off); SQLite runs as shipped (WAL,
synchronous=FULL, so every audit row is an fsync).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import insert  # noqa: E402

from benchmarks.percentiles import percentile  # noqa: E402
from inference.tables import Study  # noqa: E402
from medscreen.schema import migrate_all  # noqa: E402
from service.db import make_engine, make_session_factory, session_scope  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.users import create_user  # noqa: E402
from worklist.policy import ChampionCall, StudyFacts, policy_from_settings, prioritise  # noqa: E402
from worklist.tables import WorklistEntry  # noqa: E402

if TYPE_CHECKING:
    from tests.postgres import PostgresServer

PASSWORD = "bench-password-long"
MODALITIES = [("DX", "chest-xray", 0.7), ("MG", "mammography", 0.2), ("CT", "ct-chest", 0.1)]
SITES = ["North", "South", "East", "West"]


def fill(url: str, studies: int, open_studies: int) -> None:
    """Studies and their worklist entries, placed by the real policy; the oldest ones already read."""
    migrate_all(url)
    engine = make_engine(url)
    policy = policy_from_settings(Settings())
    rng = random.Random(1)
    now = datetime.now(UTC)
    start = now - timedelta(days=3)
    with session_scope(make_session_factory(engine)) as session:
        create_user(session, "rita", PASSWORD, ["radiologist"], actor="benchmark")
    chunk = 5000
    with engine.begin() as connection:
        for first in range(0, studies, chunk):
            study_rows, entry_rows = [], []
            for n in range(first, min(first + chunk, studies)):
                modality, task, _ = rng.choices(MODALITIES, weights=[m[2] for m in MODALITIES])[0]
                arrived = start + (now - start) * (n / studies)
                score = rng.random()
                call = "positive" if score >= 0.5 else "negative"
                order = "STAT" if rng.random() < 0.03 else "ROUTINE"
                facts = StudyFacts(
                    arrived_at=arrived,
                    modality=modality,
                    order_priority=order,
                    state="scored",
                    champion=ChampionCall(call, score, 0.5, task, "1", "defer"),  # type: ignore[arg-type]
                )
                priority = prioritise(facts, policy, now)
                uid = f"1.2.826.0.1.3680043.10.1.{n + 1}"
                is_open = n >= studies - open_studies
                study_rows.append(
                    {
                        "id": n + 1,
                        "study_instance_uid": uid,
                        "status": "scored",
                        "revision": 1,
                        "modality": modality,
                        "task": task,
                        "instance_count": 1,
                        "study_description": f"{modality} study",
                        "accession_number": f"A{n + 1:08d}",
                        "study_date": arrived.strftime("%Y%m%d"),
                        "patient_id": f"P{n % 40000}",
                        "patient_name": "Bench^Patient",
                        "patient_sex": "F",
                        "patient_birth_date": "19600101",
                        "institution_name": SITES[n % len(SITES)],
                        "order_priority": order,
                        "first_received_at": arrived,
                        "last_received_at": arrived,
                        "completed_at": arrived,
                    }
                )
                entry_rows.append(
                    {
                        "study_id": n + 1,
                        "study_instance_uid": uid,
                        "accession_number": f"A{n + 1:08d}",
                        "study_description": f"{modality} study",
                        "modality": modality,
                        "site": SITES[n % len(SITES)],
                        "task": task,
                        "order_priority": order,
                        "arrived_at": arrived,
                        "state": "scored",
                        "study_status": "scored",
                        "tier": priority.tier,
                        "due_at": priority.due_at,
                        "tie_break": priority.tie_break,
                        "priority_reason": priority.reason,
                        "score": score,
                        "threshold": 0.5,
                        "call": call,
                        "model_name": task,
                        "model_version": "1",
                        "is_open": is_open,
                        "read_at": None if is_open else arrived + timedelta(hours=1),
                        "updated_at": now,
                    }
                )
            connection.execute(insert(Study), study_rows)
            connection.execute(insert(WorklistEntry), entry_rows)
        if url.startswith("postgresql"):
            connection.exec_driver_sql("ANALYZE")
    engine.dispose()


def start_server(home: Path, url: str, port: int) -> subprocess.Popen[bytes]:
    code = (
        "import uvicorn\n"
        "from medscreen.app import create_app\n"
        "from service.settings import Settings\n"
        f"app = create_app(Settings(home={str(home)!r}, database_url={url!r}), run_migrations=False)\n"
        f"uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning', access_log=False)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCREEN_")}
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


class Connection:
    """One keep-alive HTTP/1.1 connection written by hand: the clients share the machine with the server, and
    a full HTTP client library costs more CPU per request than the endpoint being measured."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        await self.reader.readexactly(length)
        return status


async def load(port: int, clients: int, seconds: float, open_studies: int, paced: bool) -> list[float]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        login = await http.post("/api/auth/token", data={"username": "rita", "password": PASSWORD})
        token = login.json()["access_token"]
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def client(index: int) -> None:
        nonlocal errors
        rng = random.Random(index)
        connection = Connection(port, token)
        if paced:
            await asyncio.sleep(rng.random())
        while time.monotonic() < deadline:
            started = time.monotonic()
            pick = rng.random()
            target = "/api/worklist?limit=50"
            if pick < 0.2:
                target += f"&modality={rng.choice(MODALITIES)[0]}"
            elif pick < 0.3:
                target += f"&offset={rng.randrange(0, max(1, open_studies - 50))}"
            status = await connection.get(target)
            elapsed = time.monotonic() - started
            if status == 200:
                latencies.append(elapsed * 1000)
            else:
                errors += 1
            if paced:
                await asyncio.sleep(max(0.0, 1.0 - elapsed))
        if connection.writer is not None:
            connection.writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    if errors:
        print(f"  {errors} requests failed")
    return latencies


def report(backend: str, mode: str, latencies: list[float], seconds: float) -> None:
    p50, p99 = statistics.median(latencies), percentile(latencies, 99)
    print(
        f"| {backend} | {mode} | {len(latencies) / seconds:.0f} | {p50:.1f} | {p99:.1f} | {'yes' if p99 < 50 else 'no'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--open", type=int, default=10_000, help="how many of them are still open (unread)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()

    from tests.ports import free_port

    print(
        f"{args.studies} studies, {args.open} open, {args.clients} clients, {args.seconds:g} s per load, "
        f"{os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.1f}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="medscreen-bench-") as tmp:
        for backend in args.backends.split(","):
            home = Path(tmp) / backend
            home.mkdir()
            server_pg = None
            if backend == "sqlite":
                url = f"sqlite:///{home / 'medscreen.db'}"
            else:
                server_pg = start_postgres()
                url = server_pg.create_database("bench")
            started = time.monotonic()
            fill(url, args.studies, args.open)
            print(f"{backend}: filled in {time.monotonic() - started:.0f} s")
            port = free_port()
            process = start_server(home, url, port)
            try:
                asyncio.run(load(port, args.clients, 3, args.open, paced=False))  # warm-up
                for mode, paced in (("paced (1 req/s per client)", True), ("saturated", False)):
                    latencies = asyncio.run(load(port, args.clients, args.seconds, args.open, paced))
                    rows.append((backend, mode, latencies))
            finally:
                process.terminate()
                process.wait(timeout=30)
                if server_pg is not None:
                    server_pg.stop()
                    shutil.rmtree(server_pg.root, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.1f} (the machine is shared: other processes' CPU shows up in p99)")
    print()
    print("| database | load | requests/s | p50 ms | p99 ms | p99 < 50 ms |")
    print("|---|---|---|---|---|---|")
    for backend, mode, latencies in rows:
        report(backend, mode, latencies, args.seconds)


def start_postgres() -> PostgresServer:
    import pwd

    from tests.ports import free_port
    from tests.postgres import PostgresServer, find_postgres_bin

    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL binaries not found: install Debian's postgresql")
    root = Path(tempfile.mkdtemp(prefix="medscreen-pg-", dir="/tmp"))
    run_as = None
    if os.geteuid() == 0:
        run_as = "postgres"
        account = pwd.getpwnam(run_as)
        os.chown(root, account.pw_uid, account.pw_gid)
    server = PostgresServer(bin_dir=bin_dir, root=root, port=free_port(), run_as=run_as)
    server.start()
    return server


if __name__ == "__main__":
    main()
