"""Recording an observed outcome becomes its own permission, `patients.add_outcome` (web outcome form, outcomes API
with a person's token), instead of riding on `predictions.add_prediction`. Clinicians, who recorded outcomes under
the old rule, keep the right; no other role gains it. Frozen here like apps/core's role migration."""

from django.db import migrations

ROLES = {
    "Clinicians": ["add_outcome"],
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
        ("patients", "0004_care_team_roles"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
