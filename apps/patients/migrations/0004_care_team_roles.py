"""Auditors and model admins see every prediction without break-the-glass, as before care teams existed; clinicians
see their own and their care-team patients' predictions. Frozen here like apps/core's role migration."""

from django.db import migrations

ROLES = {
    "Auditors": ["view_all_predictions"],
    "Model admins": ["view_all_predictions"],
}


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    app_config = apps.get_app_config("patients")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for codename in codenames:
            group.permissions.add(Permission.objects.get(content_type__app_label="patients", codename=codename))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group = Group.objects.filter(name=name).first()
        if group is not None:
            group.permissions.remove(*Permission.objects.filter(content_type__app_label="patients",
                                                                codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [
        ("patients", "0003_care_team"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
