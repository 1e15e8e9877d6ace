"""Data migration: every question gets a slug, and a fresh database starts with a sample poll."""

from django.db import migrations
from django.utils import timezone
from django.utils.text import slugify

SAMPLE = ("What's your favourite database?", ["PostgreSQL", "SQLite", "Something else"])


def seed_and_backfill(apps, schema_editor):
    Question = apps.get_model("polls", "Question")
    Choice = apps.get_model("polls", "Choice")
    text, choices = SAMPLE
    question, created = Question.objects.get_or_create(question_text=text, defaults={"pub_date": timezone.now()})
    if created:
        Choice.objects.bulk_create(Choice(question=question, choice_text=choice) for choice in choices)
    for question in Question.objects.filter(slug__isnull=True).order_by("pk"):
        question.slug = f"{slugify(question.question_text)[:70]}-{question.pk}"
        question.save(update_fields=["slug"])


def unseed(apps, schema_editor):
    apps.get_model("polls", "Question").objects.filter(question_text=SAMPLE[0]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("polls", "0002_question_slug"),
    ]

    operations = [
        migrations.RunPython(seed_and_backfill, unseed),
    ]
