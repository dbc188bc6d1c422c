"""One prediction costs a fixed, small number of queries: the token, the live model (and its challenger, for
shadow scoring), the audit chain lock and head, and one insert each for the audit event and the prediction."""

import json
from typing import Any

from django.db import connection


def test_one_prediction_takes_a_fixed_number_of_queries(champion: Any, api_client: Any, valid_features: dict,
                                                        django_assert_num_queries: Any) -> None:
    client = api_client("predictions:write")
    body = json.dumps({"use_case": "diabetes", "features": valid_features})
    client.post("/api/v1/predictions", data=body, content_type="application/json")  # warm: model loaded once

    # token, champion, challenger, chain lock (PostgreSQL only), chain head, 2 inserts, and 2 savepoint pairs (the
    # test runs inside a transaction; in production those are BEGIN/COMMIT).
    with django_assert_num_queries(11 if connection.vendor == "postgresql" else 10):
        response = client.post("/api/v1/predictions", data=body, content_type="application/json")

    assert response.status_code == 201
