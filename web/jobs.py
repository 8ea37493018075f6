"""``GET /waves/v1/stt/jobs/<request_id>``: the state or result of a job, for clients that cannot
receive webhooks or whose submit-and-wait request answered 202.

Any API process of the deployment can answer: the state lives in Redis until
HARK_RESULT_TTL_SECONDS after the job ended.
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, g, jsonify

from web.errors import ApiError
from web.services import services

bp = Blueprint("jobs", __name__)

JOBS_PATH = "/waves/v1/stt/jobs/<request_id>"
REQUEST_ID_RE = re.compile(r"^req_[0-9a-f]{24}$")


@bp.get(JOBS_PATH)
def job_status(request_id: str) -> Response:
    """The job's state: processing (with `state` queued|processing), the full result, or the failure.

    A failed job is reported with 200 (the query itself succeeded) and ``"status": "failed"``;
    an unknown or expired id is a 404.
    """
    if not REQUEST_ID_RE.match(request_id):
        raise ApiError(404, f"no job {request_id[:64]!r}: request ids look like req_ and 24 hex characters",
                       [{"field": "request_id"}])  # fmt: skip
    g.request_id = request_id
    state = services().jobs.get(request_id)
    if state is None:
        raise ApiError(404, f"no job {request_id!r} in this deployment (unknown, or its result expired)",
                       [{"field": "request_id", "value": request_id}])  # fmt: skip
    status = state.get("status")
    if status == "success":
        return jsonify(state["result"])
    if status == "failed":
        error = state.get("error") or {}
        return jsonify({
            "status": "failed",
            "request_id": request_id,
            "error": str(error.get("message") or "transcription failed"),
            "details": [{"code": error.get("code", "failed"), "http_status": error.get("http_status", 500)},
                        *error.get("details", [])],
        })  # fmt: skip
    return jsonify({"status": "processing", "request_id": request_id, "state": status or "queued"})
