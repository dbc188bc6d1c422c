"""Static security checks: bandit finds nothing of high severity in the code we ship (ruff's S rules run in
`make lint`/`make test` as well)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bandit_reports_no_high_severity_issue() -> None:
    bandit = Path(sys.executable).parent / "bandit"
    result = subprocess.run([str(bandit), "-r", "apps", "ml", "clinpredict", "-f", "json", "-q"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    report = json.loads(result.stdout)
    high = [f"{i['filename']}:{i['line_number']} {i['test_id']} {i['issue_text']}"
            for i in report["results"] if i["issue_severity"] == "HIGH"]

    assert report["metrics"]["_totals"]["loc"] > 1000  # it really scanned the code
    assert not high, high
