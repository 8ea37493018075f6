"""The sides ``bench/throughput.py`` compares: direct faster-whisper calls, Hark deployments, a peer server.

Every side answers ``transcribe(clip) -> text`` (raising on any failure), says how many of a level's
clients it serves at once (``clients_for``), reports the RSS of its serving processes and stops
everything it started in ``stop``. Direct sides run in this process; the others are real servers
on loopback, started here and always stopped.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import threading
from pathlib import Path

import requests

from bench.deployment import LocalPlatform, free_port, start_logged, wait_until_ready
from bench.throughput_load import Clip


def tree_rss_mb(pid: int) -> float | None:
    """Resident memory of a process and all its descendants, MB (None when it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for process in tree:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def tree_cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds of processes and all their live descendants (None when one is gone)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        for process in tree:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


class DirectSide:
    """In-process ``WhisperModel.transcribe`` with Hark's options (language, beam, VAD, no word times).

    Args:
        name: Label in the table.
        model_dir: The CTranslate2 model directory Hark serves.
        workers: CTranslate2 ``num_workers`` (calls that may run at once).
        threads: ``cpu_threads`` per call.
        callers: Threads calling it at once, whatever the level (1: a plain sequential loop).
        beam: ``beam_size``.
    """

    def __init__(self, name: str, model_dir: Path, workers: int, threads: int, callers: int, beam: int) -> None:
        from faster_whisper import WhisperModel

        self.name = name
        self.callers = callers
        self.beam = beam
        self.model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads,
                                  num_workers=workers, local_files_only=True)  # fmt: skip
        self.description = (f"in-process faster-whisper, int8, num_workers={workers}, cpu_threads={threads}, "
                            f"{callers} caller(s)")  # fmt: skip

    def clients_for(self, level: int) -> int:
        return self.callers

    def transcribe(self, clip: Clip) -> str:
        from faster_whisper import decode_audio

        samples = decode_audio(io.BytesIO(clip.audio))
        segments, _info = self.model.transcribe(samples, language="en", beam_size=self.beam, vad_filter=True,
                                                word_timestamps=False)  # fmt: skip
        return "".join(segment.text for segment in segments).strip()

    def rss_mb(self) -> float | None:
        return None  # shares the benchmark's own process

    def cpu_seconds(self) -> float | None:
        return tree_cpu_seconds([os.getpid()])  # this process: the model's threads and the caller loop

    def stop(self) -> None:
        del self.model


class HarkSide:
    """A real deployment (Redis, ``hark worker``, API) with its own settings; ``POST /waves/v1/stt/``."""

    def __init__(self, name: str, model_dir: Path, workdir: Path, env: dict[str, str], timeout: float) -> None:
        self.name = name
        self.env = env
        self.timeout = timeout
        folder = workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        self.platform = LocalPlatform(model_dir, folder, f"tp-{name}", **env)
        self._local = threading.local()
        settings = ", ".join(f"{key}={value}" for key, value in sorted(env.items())) or "defaults"
        self.description = f"Hark REST submit-and-wait, {hark_plan(env)}; {settings}"

    def clients_for(self, level: int) -> int:
        return level

    def transcribe(self, clip: Clip) -> str:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        answer = session.post(f"{self.platform.url}/waves/v1/stt/", params={"model": "pulse", "language": "en"},
                              data=clip.audio, headers={"Content-Type": "application/octet-stream"},
                              timeout=self.timeout)  # fmt: skip
        if answer.status_code != 200:
            raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:100]}")
        return str(answer.json()["transcription"]).strip()

    def rss_mb(self) -> float | None:
        return tree_rss_mb(self.platform.worker_pid)

    def cpu_seconds(self) -> float | None:
        return tree_cpu_seconds([process.pid for process in self.platform.processes])  # Redis, worker, API

    def stop(self) -> None:
        self.platform.stop()


