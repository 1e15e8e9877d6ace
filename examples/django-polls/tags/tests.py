from django.test import TestCase
from django.utils import timezone
from polls.models import Question
from polls_site.testlog import record_database

from tags.models import Tag


class TagTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        record_database("TagTests")

    def test_the_seeded_tags_are_there(self):
        # inserted by the data migration tags.0002; tags.0003 gave them a color
        self.assertEqual(sorted(Tag.objects.values_list("name", flat=True)), ["databases", "general", "python"])
        self.assertEqual(set(Tag.objects.values_list("color", flat=True)), {"#808080"})

    def test_questions_can_be_tagged(self):
        question = Question.objects.create(question_text="Tagged?", pub_date=timezone.now())
        question.tags.add(*Tag.objects.filter(name__in=["python", "databases"]))
        self.assertEqual(sorted(t.name for t in question.tags.all()), ["databases", "python"])
        self.assertEqual(Tag.objects.get(name="python").questions.count(), 1)
