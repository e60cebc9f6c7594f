"""`jarvis up`: the whole stack on one machine as supervised processes.

Starts an embedded Redis (unless JARVIS_REDIS_URL points at a reachable one; persistent, in
the work dir), the model server the profile needs (the CPU profile's llama.cpp server), then
every service as `python -m services.<name>`; arbitrated (`Stack(arbitrated=True)`, the GPU
profile's default), the resource service starts first and starts the model servers and STT/TTS
workers itself. Supervision: a process that dies (Redis included) is restarted at once, then
with growing backoff if it keeps dying; an optional service (the VLM worker, a resource
service that is not arbitrating) that keeps crashing is given up alone and reported, while the
rest of the stack goes on serving. Ctrl-C (or `stop()`) ends every process it started, by pid,
even on failure.

One host's share of a stack spread over several (docs/DEPLOY.md, "Several hosts"): `roles`
picks what runs here (`gateway`, `orchestrator`, `workers`, `resource`), `host` is the address
the gateway binds, `redis_url` the Redis every host shares and `sessions_dir` the session folder
every orchestrator shares.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from jarvis.redis_server import RedisServer, free_port
from shared import redis_url
from shared.messages import jobs_stream

ROOT = Path(__file__).resolve().parent.parent


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the launcher dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)
    optional: bool = False  # the stack serves without it: given up alone when it keeps crashing
    started_at: float = 0.0  # monotonic, when it was last started
    next_start: float | None = None  # when supervision starts it again (it died)
    given_up: bool = False

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.started_at = time.monotonic()
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        out.close()

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode if self.popen is not None else None

    def signal(self, sig: int) -> None:
        if self.popen is not None and self.alive():
            try:
                os.killpg(self.popen.pid, sig)  # the service and anything it spawned
            except ProcessLookupError:
                pass


def _wait_port(host: str, port: int, timeout: float, procs: list[Proc]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.name} exited with {p.returncode}; see {p.log}")
        try:
            with socket.create_connection((host, port), timeout=0.3):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


def _wait_http(url: str, timeout: float, proc: Proc) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.returncode}; see {proc.log}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status < 500:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f}s")


BACKOFF_MAX_S = 30.0  # the longest wait before restarting a service that keeps dying
GIVE_UP_AFTER = 5  # restarts within a minute after which an optional service is given up
STABLE_S = 10.0  # a process that ran this long before dying starts its backoff afresh


ROLES = ("gateway", "orchestrator", "workers", "resource")
DEFAULT_ROLES = ("gateway", "orchestrator", "workers")  # plus resource where the profile arbitrates


def parse_roles(text: str) -> frozenset[str]:
    """`gateway,orchestrator,workers` -> the roles; an unknown one is a clear error."""
    roles = frozenset(r.strip() for r in text.split(",") if r.strip())
    unknown = roles - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"roles are a comma-separated subset of {', '.join(ROLES)}; got {text!r}")
    return roles


def default_orchestrators() -> int:
    """One orchestrator per core, up to four: each runs its own event loop and VAD batch, so
    the turns of many sessions are decided in parallel instead of queueing behind one loop."""
    return max(1, min(4, os.cpu_count() or 1))


class Stack:
    def __init__(
        self,
        profile: str = "cpu",
        port: int = 8765,
        host: str = "127.0.0.1",
        orchestrators: int = 1,
        workdir: str | Path = "var",
        env: dict[str, str] | None = None,
        stub_llm_delay: float = 0.0,
        stub_stt_delay: float = 0.0,
        stub_tts_delay: float = 0.0,
        vlm: bool | None = None,
        resource: bool | None = None,
        vlm_stub: bool | None = None,
        arbitrated: bool | None = None,
        roles: Collection[str] | None = None,
        redis_url: str | None = None,
        sessions_dir: str | Path | None = None,
    ) -> None:
        self.roles = frozenset(roles if roles is not None else DEFAULT_ROLES)
        if unknown := self.roles - set(ROLES):
            raise ValueError(f"unknown roles {sorted(unknown)}; roles are {', '.join(ROLES)}")
        self.profile = profile
        self.port = port
        self.host = host
        self.orchestrators = orchestrators
        self.workdir = Path(workdir).resolve()
        self.extra_env = env or {}
        # the Redis every host of this deployment shares; none named: an embedded one here
        self.external_redis = redis_url or self._get("JARVIS_REDIS_URL")
        # every orchestrator of the deployment reads and writes the same session files (a
        # shared volume when they run on several hosts: docs/DEPLOY.md)
        self.sessions_dir = Path(
            sessions_dir or self._get("JARVIS_SESSIONS_DIR") or self.workdir / "sessions"
        ).resolve()
        self.stub_llm_delay = stub_llm_delay
        self.stub_stt_delay = stub_stt_delay
        self.stub_tts_delay = stub_tts_delay
        # a VLM worker for the vision pipeline: always with stub models, else when a VLM server is configured
        self.vlm = "workers" in self.roles and (
            vlm if vlm is not None else (profile == "stub" or bool(self._get("JARVIS_VLM_BASE_URL")))
        )
        # the stub profile's VLM worker runs the stub model, unless a VLM server is named
        # (JARVIS_VLM_BASE_URL) or vlm_stub=False: then it is the real OpenAI-compatible client
        self.vlm_stub = (
            vlm_stub if vlm_stub is not None else (profile == "stub" and not self._get("JARVIS_VLM_BASE_URL"))
        )
        # the GPU arbiter: on by default where there is a GPU to arbitrate
        # (a host without workers has no GPU to arbitrate; `resource` in roles asks for it)
        self.resource = "resource" in self.roles or (
            "workers" in self.roles and (resource if resource is not None else profile == "gpu")
        )
        # arbitrated: the resource service starts the model servers and the STT/TTS workers as
        # registry models (resident only while they fit; the registry the caller configures,
        # JARVIS_RESOURCE_REGISTRY*, describes them; JARVIS_LLM_BASE_URL names its LLM server);
        # the stack starts only the LLM/VLM workers, its clients. On by default for the GPU
        # profile with the resource service; any profile may ask for it (e.g. the CPU models
        # on a simulated GPU, JARVIS_RESOURCE_GPU_BACKEND=simulated)
        self.arbitrated = arbitrated if arbitrated is not None else self.resource and profile == "gpu"
        self.resource = self.resource or self.arbitrated
        self.redis: RedisServer | None = None
        self.redis_url = ""
        self.procs: list[Proc] = []
        self.model_procs: list[Proc] = []
        self.metrics: dict[str, str] = {}  # service -> its Prometheus endpoint
        self.given_up: list[str] = []  # optional services supervision gave up on
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def _get(self, name: str) -> str | None:
        return self.extra_env.get(name) or os.environ.get(name)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            JARVIS_REDIS_URL=self.redis_url,
            JARVIS_PROFILE=self.profile,
            JARVIS_HOST=self.host,
            JARVIS_PORT=str(self.port),
            JARVIS_SESSIONS_DIR=str(self.sessions_dir),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def _redis(self) -> None:
        if self.external_redis:
            self.redis_url = self.external_redis
            return
        self.redis = RedisServer(workdir=self.workdir / "redis").start()
        self.redis_url = self.redis.url

    def _service(self, name: str, module: str, *args: str, optional: bool = False) -> Proc:
        env = self._env()
        port = free_port()
        env["JARVIS_METRICS_PORT"] = str(port)  # Prometheus, loopback only
        self.metrics[name] = f"http://127.0.0.1:{port}/metrics"
        log = self.workdir / "logs" / f"{name}.log"
        p = Proc(name, [sys.executable, "-m", module, *args], env, log, optional=optional)
        self.procs.append(p)
        return p

    def start(self, timeout: float = 120.0) -> Stack:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._redis()
        stub = ["--stub"] if self.profile == "stub" else []
        workers = "workers" in self.roles
        if (
            self.profile == "cpu"
            and workers
            and not self.arbitrated
            and "JARVIS_LLM_BASE_URL" not in self.extra_env
            and "JARVIS_LLM_BASE_URL" not in os.environ
        ):
            from services.llm.llamacpp import server_command

            llm_port = free_port()
            server = Proc(
                "llama-server",
                server_command(llm_port),
                self._env(),
                self.workdir / "logs" / "llama-server.log",
            )
            self.model_procs.append(server)
            server.start()
            self.extra_env["JARVIS_LLM_BASE_URL"] = f"http://127.0.0.1:{llm_port}/v1"
            # SmolLM2-135M calls tools at random when offered them (and slowly): answer in words
            self.extra_env.setdefault(
                "JARVIS_LLM_TOOLS_ENABLED", os.environ.get("JARVIS_LLM_TOOLS_ENABLED", "false")
            )
            # a 135M model stays coherent (and in English) only at a low temperature
            self.extra_env.setdefault(
                "JARVIS_LLM_TEMPERATURE", os.environ.get("JARVIS_LLM_TEMPERATURE", "0.2")
            )
            # a spoken answer of two or three sentences: SmolLM2 otherwise talks to its whole
            # budget (256), which keeps both cores busy and the history long; a reply cut at
            # the budget drops its unfinished last sentence (shared.sentences `finish`)
            self.extra_env.setdefault("JARVIS_LLM_MAX_TOKENS", os.environ.get("JARVIS_LLM_MAX_TOKENS", "100"))
            _wait_http(f"http://127.0.0.1:{llm_port}/v1/models", timeout, server)
        if self.resource:
            # first, so every orchestrator finds it from its first session on
            self._start_resource(timeout)
        for i in range(self.orchestrators if "orchestrator" in self.roles else 0):
            self._service(
                f"orchestrator-{i + 1}" if self.orchestrators > 1 else "orchestrator", "services.orchestrator"
            )
        # Arbitrated (the GPU profile's default), the resource service starts the STT and TTS
        # workers and the LLM server as registry models, so they are only resident when they fit.
        if workers and not self.arbitrated:
            stt_args = [*stub, "--stub-delay", str(self.stub_stt_delay)] if stub else []
            self._service(
                "stt", "services.stt", "--concurrency", "2", *stt_args
            )  # a partial never holds up the final
        llm_args = [*stub, "--stub-delay", str(self.stub_llm_delay)] if stub else []
        if workers:
            self._service("llm", "services.llm", *llm_args)
        if workers and not self.arbitrated:
            tts_args = [*stub, "--stub-delay", str(self.stub_tts_delay)] if stub else []
            self._service("tts", "services.tts", *tts_args)
        if self.vlm:
            vlm = self._service(
                "vlm", "services.llm", "--role", "vlm", *(llm_args if self.vlm_stub else []), optional=True
            )
            if not self.vlm_stub and self.profile == "stub":
                vlm.env["JARVIS_PROFILE"] = "cpu"  # services.llm picks the stub model for the stub profile
        if "gateway" in self.roles:
            self._service("gateway", "services.gateway")
        for p in self.procs:
            if p.popen is None:
                p.start()
        if "gateway" in self.roles:
            _wait_port(self.host, self.port, timeout, self.procs)
        self._wait_workers(timeout)

    def _start_resource(self, timeout: float) -> None:
        """Start the resource service and wait for its heartbeat (its models are not started)."""

        from services.resource.config import ResourceSettings
        from services.resource.messages import alive_key

        proc = self._service("resource", "services.resource", optional=not self.arbitrated)
        service_id = (
            proc.env.get("JARVIS_RESOURCE_SERVICE_ID") or ResourceSettings.model_fields["service_id"].default
        )
        proc.start()
        popen = proc.popen
        assert popen is not None
        r = redis_url.sync_client(self.redis_url)
        deadline = time.monotonic() + timeout
        try:
            while not r.exists(alive_key(service_id)):
                if popen.poll() is not None:
                    raise RuntimeError(f"resource exited with {popen.returncode}; see {proc.log}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the resource service did not start in {timeout:.0f}s")
                time.sleep(0.1)
        finally:
            r.close()

    def _wait_workers(self, timeout: float) -> None:
        """Until every worker this host runs has joined its job stream's group (its model is
        loaded) and every orchestrator here has joined `ctl` (so sessions spread over all of
        them). Consumer names end in `-{pid}-{suffix}`, which tells this host's apart from those
        of other hosts on the same Redis."""

        groups = {k: (jobs_stream(k), f"{k}-workers") for k in ("stt", "llm", "tts", "vlm")}
        groups["orchestrator"] = ("ctl", "orchestrators")
        r = redis_url.sync_client(self.redis_url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for p in self.procs:
                    if not p.alive():
                        raise RuntimeError(f"{p.name} exited with {p.returncode}; see {p.log}")
                waiting = [
                    p
                    for p in self.procs
                    if (lane := groups.get(p.name.split("-")[0])) and not self._joined(r, *lane, p)
                ]
                if not waiting:
                    return
                time.sleep(0.2)
        finally:
            r.close()
        raise TimeoutError("workers did not become ready")

    @staticmethod
    def _joined(r, stream: str, group: str, p: Proc) -> bool:
        import redis

        try:
            names = [c["name"].decode() for c in r.xinfo_consumers(stream, group)]
        except redis.ResponseError:  # no such stream or group yet
            return False
        return any(len(n.rsplit("-", 2)) == 3 and n.rsplit("-", 2)[1] == str(p.pid) for n in names)

    def supervise(self, stop_after: float | None = None) -> None:
        """Restart what dies until stopped (`stop_after` seconds, or forever)."""
        started = time.monotonic()
        while (stop_after is None or time.monotonic() - started < stop_after) and not self._stopping.is_set():
            time.sleep(0.1)
            self.supervise_once()

    def watch(self) -> Stack:
        """Supervise from a background thread (tests and the bench; `jarvis up` supervises in
        its main thread) until `stop()`."""

        def run() -> None:
            while not self._stopping.wait(0.1):
                self.supervise_once()

        self._watcher = threading.Thread(target=run, name="supervisor", daemon=True)
        self._watcher.start()
        return self

    def supervise_once(self) -> None:
        """One look at every process: Redis and each service that died is started again, at
        once the first time, then after a backoff that grows while it keeps dying (capped at
        BACKOFF_MAX_S); an optional service dying GIVE_UP_AFTER times within a minute is given
        up and reported, and the others keep running."""
        if self._stopping.is_set():
            return
        now = time.monotonic()
        if self.redis is not None and not self.redis.alive():
            print("jarvis: redis exited; restarting it on its data", file=sys.stderr, flush=True)
            try:
                self.redis.restart()
            except RuntimeError as exc:
                print(f"jarvis: redis did not come back: {exc}", file=sys.stderr, flush=True)
        for p in self.procs + self.model_procs:
            if p.given_up or p.alive():
                continue
            if p.next_start is None:
                if now - p.started_at >= STABLE_S:
                    p.restarts.clear()  # it ran fine for a while: a death, not a crash loop
                p.restarts = [t for t in p.restarts if now - t < 60]
                if p.optional and len(p.restarts) >= GIVE_UP_AFTER:
                    p.given_up = True
                    self.given_up.append(p.name)
                    print(
                        f"jarvis: {p.name} keeps crashing ({len(p.restarts)} restarts in a minute); "
                        f"giving it up, the rest of the stack goes on (see {p.log})",
                        file=sys.stderr,
                        flush=True,
                    )
                    continue
                delay = 0.0 if not p.restarts else min(BACKOFF_MAX_S, 0.5 * 2 ** (len(p.restarts) - 1))
                p.next_start = now + delay
                print(
                    f"jarvis: {p.name} exited ({p.returncode}); restarting in {delay:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
            if now >= p.next_start:
                p.next_start = None
                p.restarts.append(now)
                p.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(5)
            self._watcher = None
        everything = self.procs + self.model_procs
        for p in everything:
            p.signal(signal.SIGTERM)
        deadline = time.monotonic() + 8
        for p in everything:
            if p.popen is None:
                continue
            try:
                p.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.signal(signal.SIGKILL)
                p.popen.wait()
        if self.redis:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def up(
    profile: str,
    port: int,
    orchestrators: int | None = None,
    *,
    host: str = "127.0.0.1",
    roles: Collection[str] | None = None,
    redis_url: str | None = None,
    workdir: str | Path = "var",
    sessions_dir: str | Path | None = None,
) -> int:
    stack = Stack(
        profile=profile,
        port=port,
        host=host,
        orchestrators=orchestrators or default_orchestrators(),
        roles=roles,
        redis_url=redis_url,
        workdir=workdir,
        sessions_dir=sessions_dir,
    )

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    print(
        f"jarvis: starting the {profile} profile ({', '.join(sorted(stack.roles))}; "
        f"logs in {stack.workdir / 'logs'}) ...",
        flush=True,
    )
    try:
        stack.start(timeout=600)
        gateway = (
            f"  Web client:  http://{stack.host}:{stack.port}/\n"
            f"  WebSocket:   {stack.url}\n"
            f"  Try:         .venv/bin/jarvis talk --url {stack.url} --wav question.wav --out reply.wav\n"
            if "gateway" in stack.roles
            else ""
        )
        print(
            f"\nJarvis is up ({profile} models; {', '.join(sorted(stack.roles))}; "
            f"Redis at {stack.redis_url}; sessions in {stack.sessions_dir}).\n"
            + gateway
            + "  Metrics:     "
            + ", ".join(f"{k} {v}" for k, v in stack.metrics.items())
            + "\nCtrl-C stops everything.",
            flush=True,
        )
        stack.supervise()
    except KeyboardInterrupt:
        print("\njarvis: stopping ...", flush=True)
        return 0
    except Exception as exc:  # noqa: BLE001
        print(f"jarvis: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    return 0
