"""DockerSandbox: one locked-down container per script run (docker SDK 7.x).

The image (sandbox.image) is an empty skeleton; the host's /usr, Python prefix and venv are
bind-mounted read-only at their own paths, so a script sees the same interpreter and the
same torch/transformers as the host. Each input is mounted read-only at its host path and
the output directory read-write at its own path, so command lines need no rewriting.

Locked down by default: no network, read-only root, a size-capped tmpfs /tmp, a non-root
user, no capabilities, no-new-privileges, pids/memory/CPU/file-size limits, a wall-clock
timeout enforced inside the container (so it holds when the runner dies), and only an
allowlisted environment. Network, when a step asks for it, is a user-defined network of its
own, never the host's.

Each container carries its run's id as a label; the agent makes its sandbox with the run id
on start and on resume, and `remove_stale` then removes what a killed runner left behind.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

import docker
import docker.errors
import requests
from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from sandbox.base import Limits, Result, SandboxBase, SandboxError, tail, timed_out
from sandbox.image import IMAGE_TAG, build_image
from sandbox.local import script_environment

log = logging.getLogger(__name__)

ENGINE_FIX = (
    "start one with `bash scripts/start-dockerd.sh` (or point DOCKER_HOST at a running engine)"
)
LABELS = {"autoannotator.sandbox": "1"}
RUN_LABEL = "autoannotator.run"
# The user-defined network a networked step gets: never the host's namespace.
NETWORK = "autoannotator-sandbox"
# The host's coreutils timeout (under the /usr mount); docker-init, PID 1, reaps after it.
TIMEOUT = "/usr/bin/timeout"
# The runner's own wait outlasts the in-container deadline by this much.
BACKSTOP_S = 10.0
# The engine keeps a container's output in its log file; rotation caps that file (a script
# printing gigabytes must not fill the engine's disk) while keeping far more than the tail.
LOG_CONFIG = LogConfig(type="json-file", config={"max-size": "4m", "max-file": "2"})
SAMPLE_EVERY_S = 0.1


def connect(timeout: float = 120.0, ping_timeout: float = 3.0) -> docker.DockerClient:
    """A client for the engine in the environment (DOCKER_HOST or the default socket)."""
    try:
        client = docker.from_env(timeout=ping_timeout)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise SandboxError(f"no Docker engine answers ({exc}); {ENGINE_FIX}") from exc
    # A short timeout for the ping, a long one for real work (imports, big log reads).
    client.api.timeout = timeout
    return client


def host_python_paths() -> list[str]:
    """/usr, the venv and the base interpreter: what a script needs to run the host's Python.

    A venv's paths are baked into it (pyvenv.cfg, its python symlink), so each path is
    mounted where Python reports it and, if that is a symlink, at its real path too.
    Only these are mounted, never the project or home directory, which may hold secrets.
    """
    paths: list[str] = []
    for path in ("/usr", sys.prefix, sys.base_prefix):
        for candidate in (path, os.path.realpath(path)):
            if not any(candidate == p or candidate.startswith(p + "/") for p in paths):
                paths.append(candidate)
    return paths


class DockerSandbox(SandboxBase):
    name = "docker"

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        device: str = "auto",
        image: str = IMAGE_TAG,
        run_id: str | None = None,
    ):
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
        self.client = client or connect()
        self.image = image
        build_image(self.client, image)  # a cheap lookup once the image exists
        self._engine_cpus = float(self.client.info()["NCPU"])
        self._host_paths = host_python_paths()
        self._device = "cpu" if device == "cpu" else None
        self._asked_device = device
        self._network: str | None = None
        self._labels = {**LABELS, RUN_LABEL: run_id} if run_id else LABELS
        self.run_id = run_id
        if run_id:
            self.remove_stale()

    def __reduce__(self):
        """Sent to another machine (a Ray worker: agent.pipeline.ray_engine), the same sandbox
        on that machine's engine: connected there, the image built there if missing, and
        without the run id, so it never removes the containers of the run it serves."""
        return (type(self), (None, self._asked_device, self.image, None))

    def remove_stale(self) -> int:
        """Remove the containers of this run that are still there (a runner killed mid-step
        leaves its container behind); returns how many."""
        stale = self.client.containers.list(
            all=True, filters={"label": f"{RUN_LABEL}={self.run_id}"}
        )
        for container in stale:
            container.remove(force=True)
        if stale:
            log.info("removed %d leftover sandbox container(s) of run %s", len(stale), self.run_id)
        return len(stale)

    @property
    def device(self) -> str:
        """'cuda' when containers get the GPUs, else 'cpu'; probed once, on first use."""
        if self._device is None:
            error = self._gpu_start_error()
            if error is None:
                self._device = "cuda"
            else:
                log.warning("Docker engine cannot give containers a GPU, using CPU: %s", error)
                self._device = "cpu"
        return self._device

    def _gpu_start_error(self) -> str | None:
        """Start a no-op container that asks for all GPUs; the engine's error text, if any.

        An engine without a GPU runtime accepts create() and fails at start(), with e.g.
        'could not select device driver "" with capabilities: [[gpu]]'.
        """
        try:
            container = self.client.containers.create(
                self.image,
                ["/usr/bin/true"],
                **self._container_options(Limits(timeout_s=60), gpu=True),
                mounts=[Mount(p, p, type="bind", read_only=True) for p in self._host_paths],
                environment={},
            )
        except docker.errors.APIError as exc:
            return str(exc.explanation or exc)
        try:
            container.start()
            code = container.wait(timeout=60)["StatusCode"]
        except docker.errors.APIError as exc:
            return str(exc.explanation or exc)
        finally:
            container.remove(force=True)
        return None if code == 0 else f"a GPU container exited with code {code}"

    def _execute(
        self,
        script: Path,
        args: list[str],
        inputs: list[Path],
        output_dir: Path,
        limits: Limits,
        uid: int,
        gid: int,
    ) -> Result:
        try:
            container = self.client.containers.create(
                self.image,
                [TIMEOUT, "-s", "KILL", str(limits.timeout_s), sys.executable, str(script), *args],
                **self._container_options(limits, gpu=self.device == "cuda"),
                mounts=self._mounts([script, *inputs], output_dir),
                environment=script_environment(limits, home=output_dir),
                user=f"{uid}:{gid}",
                working_dir=str(output_dir),
            )
        except docker.errors.APIError as exc:
            raise SandboxError(f"Docker refused the sandbox container: {exc.explanation}") from exc
        sampler = _CgroupSampler(container.id)
        try:
            start = time.monotonic()
            try:
                container.start()
            except docker.errors.APIError as exc:
                raise SandboxError(f"sandbox container did not start: {exc.explanation}") from exc
            sampler.start()
            try:
                status = container.wait(timeout=limits.timeout_s + BACKSTOP_S)
            # The SDK surfaces a wait timeout as either of these, depending on where it fires.
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                _kill(container)
                status = container.wait(timeout=60)
            duration = time.monotonic() - start
            sampler.stop()
            stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
            stderr = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
            container.reload()
            oom_killed = bool(container.attrs["State"].get("OOMKilled"))
        finally:
            sampler.stop()
            container.remove(force=True)
        exit_code = int(status["StatusCode"])
        return Result(
            exit_code=exit_code,
            stdout_tail=tail(stdout),
            stderr_tail=tail(stderr),
            duration_s=duration,
            timed_out=timed_out(exit_code, duration, limits),
            oom_killed=oom_killed,
            sandbox=self.name,
            peak_memory_mb=sampler.peak_memory_mb,
            cpu_s=sampler.cpu_s,
        )

    def _container_options(self, limits: Limits, gpu: bool) -> dict:
        memory = f"{limits.memory_mb}m"
        options = dict(
            mem_limit=memory,
            memswap_limit=memory,  # equal to mem_limit: no swap, so a hog is OOM-killed
            nano_cpus=int(min(limits.cpus, self._engine_cpus) * 1e9),
            pids_limit=limits.pids,  # counts threads too
            init=True,  # docker-init as PID 1 forwards signals and reaps orphans
            read_only=True,
            # exec: torch/triton may load compiled .so files from /tmp. Counts toward memory.
            tmpfs={"/tmp": f"rw,exec,nosuid,nodev,size={limits.tmp_mb}m,mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            log_config=LOG_CONFIG,
            labels=self._labels,
            # A file past output_mb fails with EFBIG (Python ignores SIGXFSZ).
            ulimits=[
                Ulimit(name="fsize", soft=limits.output_mb << 20, hard=limits.output_mb << 20)
            ],
            **self._network_options(limits),
        )
        if gpu:
            options["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        return options

    def _network_options(self, limits: Limits) -> dict:
        if not limits.network:
            # network_disabled leaves loopback only; it starts faster than network_mode="none".
            return {"network_disabled": True}
        if self._network is None:
            # A network of our own, not the default bridge (which an engine started with
            # --bridge=none, as scripts/start-dockerd.sh does, lacks) and never the host's.
            try:
                if not self.client.networks.list(names=[NETWORK]):
                    self.client.networks.create(NETWORK, driver="bridge", labels=LABELS)
            except docker.errors.APIError as exc:
                raise SandboxError(
                    f"Docker cannot give the sandbox a network of its own ({exc.explanation}); "
                    "let the host download the model instead"
                ) from exc
            self._network = NETWORK
        return {"network": self._network}

    def _mounts(self, readable: list[Path], output_dir: Path) -> list[Mount]:
        read_only = dict.fromkeys(self._host_paths, True)
        for path in readable:
            read_only.setdefault(str(path), True)
        read_only[str(output_dir)] = False
        # A Mount of type bind fails on a missing source instead of creating it as root.
        return [Mount(p, p, type="bind", read_only=ro) for p, ro in read_only.items()]


def _kill(container) -> None:
    try:
        container.kill()
    except docker.errors.APIError as exc:  # it exited on its own in the meantime
        log.debug("kill after timeout: %s", exc)


class _CgroupSampler:
    """Peak memory (working set, as `docker stats` shows it) and CPU time of a container.

    Read from the engine's cgroup files every SAMPLE_EVERY_S while the container runs;
    the files vanish when it exits, so the last sample stands. Only works when the engine
    runs on this host; otherwise the fields stay None.
    """

    def __init__(self, container_id: str):
        self.peak_memory_mb: float | None = None
        self.cpu_s: float | None = None
        self._id = container_id
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        files = _cgroup_files(self._id)
        if files is None:
            return
        while True:
            try:
                self._sample(*files)
            except (OSError, ValueError):
                return  # the container has exited and its cgroup is gone
            if self._done.wait(SAMPLE_EVERY_S):
                return

    def _sample(self, usage: Path, memory_stat: Path, cpu: Path, v2: bool) -> None:
        stats = dict(line.split() for line in memory_stat.read_text().splitlines())
        inactive = int(stats.get("inactive_file" if v2 else "total_inactive_file", 0))
        working_set = (int(usage.read_text()) - inactive) / 2**20
        self.peak_memory_mb = max(self.peak_memory_mb or 0.0, working_set)
        if v2:
            cpu_stats = dict(line.split() for line in cpu.read_text().splitlines())
            self.cpu_s = int(cpu_stats["usage_usec"]) / 1e6
        else:
            self.cpu_s = int(cpu.read_text()) / 1e9


def _cgroup_files(container_id: str) -> tuple[Path, Path, Path, bool] | None:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():  # cgroup v2, cgroupfs or systemd driver
        for group in (
            root / "docker" / container_id,
            root / f"system.slice/docker-{container_id}.scope",
        ):
            if group.is_dir():
                return group / "memory.current", group / "memory.stat", group / "cpu.stat", True
        return None
    for parent in ("docker/" + container_id, f"system.slice/docker-{container_id}.scope"):
        memory, cpu = root / "memory" / parent, root / "cpuacct" / parent
        if memory.is_dir() and cpu.is_dir():
            return (
                memory / "memory.usage_in_bytes",
                memory / "memory.stat",
                cpu / "cpuacct.usage",
                False,
            )
    return None