def hark_plan(env: dict[str, str]) -> str:
    """The worker's inference plan (lanes × threads, compute type) under `env`, as the worker decides it."""
    from hark.settings import load_settings
    from workers.device import cpu_count, cuda_device_count, plan_device

    settings = load_settings(**{key: value for key, value in env.items() if key.startswith("HARK_")})
    plan = plan_device(requested_device=settings.device, requested_compute_type=settings.compute_type,
                       manifest_default="int8", engine_workers=settings.engine_workers,
                       cpu_threads=settings.cpu_threads, cuda_devices=cuda_device_count(),
                       cores=cpu_count())  # fmt: skip
    return f"{plan.device} {plan.compute_type}, {plan.lanes} lane(s) × {plan.cpu_threads} thread(s)"


PEER_CONFIG = """models:
  - name: whisper-1
    path: {model_dir}
    model_options: {{device: cpu, compute_type: int8, cpu_threads: {threads}, num_workers: 1, local_files_only: true}}
    transcribe_options: {{beam_size: {beam}, vad_filter: true, language: en}}
"""


class PeerSide:
    """faster-whisper-server (OpenAI-compatible ``/v1/audio/transcriptions``) from its own venv.

    The server runs each request inside its event loop, so one process decodes one request at a
    time; ``processes`` uvicorn workers (each with its own model of ``threads`` threads) run in
    parallel. `command` overrides the launch (``{port}``, ``{config}``, ``{model_dir}``, ``{processes}``
    are filled in).
    """

    def __init__(self, name: str, model_dir: Path, workdir: Path, processes: int, threads: int, beam: int,
                 timeout: float, venv: Path, command: str | None = None) -> None:  # fmt: skip
        self.name = name
        self.timeout = timeout
        self.port = free_port()
        config = workdir / f"{name}.yaml"
        config.write_text(PEER_CONFIG.format(model_dir=model_dir, threads=threads, beam=beam))
        template = command or ("{venv}/bin/faster-whisper-server --config {config} --host 127.0.0.1 --port {port} "
                               "--workers {processes} --log-level warning")  # fmt: skip
        argv = template.format(venv=venv, config=config, port=self.port, model_dir=model_dir,
                               processes=processes).split()  # fmt: skip
        self.log = workdir / f"{name}.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
            raise FileNotFoundError(f"{argv[0]} not found: install the peer with `bash bench/install_peer.sh {venv}`")
        self.process = start_logged(argv, self.log, env=env, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = _openai_client(self.url, timeout)
        self._local = threading.local()
        self.description = (f"faster-whisper-server 0.0.3 (uvicorn), {processes} process(es) × "
                            f"cpu_threads={threads}, int8, beam {beam}, VAD on")  # fmt: skip
        try:
            wait_until_ready(f"{self.url}/health", "the peer server", str(self.log), [self.process])
        except Exception:
            self.stop()
            raise

    def clients_for(self, level: int) -> int:
        return level

    def transcribe(self, clip: Clip) -> str:
        if self.client is not None:
            upload = (f"{clip.name}.wav", clip.audio, "audio/wav")
            result = self.client.audio.transcriptions.create(model="whisper-1", language="en", file=upload)
            return str(result.text).strip()
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        answer = session.post(f"{self.url}/v1/audio/transcriptions", data={"model": "whisper-1", "language": "en"},
                              files={"file": (f"{clip.name}.wav", clip.audio, "audio/wav")},
                              timeout=self.timeout)  # fmt: skip
        if answer.status_code != 200:
            raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:100]}")
        return str(answer.json()["text"]).strip()

    def rss_mb(self) -> float | None:
        return tree_rss_mb(self.process.pid)

    def cpu_seconds(self) -> float | None:
        return tree_cpu_seconds([self.process.pid])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


def _openai_client(url: str, timeout: float) -> object | None:
    """The ``openai`` client pointed at the peer (None when the package is not installed)."""
    try:
        from openai import OpenAI
    except ImportError:
        return None
    return OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=timeout, max_retries=0)
