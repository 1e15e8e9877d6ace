import datetime

from django.db import models
from django.utils import timezone
from django.utils.text import slugify


class Question(models.Model):
    question_text = models.CharField(max_length=200)
    pub_date = models.DateTimeField("date published")
    slug = models.SlugField(max_length=80, unique=True)

    def __str__(self):
        return self.question_text

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        if not self.slug:  # the primary key makes it unique, so it comes after the first insert
            self.slug = f"{slugify(self.question_text)[:70]}-{self.pk}"
            super().save(update_fields=["slug"])

    def was_published_recently(self):
        now = timezone.now()
        return now - datetime.timedelta(days=1) <= self.pub_date <= now


class Choice(models.Model):
    question = models.ForeignKey(Question, on_delete=models.CASCADE, related_name="choices")
    choice_text = models.CharField(max_length=200)
    votes = models.IntegerField(default=0)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self):
        return self.choice_text
