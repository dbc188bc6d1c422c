"""CdsClient.fhir_base_urls: the FHIR servers a CDS client may name as `fhirServer`. Existing clients get an empty list
(no fhirServer accepted until staff register one; calls with a prefetch work as before)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("predictions", "0003_drop_unused_pattern_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="cdsclient",
            name="fhir_base_urls",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="FHIR base URLs this EHR may name as `fhirServer` in a call, one per line (e.g. "
                "https://ehr.example.org/fhir/r4). A call's fhirServer must have the same scheme, host and port and "
                "a path equal to or below one of these; anything else is refused (412) before any connection, and "
                "the EHR's access token is only ever sent there. http/https only; no user:password@, query, "
                "'..' segments or percent-encoding. Empty: calls must carry a prefetch.",
            ),
        ),
    ]
