"""Docker containers as model servers, through the docker SDK.

Every SDK call runs in a worker thread. Containers carry the labels
`jarvis.owner=<service id>` and `jarvis.model=<model id>`, so a restarted resource service
finds its own containers (adopt the running ones, remove the dead) and never touches
anybody else's. GPUs are requested with `device_requests` (the planner's device by
default). Health: an HTTP URL, else a command run inside the container, else the image's
own HEALTHCHECK, else "running".

Addresses: a health URL on the host `container` names the container's own port. When this
service itself runs in a container (compose), model containers join its network and are
reached at their address there (its own 127.0.0.1 is not theirs); on a host they are
reached at the port they publish on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from services.resource.config import DEVICE_LABEL, MODEL_LABEL, OWNER_LABEL, DockerSpec
from services.resource.runtimes.base import Handle, ProgressFn, StartFailed, render
from services.resource.runtimes.health import http_ok, wait_until
from services.resource.runtimes.sleep import HttpSleep

log = logging.getLogger(__name__)


def _docker():
    import docker

    return docker


def device_requests(gpus: Any, device: int) -> list[Any]:
    """The docker `device_requests` for a spec's `gpus` on the planner's `device`."""
    from docker.types import DeviceRequest

    if gpus is None:
        return []
    if gpus == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if gpus == "device":
        return [DeviceRequest(device_ids=[str(device)], capabilities=[["gpu"]])]
    if isinstance(gpus, int):
        return [DeviceRequest(count=gpus, capabilities=[["gpu"]])]
    return [DeviceRequest(device_ids=[str(g) for g in gpus], capabilities=[["gpu"]])]


def container_url(url: str, attrs: dict[str, Any], network: str | None) -> str | None:
    """`url` with the host `container` replaced by where this service reaches the container:
    its address on `network` (the network we share with it), else the port it publishes.
    Any other URL is returned as it is. None: the container is not reachable (yet)."""
    parts = urlsplit(url)
    if parts.hostname != "container":
        return url
    port = parts.port or 80
    settings = attrs.get("NetworkSettings") or {}
    if network:
        ip = ((settings.get("Networks") or {}).get(network) or {}).get("IPAddress")
        if not ip:
            return None
        netloc = f"{ip}:{port}"
    else:
        bindings = (settings.get("Ports") or {}).get(f"{port}/tcp") or []
        host_port = next((b.get("HostPort") for b in bindings if b.get("HostPort")), None)
        if host_port is None:
            return None
        netloc = f"127.0.0.1:{host_port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def own_network(client: Any) -> str | None:
    """The first network of the container this process runs in (None: not in a container)."""
    if not Path("/.dockerenv").exists():
        return None
    try:
        me = client.containers.get(socket.gethostname())
    except Exception:  # noqa: BLE001 -- not a container this engine knows
        return None
    nets = list((me.attrs.get("NetworkSettings") or {}).get("Networks") or {})
    return nets[0] if nets else None


def _volumes(vols: list[str]) -> list[str]:
    out = []
    for v in vols:
        host, _, rest = v.partition(":")
        out.append(f"{Path(host).expanduser()}:{rest}" if rest else v)
    return out


class DockerRuntime(HttpSleep):
    kind = "docker"

    def __init__(
        self,
        owner: str,
        client_factory: Callable[[], Any] | None = None,
        health_request_timeout_s: float = 3.0,
        network: str = "auto",
    ):
        self.owner = owner
        self._factory = client_factory or (lambda: _docker().from_env())
        self._client: Any = None
        self.health_request_timeout_s = health_request_timeout_s
        self._network_setting = network
        self.network: str | None = None  # resolved with the client

    async def client(self) -> Any:
        if self._client is None:
            self._client = await asyncio.to_thread(self._factory)
            if self._network_setting == "auto":
                self.network = await asyncio.to_thread(own_network, self._client)
            else:
                self.network = self._network_setting or None
        return self._client

    async def base_url(self, handle: Handle, spec: DockerSpec) -> str | None:
        if not spec.health_url:
            return None
        c = await self._container(handle)
        if c is None:
            return None
        await asyncio.to_thread(c.reload)
        url = container_url(spec.health_url, c.attrs, spec.network or self.network)
        if url is None:
            return None
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    async def _health_url(self, handle: Handle, spec: DockerSpec) -> str | None:
        assert spec.health_url is not None
        if urlsplit(spec.health_url).hostname != "container":
            return spec.health_url
        base = await self.base_url(handle, spec)
        return None if base is None else base + urlsplit(spec.health_url).path

    def container_name(self, model: str, spec: DockerSpec) -> str:
        return spec.name or f"jarvis-{model}"

    async def start(
        self, model: str, spec: DockerSpec, device: int, values: Mapping[str, str] | None = None
    ) -> Handle:
        docker = _docker()
        client = await self.client()
        name = self.container_name(model, spec)
        labels = {**spec.labels, OWNER_LABEL: self.owner, MODEL_LABEL: model, DEVICE_LABEL: str(device)}

        def run() -> Any:
            try:
                client.images.get(spec.image)
            except docker.errors.ImageNotFound:
                try:
                    client.images.pull(spec.image)
                except docker.errors.DockerException as exc:
                    raise StartFailed(
                        f"{model}: image {spec.image!r} is not present locally and could not be pulled: {exc}"
                    ) from exc
            try:
                old = client.containers.get(name)
            except docker.errors.NotFound:
                old = None
            if old is not None:
                if old.labels.get(OWNER_LABEL) != self.owner:
                    raise StartFailed(
                        f"{model}: container name {name!r} is taken by a container we do not own"
                    )
                old.remove(force=True)
            return client.containers.run(
                spec.image,
                command=render(spec.command, values),
                entrypoint=spec.entrypoint,
                detach=True,
                name=name,
                environment=dict(spec.env),
                ports=dict(spec.ports) or None,
                labels=labels,
                device_requests=device_requests(spec.gpus, device) or None,
                volumes=_volumes(spec.volumes) or None,
                network=spec.network or self.network,
                shm_size=spec.shm_size,
                ipc_mode=spec.ipc_mode,
            )

        try:
            c = await asyncio.to_thread(run)
        except docker.errors.DockerException as exc:
            raise StartFailed(f"{model}: docker: {exc}") from exc
        log.info("started %s: container %s (%s)", model, c.short_id, name)
        return Handle(model, self.kind, c.id, device, info={"container": name, "image": spec.image}, obj=c)

    async def _container(self, handle: Handle) -> Any | None:
        docker = _docker()
        client = await self.client()

        def get() -> Any | None:
            try:
                return client.containers.get(handle.ref)
            except docker.errors.NotFound:
                return None

        return await asyncio.to_thread(get)

    async def _state(self, handle: Handle) -> dict[str, Any] | None:
        c = await self._container(handle)
        return None if c is None else c.attrs.get("State", {})

    async def alive(self, handle: Handle, spec: DockerSpec | None = None) -> bool:
        try:
            st = await self._state(handle)
        except _docker().errors.DockerException:
            return False
        return st is not None and st.get("Status") in ("created", "running", "restarting")

    async def probe(self, handle: Handle, spec: DockerSpec) -> bool:
        """A full health probe."""
        try:
            st = await self._state(handle)
        except _docker().errors.DockerException:
            return False
        if st is None or st.get("Status") != "running":
            return False
        if spec.health_url:
            url = await self._health_url(handle, spec)
            return url is not None and await http_ok(url, self.health_request_timeout_s)
        if spec.health_cmd:
            c = await self._container(handle)
            if c is None:
                return False
            res = await asyncio.to_thread(c.exec_run, spec.health_cmd)
            return res.exit_code == 0
        health = st.get("Health")
        if health:
            return health.get("Status") == "healthy"
        return True

    async def wait_healthy(
        self,
        handle: Handle,
        spec: DockerSpec,
        timeout_s: float,
        progress: ProgressFn | None = None,
        expected_s: float = 10.0,
    ) -> None:
        await wait_until(
            lambda: self.probe(handle, spec),
            timeout_s=timeout_s,
            expected_s=expected_s,
            alive=lambda: self.alive(handle),
            progress=progress,
            what=f"{handle.model} (container {handle.ref[:12]})",
        )

    async def gpu_usage(self, handle: Handle, gpu: object) -> int | None:
        usage = await gpu.process_usage(handle.device)  # type: ignore[attr-defined]
        if usage is None:
            return None
        c = await self._container(handle)
        if c is None:
            return None

        def pids() -> set[int]:
            top = c.top(ps_args="-eo pid")
            titles = [t.upper() for t in top.get("Titles", [])]
            col = titles.index("PID") if "PID" in titles else 0
            return {int(row[col]) for row in top.get("Processes") or [] if str(row[col]).isdigit()}

        try:
            found = await asyncio.to_thread(pids)
        except _docker().errors.DockerException:
            return None
        return sum(usage.get(p, 0) for p in found)

    async def stop(self, handle: Handle, grace_s: float) -> None:
        docker = _docker()
        client = await self.client()

        def stop() -> None:
            try:
                c = client.containers.get(handle.ref)
            except docker.errors.NotFound:
                return
            try:
                c.stop(timeout=max(0, round(grace_s)))
            except docker.errors.APIError as exc:
                log.warning("stopping %s: %s", handle.model, exc)
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)

        await asyncio.to_thread(stop)

    async def adopt(self) -> list[Handle]:
        """Our running containers are returned; our dead ones are removed."""
        docker = _docker()
        client = await self.client()

        def scan() -> list[Handle]:
            out: list[Handle] = []
            for c in client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={self.owner}"}):
                model = c.labels.get(MODEL_LABEL, "")
                if c.status == "running" and model:
                    device = int(c.labels.get(DEVICE_LABEL, "0") or 0)
                    out.append(
                        Handle(
                            model,
                            self.kind,
                            c.id,
                            device,
                            started_at=time.time(),
                            adopted=True,
                            info={"container": c.name},
                            obj=c,
                        )
                    )
                else:
                    try:
                        c.remove(force=True)
                    except docker.errors.DockerException as exc:
                        log.warning("removing leftover container %s: %s", c.name, exc)
            return out

        return await asyncio.to_thread(scan)

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None
