from django.test import Client


def test_openapi_schema_describes_the_prediction_endpoints(db: None, client: Client) -> None:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/v1/predictions", "/api/v1/predictions/{prediction_id}"} <= set(schema["paths"])
    assert "post" in schema["paths"]["/api/v1/predictions"]


def test_api_docs_page_uses_no_external_cdn(db: None, client: Client) -> None:
    page = client.get("/api/docs/").content.decode()

    assert "swagger-ui" in page
    assert "cdn.jsdelivr" not in page and "unpkg.com" not in page
