"""One prediction costs a fixed, small number of queries: the token, the live model (and its challenger, for
shadow scoring), and the audit append with the prediction: on PostgreSQL one call that takes the chain lock, reads
the head and inserts the events and the predictions, and is its own transaction (in production: one statement in
autocommit, no BEGIN or COMMIT round trips); on SQLite a savepoint, the head read and one insert per table. A batch
costs the same: the chain lock is taken once and each table gets one insert, whatever the batch size."""

import json
from typing import Any

from django.db import connection


def test_one_prediction_takes_a_fixed_number_of_queries(champion: Any, api_client: Any, valid_features: dict,
                                                        django_assert_num_queries: Any) -> None:
    client = api_client("predictions:write")
    body = json.dumps({"use_case": "diabetes", "features": valid_features})
    client.post("/api/v1/predictions", data=body, content_type="application/json")  # warm: model loaded once

    # token, champion, challenger (looked up before the transaction: without one, the prediction needs no
    # transaction but the append's own), and the audit append with the prediction (PostgreSQL: one call, which in
    # production is its own autocommit transaction, committed before the 201; here it joins the test's transaction.
    # SQLite: a savepoint pair around the chain head and an insert per table). Was 6 on PostgreSQL (with a savepoint
    # pair, in production BEGIN and COMMIT) before the append became one statement in autocommit. In production the
    # live model is cached for CLINPREDICT_CHAMPION_CACHE_SECONDS.
    with django_assert_num_queries(4 if connection.vendor == "postgresql" else 8):
        response = client.post("/api/v1/predictions", data=body, content_type="application/json")

    assert response.status_code == 201


def _batch_queries(client: Any, features: dict, size: int, captured: Any) -> int:
    body = json.dumps([{"use_case": "diabetes", "features": features}] * size)
    with captured(connection) as context:
        response = client.post("/api/v1/predictions", data=body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert len(response.json()) == size
    return len(context.captured_queries)


def test_a_batch_takes_the_same_number_of_queries_whatever_its_size(champion: Any, api_client: Any,
                                                                    valid_features: dict) -> None:
    from django.test.utils import CaptureQueriesContext

    from apps.audit.selectors import audit_chain_verify

    client = api_client("predictions:write")
    _batch_queries(client, valid_features, 1, CaptureQueriesContext)  # warm: model loaded once

    one, ten, five_hundred = (_batch_queries(client, valid_features, n, CaptureQueriesContext) for n in (1, 10, 500))

    if connection.vendor == "postgresql":
        assert one == ten == five_hundred == 4
    else:  # SQLite caps the variables of one statement: Django splits a large bulk INSERT into several
        assert one == ten == 8
    assert audit_chain_verify().ok  # one insert per table, and still a contiguous, correctly hashed chain
