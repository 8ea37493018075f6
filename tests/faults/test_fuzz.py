"""Fuzzing a live deployment: schemathesis against ``/openapi.json``, hypothesis on query parsing (pure and
live), and a corpus of malformed media. No answer may be >= 500, no worker child may crash, and the
text playlists FFmpeg would follow (SDP, ffconcat, HLS) must be refused with 400 at once (fix 3).

Counts scale with ``HARK_FAULTS_SCALE``: about 300 cases at ``fast``, over 5,000 at ``full``.
"""

from __future__ import annotations

import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.audio import AudioFactory
from tests.conftest import Checkpoints
from tests.faults.harness import STT_PATH, Canary, Scale, WorkerSnapshot, write_row
from tests.faults.media_corpus import REFUSE_FAST_SECONDS, build_corpus, mutations
from tests.processes import HarkProcess, Launcher
from web.params import STT_PARAMS, ParamError, SttParams, parse_stt_params

pytestmark = [pytest.mark.faults]

FUZZ_ENV: dict[str, str] = {
    "HARK_CONCURRENCY_PER_CHECKPOINT": "2",
    "HARK_MAX_UPLOAD_BYTES": str(5_000_000),
    "HARK_MAX_AUDIO_SECONDS": "60",
    "HARK_SYNC_WAIT_SECONDS": "30",
    "HARK_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    "HARK_WEBHOOK_RETRIES": "0",
    "HARK_WEBHOOK_TIMEOUT_SECONDS": "2",
    "HARK_AUTH": "off",
}
CLIENT_TIMEOUT = 60.0


def _hypothesis_settings(count: int) -> settings:
    return settings(max_examples=count, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])  # fmt: skip


class FuzzTarget:
    """The fuzzed deployment: its API URL, worker, and the worker's state before the fuzzing."""

    def __init__(self, launcher: Launcher, api: HarkProcess, worker: HarkProcess) -> None:
        self.launcher = launcher
        self.api = api
        self.worker = worker
        self.before = WorkerSnapshot.take(launcher.redis, worker)

    @property
    def url(self) -> str:
        assert self.api.base_url
        return self.api.base_url

    def worker_problems(self) -> list[str]:
        problems = self.before.compare(WorkerSnapshot.take(self.launcher.redis, self.worker))
        if not self.api.alive():
            problems.append("the API process exited")
        return problems


@pytest.fixture(scope="module")
def fuzz_target(module_hark: Launcher, bundled_checkpoints: Checkpoints) -> FuzzTarget:
    name = module_hark.new_deployment("fz")
    worker = module_hark.start_worker(name, [bundled_checkpoints.tiny_en], **FUZZ_ENV)
    api = module_hark.start_api(name, **FUZZ_ENV)
    return FuzzTarget(module_hark, api, worker)


# --- query parsing -----------------------------------------------------------------------------------

_NASTY = st.sampled_from(["", " ", "true", "TRUE", "false", "yes", "1", "0", "-1", "nan", "inf", "1e309", "pulse",
                          "pulse-pro", "en", "EN", "multi", "multi-eu", "xx", "whisper-tiny-en", "a:0", "a:10",
                          "a:10.0000001", "a:-1", "a:nan", ":", ",", ",,,", "a:1:2", "\x00", "\ud7ff", "é", "日本",
                          "http://127.0.0.1:1/x", "http://[::1]/", "http://a@b/", "http://a\\@127.0.0.1/",
                          "file:///etc/passwd", "POST", "get", "PUT", "x" * 5000])  # fmt: skip
_VALUES = st.one_of(_NASTY, st.text(max_size=60), st.text(alphabet=",:.0123456789abc -", max_size=300))
_NAMES = st.one_of(st.sampled_from([spec.name for spec in STT_PARAMS]), st.text(max_size=12))
RANDOM_QUERIES = st.dictionaries(_NAMES, _VALUES, max_size=len(STT_PARAMS) + 3)
#: Mostly-valid queries (a served model and language, then anything), so routing and queueing are reached too.
ROUTED_QUERIES = st.builds(
    lambda base, extra: {**extra, **base},
    st.fixed_dictionaries({"model": st.sampled_from(["pulse", "pulse-pro", "whisper-tiny-en", "PULSE", " pulse "]),
                           "language": st.sampled_from(["en", "EN", "multi", " en", "de", "xx"])}),
    st.dictionaries(st.sampled_from([s.name for s in STT_PARAMS if s.name not in ("model", "language")]), _VALUES,
                    max_size=4),
)  # fmt: skip
QUERIES = st.one_of(RANDOM_QUERIES, ROUTED_QUERIES)


