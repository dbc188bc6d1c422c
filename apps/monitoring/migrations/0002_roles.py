"""Gives model admins the monitoring pages (drift, realised performance, daily summaries, scoring and retraining runs)
and the right to request a retraining. Frozen here like apps/core's role migration."""

from django.db import migrations

ROLES = {
    "Model admins": ["view_driftcheck", "view_featuredrift", "view_performancesnapshot", "view_dailysummary",
                     "view_retrainingrun", "view_scoringrun", "request_retraining"],
}


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    app_config = apps.get_app_config("monitoring")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for codename in codenames:
            group.permissions.add(Permission.objects.get(content_type__app_label="monitoring", codename=codename))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group = Group.objects.filter(name=name).first()
        if group is not None:
            group.permissions.remove(*Permission.objects.filter(content_type__app_label="monitoring",
                                                                codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0001_initial"),
        ("core", "0001_roles"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
