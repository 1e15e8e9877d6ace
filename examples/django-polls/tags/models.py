from django.db import models


class Tag(models.Model):
    name = models.CharField(max_length=40, unique=True)
    color = models.CharField(max_length=7, default="#808080")
    questions = models.ManyToManyField("polls.Question", related_name="tags", blank=True)

    def __str__(self):
        return self.name