def _check_parsed(params: SttParams) -> None:
    assert params.model.strip() and params.language and params.language == params.language.lower()
    assert len(params.keywords) <= 100
    for keyword in params.keywords:
        assert keyword.word and 0 < keyword.boost <= 10
    if params.webhook is not None:
        assert params.webhook.method in ("POST", "GET") and params.webhook.url


def test_hypothesis_parse_stt_params(scale: Scale, results_dir: Path) -> None:
    """Pure: any query either parses into consistent parameters or raises ParamError, nothing else."""
    seen: Counter = Counter()
    crashes: list[str] = []

    @_hypothesis_settings(scale.hypothesis_cases)
    @given(query=QUERIES, model_required=st.booleans())
    def run(query: dict[str, str], model_required: bool) -> None:
        seen["cases"] += 1
        try:
            _check_parsed(parse_stt_params(query, model_required=model_required))
            seen["valid"] += 1
        except ParamError as error:
            seen["refused"] += 1
            assert error.message and error.details and error.details[0].get("field")
        except Exception as error:  # any other exception is a 500 in the API
            crashes.append(f"{type(error).__name__}: {error} for {query!r}"[:300])

    run()
    write_row(results_dir, "fuzz_query_parsing", title="hypothesis on web/params.py::parse_stt_params (pure)",
              load="-", faults_injected=0, faults_survived=0, inputs=seen["cases"], lost=0, crashes=crashes[:10],
              outcomes=dict(seen), command="pytest tests/faults/test_fuzz.py -k parse")  # fmt: skip
    assert not crashes, f"parse_stt_params raised something other than ParamError: {crashes[:5]}"
    assert seen["cases"] >= scale.hypothesis_cases * 0.9


