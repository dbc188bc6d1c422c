"""Creates the three roles (the public surface: README.md, docs/security.md) with their permissions.

The mapping is frozen here on purpose: a later change of roles is a new migration, so every database can say
which permissions each role had at each point of its history."""

from django.db import migrations

ROLES = {
    "Clinicians": [
        ("predictions", "add_prediction"),
        ("predictions", "view_prediction"),
    ],
    "Model admins": [
        ("registry", "view_modelversion"),
        ("registry", "change_modelversion"),
        ("registry", "promote_modelversion"),
        ("predictions", "view_prediction"),
    ],
    "Auditors": [
        ("audit", "view_auditevent"),
        ("audit", "export_auditevent"),
        ("registry", "view_modelversion"),
        ("predictions", "view_prediction"),
    ],
}


def create_roles(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after `migrate` finishes; make sure they exist before they are assigned.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for app_label, codename in perms:
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("audit", "0001_initial"),
        ("registry", "0001_initial"),
        ("predictions", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
