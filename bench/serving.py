"""Serving latency and throughput: the model in-process, the MLflow endpoint, the full service.

    make run                                   # once: a registered champion
    .venv/bin/python bench/serving.py [--version N] [--requests 300] [--clients 1,4,16]

For one registered version (default: the champion) it measures, on chat-length Chinese messages
(4-30 characters, from the bootstrap corpus), batch-1 latency (p50, p99) and throughput at 1, 4
and 16 concurrent clients of:

1. the pyfunc called in-process (threads calling ``predict`` on one text each, with as many
   ONNX Runtime threads per call as a model server gives it: ``model_server_onnx_threads``);
2. its own ``mlflow models serve`` process (one worker, as promotion starts it), one text per
   ``POST /invocations``;
3. the full ``POST /v1/messages`` path of the regulation service in front of that endpoint
   (store, policy, reply; a fresh SQLite store), with micro-batching off (batch size 1), then on,
   then on with 2 uvicorn workers.

``--stub`` isolates the service's own overhead: no model at all, but a trivially fast stub
endpoint (a tiny HTTP server in a subprocess answering ``/invocations`` with fixed
probabilities); it measures the stub alone and the full ``/v1/messages`` path in front of it
(default settings), prints p50/p99 and throughput per client count, the ratios, the
milliseconds the service adds per message and the CPU time its process spends per message.
``--turns N`` spreads the service's messages over conversations of N turns (so the history a
message reads grows as in a real chat).

    .venv/bin/python bench/serving.py --stub [--requests 1000] [--turns 5]

Clients are asyncio tasks in this process (one event loop), so the load generator costs little;
the machine's cores are shared by every process, as in production on one host. Prints a table
and the ratios the issue asks for. Figures depend on the machine and its load: read the ratios.
Every process it starts binds 127.0.0.1 and is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pipelines.registry.live import LiveRoute, write_live
from pipelines.registry.server import (
    ServerHandle,
    free_port,
    invocations_payload,
    start_server,
    stop_server,
    wait_ready,
)
from pipelines.settings import PROJECT_ROOT, Settings, get_settings

# Run as a script, this file's folder is first on sys.path and this file's name would shadow the
# `serving` package (imported inside the functions below): the repository goes first instead.
if __name__ == "__main__":
    sys.path[0] = str(PROJECT_ROOT)

FALLBACK_TEXTS = (
    "快递三天了还没到，怎么回事",
    "质量很好，非常满意",
    "请问可以开发票吗？",
    "东西坏了，我要退货",
    "客服态度太差了",
    "什么时候发货？",
    "物美价廉，推荐购买",
    "颜色和图片不一样，失望",
)


@dataclass
class Result:
    target: str
    clients: int
    requests: int
    seconds: float
    latencies_ms: list[float]
    degraded: int = 0

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def chat_texts(settings: Settings, n: int = 400) -> list[str]:
    corpus = settings.bootstrap_dir / "corpus.parquet"
    if corpus.is_file():
        import pandas as pd

        texts = [t for t in pd.read_parquet(corpus, columns=["text"])["text"] if 4 <= len(t) <= 30]
        if len(texts) >= 50:
            return random.Random(0).sample(texts, min(n, len(texts)))
    return list(FALLBACK_TEXTS) * (n // len(FALLBACK_TEXTS))


def champion_version(settings: Settings) -> str:
    from pipelines.tracking import CHAMPION_ALIAS, client

    model = client(settings).get_registered_model(settings.registered_model_name)
    if CHAMPION_ALIAS not in model.aliases:
        sys.exit("no champion: run `make run` first (or pass --version)")
    return str(model.aliases[CHAMPION_ALIAS])


# ---------------------------------------------------------------------- load generation


async def drive(
    call: Callable[[int], Awaitable[bool]], clients: int, requests: int, warmup: int
) -> tuple[float, list[float], int]:
    """``requests`` calls by ``clients`` concurrent workers; (seconds, latencies ms, degraded)."""
    for i in range(warmup):
        await call(-1 - i)
    latencies: list[float] = []
    degraded = 0
    next_index = 0

    async def worker() -> None:
        nonlocal next_index, degraded
        while next_index < requests:
            index = next_index
            next_index += 1
            started = time.perf_counter()
            if await call(index):
                degraded += 1
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - started, latencies, degraded


def bench_in_process(model: Any, texts: list[str], clients: int, requests: int) -> Result:
    import pandas as pd

    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        for index in counter:
            frame = pd.DataFrame({"text": [texts[index % len(texts)]]})
            started = time.perf_counter()
            model.predict(frame)
            with lock:
                latencies.append((time.perf_counter() - started) * 1000)

    for text in texts[:5]:
        model.predict(pd.DataFrame({"text": [text]}))
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Result("in-process pyfunc", clients, requests, time.perf_counter() - started, latencies)


def bench_endpoint(
    url: str, texts: list[str], clients: int, requests: int, name: str = "MLflow endpoint"
) -> Result:
    async def run() -> tuple[float, list[float], int]:
        async with httpx.AsyncClient(timeout=60, trust_env=False) as http:

            async def call(index: int) -> bool:
                body = json.dumps(
                    invocations_payload([texts[index % len(texts)]]), ensure_ascii=False
                )
                response = await http.post(
                    f"{url}/invocations",
                    content=body.encode(),
                    headers={"Content-Type": "application/json"},
                )
                response.raise_for_status()
                return False

            return await drive(call, clients, requests, warmup=5)

    seconds, latencies, _ = asyncio.run(run())
    return Result(name, clients, requests, seconds, latencies)


def bench_service(
    name: str, url: str, key: str, texts: list[str], clients: int, requests: int, turns: int = 1
) -> Result:
    run_id = f"r{time.monotonic_ns() % 10**12}-{clients}"
    # Consecutive requests go to different conversations (so concurrent clients do not queue on
    # one conversation's lock); each conversation gets ``turns`` messages over the run.
    conversations = max(1, requests // max(1, turns))

    async def run() -> tuple[float, list[float], int]:
        async with httpx.AsyncClient(
            timeout=60, trust_env=False, headers={"X-API-Key": key}
        ) as http:

            async def call(index: int) -> bool:
                conversation = index % conversations if index >= 0 else f"warmup{-index}"
                response = await http.post(
                    f"{url}/v1/messages",
                    json={
                        "conversation_id": f"{run_id}-{conversation}",
                        "text": texts[abs(index) % len(texts)],
                    },
                )
                response.raise_for_status()
                return bool(response.json()["degraded"])

            return await drive(call, clients, requests, warmup=5)

    seconds, latencies, degraded = asyncio.run(run())
    return Result(name, clients, requests, seconds, latencies, degraded)


# ---------------------------------------------------------------------- processes

STUB_RECORD = {
    "label": "negative",
    "score": 0.8,
    "p_negative": 0.8,
    "p_neutral": 0.15,
    "p_positive": 0.05,
}


async def _stub_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP/1.1 keep-alive: ``/invocations`` answers one fixed record per text; anything else
    (``/ping``) an empty JSON object."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            path = lines[0].split(b" ")[1]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            payload = b"{}"
            if path == b"/invocations":
                rows = len(json.loads(body)["dataframe_split"]["data"])
                payload = json.dumps({"predictions": [STUB_RECORD] * rows}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def serve_stub(port: int) -> None:
    """Run the stub endpoint on 127.0.0.1:``port`` until killed."""

    async def run() -> None:
        server = await asyncio.start_server(_stub_connection, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


@contextmanager
def stub_endpoint() -> Iterator[ServerHandle]:
    """The stub endpoint in a subprocess of its own (its CPU is not the load generator's)."""
    port = free_port("127.0.0.1")
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve-stub", str(port)],
        cwd=PROJECT_ROOT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/ping", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            sys.exit("the stub endpoint did not start")
        yield ServerHandle(
            version="stub",
            model_uri="stub",
            host="127.0.0.1",
            port=port,
            pid=process.pid,
            start_ticks=0,
            started_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
            log_path="",
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@contextmanager
def model_server(settings: Settings, version: str) -> Iterator[ServerHandle]:
    handle = start_server(settings, version)
    try:
        wait_ready(handle, settings.model_server_ready_timeout_s)
        yield handle
    finally:
        stop_server(settings, handle.pid, handle.start_ticks)


@contextmanager
def regulation_service(
    var_dir: Path, route: ServerHandle, *, batch_size: int, workers: int
) -> Iterator[tuple[str, str, int]]:
    """The service in a process of its own: (url, API key, pid)."""
    from pipelines.store.db import upgrade
    from serving.auth import create_key

    var_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(var_dir=var_dir)
    upgrade(settings.database_url)
    key = create_key(settings.service_api_keys_file, f"bench-{time.monotonic_ns()}", ["messages"])
    write_live(settings.live_file, LiveRoute.for_server(route, "bench"))
    port = free_port("127.0.0.1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOREG_")}
    env |= {
        "EMOREG_VAR_DIR": str(var_dir),
        "EMOREG_SERVICE_PORT": str(port),
        "EMOREG_SERVICE_WORKERS": str(workers),
        "EMOREG_SERVICE_BATCH_MAX_SIZE": str(batch_size),
        "EMOREG_SERVICE_DEADLINE_S": "10",  # the bench measures the model path, not fallbacks
        "HF_HUB_OFFLINE": "1",
    }
    log = (var_dir / f"service-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "serve"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if process.poll() is not None:
                sys.exit(f"the service exited; see {log.name}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield url, key, process.pid
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux ``/proc``; 0 elsewhere):
    what the service costs per message whatever else shares the cores."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- report


def print_table(results: list[Result]) -> None:
    print(f"\n{'target':<34} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'degr.':>6}")
    for r in results:
        print(
            f"{r.target:<34} {r.clients:>7} {r.throughput:>8.1f} {r.percentile(0.5):>8.1f} "
            f"{r.percentile(0.99):>8.1f} {r.degraded:>6}"
        )


def print_ratios(
    results: list[Result], clients: list[int], endpoint_name: str = "MLflow endpoint"
) -> None:
    by = {(r.target, r.clients): r for r in results}
    low, high = min(clients), max(clients)
    endpoint = by.get((endpoint_name, low))
    print("\nratios")
    for target in dict.fromkeys(r.target for r in results):
        one, many = by.get((target, low)), by.get((target, high))
        if one and many:
            line = f"  {target:<34} throughput {high} vs {low} clients: "
            line += f"{many.throughput / one.throughput:.2f}x"
            if endpoint and target.startswith("service"):
                p50 = one.percentile(0.5) / endpoint.percentile(0.5)
                line += f"; p50 at {low} client vs endpoint: {p50:.2f}x"
            print(line)


def print_overhead(results: list[Result], endpoint_name: str, service_name: str) -> None:
    by = {(r.target, r.clients): r for r in results}
    print("\nwhat the service adds to the endpoint (p50, p99 ms)")
    for (target, n), service in by.items():
        endpoint = by.get((endpoint_name, n))
        if target == service_name and endpoint is not None:
            p50 = service.percentile(0.5) - endpoint.percentile(0.5)
            p99 = service.percentile(0.99) - endpoint.percentile(0.99)
            print(f"  {n:>3} clients: {p50:+.2f} ms p50, {p99:+.2f} ms p99")


def main_stub(settings: Settings, clients: list[int], requests: int, turns: int) -> None:
    """The service's own overhead: the stub endpoint alone, then the service in front of it."""
    texts = chat_texts(settings)
    endpoint_name, service_name = "stub endpoint", "service on the stub"
    print(f"stub endpoint (no model); {len(texts)} texts; {turns} turn(s) per conversation")
    print(f"machine: {os.cpu_count()} cores; {requests} requests per row")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp, stub_endpoint() as handle:
        for n in clients:
            results.append(bench_endpoint(handle.url, texts, n, requests, endpoint_name))
            print_table(results[-1:])
        service = regulation_service(Path(tmp) / "service", handle, batch_size=32, workers=1)
        with service as (url, key, pid):
            for n in clients:
                cpu_before = process_cpu_s(pid)
                results.append(bench_service(service_name, url, key, texts, n, requests, turns))
                cpu_ms = (process_cpu_s(pid) - cpu_before) * 1000 / requests
                print_table(results[-1:])
                print(f"  service process CPU: {cpu_ms:.2f} ms per message")
    print_table(results)
    print_ratios(results, clients, endpoint_name)
    print_overhead(results, endpoint_name, service_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", help="registered version (default: the champion)")
    parser.add_argument("--requests", type=int, default=300, help="per target and client count")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument(
        "--stub", action="store_true", help="the service's own overhead, on a stub endpoint"
    )
    parser.add_argument("--turns", type=int, default=1, help="messages per conversation")
    parser.add_argument("--serve-stub", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stub:
        serve_stub(args.serve_stub)
        return
    clients = [int(c) for c in args.clients.split(",")]

    settings = get_settings()
    if args.stub:
        main_stub(settings, clients, args.requests, args.turns)
        return
    from pipelines.tracking import configure_mlflow

    configure_mlflow(settings)
    version = args.version or champion_version(settings)
    model_uri = f"models:/{settings.registered_model_name}/{version}"
    texts = chat_texts(settings)
    mean_chars = statistics.mean(len(t) for t in texts)
    print(f"model {model_uri}; {len(texts)} texts, mean {mean_chars:.1f} characters")
    print(f"machine: {os.cpu_count()} cores; {args.requests} requests per row")

    results: list[Result] = []
    if not args.skip_in_process:
        import mlflow

        from pipelines.model.modeling import ONNX_THREADS_ENV

        os.environ.setdefault(ONNX_THREADS_ENV, str(settings.model_server_onnx_threads))
        model = mlflow.pyfunc.load_model(model_uri)
        for n in clients:
            results.append(bench_in_process(model, texts, n, args.requests))
            print_table(results[-1:])
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        # The bench's own model server (and its record) under a temporary var/.
        bench_settings = settings.model_copy(update={"var_dir": Path(tmp) / "models-var"})
        with model_server(bench_settings, version) as handle:
            for n in clients:
                results.append(bench_endpoint(handle.url, texts, n, args.requests))
                print_table(results[-1:])
            variants = (
                ("service, no batching", 1, 1),
                ("service, micro-batching", 32, 1),
                ("service, micro-batching, 2 workers", 32, 2),
            )
            for i, (name, batch_size, workers) in enumerate(variants):
                var_dir = Path(tmp) / f"service-{i}"
                with regulation_service(
                    var_dir, handle, batch_size=batch_size, workers=workers
                ) as (url, key, _pid):
                    for n in clients:
                        results.append(
                            bench_service(name, url, key, texts, n, args.requests, args.turns)
                        )
                        print_table(results[-1:])
    print_table(results)
    print_ratios(results, clients)


if __name__ == "__main__":
    main()