@pytest.mark.e2e
def test_hypothesis_queries_against_the_api(fuzz_target: FuzzTarget, audio: AudioFactory, scale: Scale,
                                            results_dir: Path) -> None:  # fmt: skip
    """Live: the generated queries with a valid 1 s clip never get a 5xx answer."""
    clip = audio.silence(1.0).read_bytes()
    statuses: Counter = Counter()
    server_errors: list[str] = []

    @_hypothesis_settings(scale.live_query_cases)
    @given(query=QUERIES, legacy=st.booleans())
    def run(query: dict[str, str], legacy: bool) -> None:
        path = "/waves/v1/pulse/get_text" if legacy else STT_PATH
        query_string = urllib.parse.urlencode({k: v.replace("\x00", "") for k, v in query.items()})
        try:
            answer = requests.post(f"{fuzz_target.url}{path}?{query_string}", data=clip, timeout=CLIENT_TIMEOUT,
                                   headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        except requests.RequestException as error:
            statuses["no-answer"] += 1
            server_errors.append(f"no answer ({type(error).__name__}) for {query!r}"[:300])
            return
        statuses[answer.status_code] += 1
        if answer.status_code >= 500:
            server_errors.append(f"HTTP {answer.status_code} for {query!r}: {answer.text[:200]}"[:400])

    run()
    problems = fuzz_target.worker_problems()
    write_row(results_dir, "fuzz_query_live", title="hypothesis queries against the live API",
              load="-", faults_injected=0, faults_survived=0, inputs=sum(statuses.values()), lost=0,
              statuses={str(k): v for k, v in statuses.items()}, server_errors=server_errors[:10],
              worker_problems=problems, command="pytest tests/faults/test_fuzz.py -k queries")  # fmt: skip
    assert not server_errors, f"{len(server_errors)} answer(s) >= 500 to fuzzed queries: {server_errors[:5]}"
    assert not problems, f"workers crashed during query fuzzing: {problems}"


# --- schemathesis ------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_schemathesis_against_openapi(fuzz_target: FuzzTarget, scale: Scale, results_dir: Path) -> None:
    """Positive and negative cases generated from the live ``/openapi.json``; no answer >= 500."""
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{fuzz_target.url}/openapi.json")
    statuses: Counter = Counter()
    operations: Counter = Counter()
    server_errors: list[str] = []
    session = requests.Session()

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategy = schema.as_strategy(generation_mode=mode)

        @_hypothesis_settings(scale.schemathesis_cases // 2)
        @given(case=strategy)
        def run(case: schemathesis.Case) -> None:
            operations[f"{case.method} {case.path}"] += 1
            try:
                response = case.call(base_url=fuzz_target.url, session=session, timeout=CLIENT_TIMEOUT)
            except requests.RequestException as error:
                statuses["no-answer"] += 1
                server_errors.append(f"no answer ({type(error).__name__}) for {case.method} {case.path}")
                return
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                server_errors.append(f"HTTP {response.status_code} for {case.method} {case.formatted_path} "
                                     f"query={case.query!r}: {response.text[:200]}"[:500])  # fmt: skip

        run()
    session.close()
    problems = fuzz_target.worker_problems()
    write_row(results_dir, "fuzz_schemathesis", title="schemathesis (positive + negative) against /openapi.json",
              load="-", faults_injected=0, faults_survived=0, inputs=sum(statuses.values()), lost=0,
              statuses={str(k): v for k, v in statuses.items()}, operations=dict(operations),
              server_errors=server_errors[:10], worker_problems=problems,
              command="pytest tests/faults/test_fuzz.py -k schemathesis")  # fmt: skip
    assert not server_errors, f"{len(server_errors)} answer(s) >= 500 to schemathesis cases: {server_errors[:5]}"
    assert not problems, f"workers crashed during schema fuzzing: {problems}"
    assert sum(statuses.values()) >= scale.schemathesis_cases * 0.5, statuses


# --- malformed media ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    listener = Canary()
    yield listener
    listener.close()


@pytest.mark.e2e
@pytest.mark.timeout(3600)
def test_malformed_media_corpus(fuzz_target: FuzzTarget, audio: AudioFactory, scale: Scale, canary: Canary,
                                tmp_path: Path, results_dir: Path) -> None:  # fmt: skip
    """Every container in and out of the whitelist, lying headers, truncations and seeded mutations."""
    base, unavailable = build_corpus(audio, tmp_path / "corpus", canary.port, every_container=scale.full)
    cases = base + list(mutations(base, scale.media_mutations))
    statuses: Counter = Counter()
    server_errors: list[str] = []
    not_refused: list[str] = []
    not_transcribed: list[str] = []
    outcomes: dict[str, int] = {}
    for case in cases:
        started = time.monotonic()
        limit = REFUSE_FAST_SECONDS + 8 if case.expect == "refuse-fast" else CLIENT_TIMEOUT
        try:
            answer = requests.post(f"{fuzz_target.url}{STT_PATH}", params={"model": "pulse", "language": "en"},
                                   data=case.data, headers={"Content-Type": "application/octet-stream"},
                                   timeout=limit)  # fmt: skip
            status = answer.status_code
        except requests.RequestException as error:
            status = 0
            answer = None
            if case.expect != "refuse-fast":
                server_errors.append(f"{case.name}: no answer ({type(error).__name__})")
        took = time.monotonic() - started
        statuses[status] += 1
        if len(outcomes) < 400 and not case.name.startswith("mut"):
            outcomes[case.name] = status
        if status >= 500:
            server_errors.append(f"{case.name}: HTTP {status} {answer.text[:160] if answer is not None else ''}")
        if case.expect == "refuse-fast" and (status != 400 or took > REFUSE_FAST_SECONDS):
            not_refused.append(f"{case.name}: HTTP {status or 'no answer'} after {took:.2f} s")
        if case.expect == "audio" and status != 200:
            not_transcribed.append(f"{case.name}: HTTP {status}")
    time.sleep(2)  # let a child that is about to die do so before the snapshot
    problems = fuzz_target.worker_problems()
    write_row(results_dir, "fuzz_media", title="malformed media corpus (containers, lying headers, mutations)",
              load="-", faults_injected=0, faults_survived=0, inputs=len(cases), lost=0, base_cases=len(base),
              mutations=scale.media_mutations, unavailable_formats=unavailable,
              statuses={str(k): v for k, v in statuses.items()}, outcomes=outcomes, server_errors=server_errors[:10],
              not_refused=not_refused, not_transcribed=not_transcribed, canary_hits=len(canary.hits),
              worker_problems=problems, command="pytest tests/faults/test_fuzz.py -k media")  # fmt: skip
    failures = []
    if server_errors:
        failures.append(f"{len(server_errors)} answer(s) >= 500 or no answer: {server_errors[:8]}")
    if problems:
        failures.append(f"workers crashed on malformed media (decode memory must be bounded, fix 2): {problems}")
    if not_refused:
        failures.append(f"playlists/descriptors not refused with 400 within {REFUSE_FAST_SECONDS} s "
                        f"(fix 3: container whitelist, code unsupported_container): {not_refused}")  # fmt: skip
    if canary.hits:
        failures.append(f"FFmpeg opened a loopback socket named in an uploaded playlist {len(canary.hits)} time(s)")
    if not_transcribed:
        failures.append(f"valid audio in common containers was not transcribed: {not_transcribed}")
    assert not failures, "malformed media:\n" + "\n".join(failures)
