#!/usr/bin/env python
"""Smoke test of a running ClinPredict (e.g. after `make run`), standard library only.

    python scripts/smoke_demo.py --base http://127.0.0.1:8000 --password PW --client-id ID --client-secret SECRET

1. /readyz is 200. 2. `clinician` signs in, submits the diabetes form and reads the risk from the result page.
3. Client credentials -> /o/token/ -> POST /api/v1/predictions -> 201 with probability, model_version, audit_seq.
Prints what it saw; exits non-zero on the first failure.
"""

import argparse
import http.cookiejar
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from typing import Any, NoReturn

FORM = {
    "patient_id": "smoke-1", "pregnancies": "2", "glucose": "8.2", "glucose__unit": "mmol/L", "blood_pressure": "72",
    "blood_pressure__unit": "mm[Hg]", "skin_thickness": "", "skin_thickness__unit": "mm", "insulin": "",
    "insulin__unit": "u[IU]/mL", "bmi": "33.6", "pedigree": "0.627", "age": "50",
}
API_FEATURES = {
    "pregnancies": 2, "glucose": {"value": 7.9, "unit": "mmol/L"}, "blood_pressure": 72, "skin_thickness": None,
    "insulin": None, "bmi": 33.6, "pedigree": 0.627, "age": 50,
}


def fail(message: str) -> NoReturn:
    print(f"FAIL: {message}")
    sys.exit(1)


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    if not match:
        fail("no CSRF token on the page")
    return match.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--password", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    args = parser.parse_args()
    base = args.base.rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in {"http", "https"}:
        fail("--base must be an http(s) URL")

    with urllib.request.urlopen(f"{base}/readyz", timeout=10) as response:
        print(f"readyz: {response.status} {json.loads(response.read())['status']}")

    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def get(path: str) -> str:
        with browser.open(f"{base}{path}", timeout=10) as response:
            return str(response.read().decode())

    def post_form(path: str, fields: dict[str, str], referer: str) -> tuple[str, str]:
        data = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(f"{base}{path}", data=data, headers={"Referer": f"{base}{referer}"})
        with browser.open(request, timeout=30) as response:
            return response.geturl(), str(response.read().decode())

    login_page = get("/accounts/login/")
    _url, dashboard = post_form("/accounts/login/", {"username": "clinician", "password": args.password,
                                                     "csrfmiddlewaretoken": csrf_from(login_page)}, "/accounts/login/")
    if "Signed in as" not in dashboard:
        fail("login as clinician did not reach the dashboard")
    form_page = get("/predict/diabetes/")
    result_url, result = post_form("/predict/diabetes/", {**FORM, "csrfmiddlewaretoken": csrf_from(form_page)},
                                   "/predict/diabetes/")
    probability = re.search(r'data-testid="probability">([^<]+)<', result)
    band = re.search(r'data-testid="risk-band">([^<]+)<', result)
    version = re.search(r'data-testid="model-version">([^<]+)<', result)
    if not (probability and band and version):
        fail(f"the result page at {result_url} shows no risk")
    print(f"web: clinician got {probability.group(1)} ({band.group(1)}) from {version.group(1)} at {result_url}")

    basic = b64encode(f"{args.client_id}:{args.client_secret}".encode()).decode()
    token_request = urllib.request.Request(
        f"{base}/o/token/",
        data=urllib.parse.urlencode({"grant_type": "client_credentials",
                                     "scope": "predictions:write predictions:read"}).encode(),
        headers={"Authorization": f"Basic {basic}"},
    )
    with urllib.request.urlopen(token_request, timeout=10) as response:
        token: dict[str, Any] = json.loads(response.read())
    print(f"token: {token['token_type']} expires_in={token['expires_in']} scope={token['scope']}")
    body = json.dumps({"use_case": "diabetes", "patient_id": "smoke-api-1", "features": API_FEATURES}).encode()
    api_request = urllib.request.Request(f"{base}/api/v1/predictions", data=body, headers={
        "Authorization": f"Bearer {token['access_token']}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(api_request, timeout=10) as response:
            status, prediction = response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        fail(f"POST /api/v1/predictions answered {exc.code}: {exc.read().decode()[:300]}")
    if status != 201:
        fail(f"POST /api/v1/predictions answered {status}")
    print(f"api: {status} probability={prediction['probability']:.4f} risk_band={prediction['risk_band']} "
          f"model_version={prediction['model_version']} audit_seq={prediction['audit_seq']}")
    print("OK")


if __name__ == "__main__":
    main()
