"""Data migration: the tags every installation starts with."""

from django.db import migrations

TAGS = ["general", "databases", "python"]


def seed(apps, schema_editor):
    Tag = apps.get_model("tags", "Tag")
    Tag.objects.bulk_create([Tag(name=name) for name in TAGS], ignore_conflicts=True)


def unseed(apps, schema_editor):
    apps.get_model("tags", "Tag").objects.filter(name__in=TAGS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("tags", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(seed, unseed),
    ]
