"""The HTTP checks every framework's test app must pass.

Each app serves, under its base URL: `/info` (the TransInfo as JSON), `/ok` (returns None
or the helpers' success), `/fail` (raises FailureError("no money")), `/ongoing` (raises
OngoingError("later")), `/dup` (raises DuplicateError("again")), `/boom` (raises
RuntimeError) and `/barrier` (the BranchBarrier's fields as JSON).
"""

from __future__ import annotations

import requests

QUERY = {
    "gid": "g-1",
    "trans_type": "xa",
    "branch_id": "01",
    "op": "action",
    "dtm": "http://127.0.0.1:36789/api/dtmsvr",
    "phase2_url": "http://127.0.0.1:8081/api/xa",
}


def check_all(base: str) -> None:
    http = requests.Session()
    with http:
        resp = http.post(f"{base}/info", params=QUERY, json={}, timeout=10)
        assert resp.status_code == 200, resp.text
        assert resp.json() == QUERY

        resp = http.post(f"{base}/info", params={"gid": "g-2"}, json={}, timeout=10)
        assert resp.json() == {**dict.fromkeys(QUERY, ""), "gid": "g-2"}

        resp = http.post(f"{base}/barrier", params=QUERY, json={}, timeout=10)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"trans_type": "xa", "gid": "g-1", "branch_id": "01", "op": "action"}

        resp = http.post(f"{base}/ok", params=QUERY, json={}, timeout=10)
        assert (resp.status_code, resp.json()) == (200, {"dtm_result": "SUCCESS"})

        resp = http.post(f"{base}/fail", params=QUERY, json={}, timeout=10)
        assert resp.status_code == 409
        assert resp.json() == {"dtm_result": "FAILURE", "message": "no money"}

        resp = http.post(f"{base}/ongoing", params=QUERY, json={}, timeout=10)
        assert resp.status_code == 425
        assert resp.json() == {"dtm_result": "ONGOING", "message": "later"}

        resp = http.post(f"{base}/dup", params=QUERY, json={}, timeout=10)
        assert resp.status_code == 200
        assert resp.json() == {"dtm_result": "SUCCESS", "message": "again"}

        resp = http.post(f"{base}/boom", params=QUERY, json={}, timeout=10)
        assert resp.status_code == 500
