"""Object storage against a real S3-API server: moto's standalone server (`python -m moto.server`) as its own process
on a free loopback port, started once per session. Nothing is mocked in this process: django-storages and boto3 talk
HTTP to that server exactly as they would to a bucket. Each test gets a prefix of its own in one bucket."""

import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

BUCKET = "clinpredict-artifacts-test"
REGION = "us-east-1"
ACCESS_KEY = "moto-test-access-key"  # moto accepts any key; these never leave 127.0.0.1
SECRET_KEY = "moto-test-secret-key"  # noqa: S105


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def keys(self, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def env(self, prefix: str) -> dict[str, str]:
        """The environment a replica needs to use this bucket under `prefix` (clinpredict/settings/base.py)."""
        return {"ARTIFACT_S3_BUCKET": BUCKET, "ARTIFACT_S3_ENDPOINT_URL": self.endpoint_url,
                "ARTIFACT_S3_REGION": REGION, "ARTIFACT_S3_PREFIX": prefix,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory, servers: Any) -> Iterator[S3Server]:
    port = servers.free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**servers.clean_environ(), "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto.server exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{server.endpoint_url}/moto-api/", timeout=1).close()  # noqa: S310 - loopback
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto.server did not answer: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def s3_storages(server: S3Server, prefix: str) -> dict[str, Any]:
    """The `models` and `audit_backups` entries clinpredict/settings/base.py builds for this bucket and prefix."""
    def entry(folder: str) -> dict[str, Any]:
        return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
            "bucket_name": BUCKET, "location": f"{prefix}/{folder}", "default_acl": None, "file_overwrite": False,
            "endpoint_url": server.endpoint_url, "region_name": REGION, "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY}}
    return {"models": entry("models"), "audit_backups": entry("audit-backups")}


@pytest.fixture
def s3_prefix(s3_server: S3Server, settings: Any) -> str:
    """This test's prefix in the bucket, and this process's `models` and `audit_backups` storages pointed at it."""
    prefix = f"test-{uuid.uuid4().hex}"
    settings.STORAGES = {**settings.STORAGES, **s3_storages(s3_server, prefix)}
    return prefix
