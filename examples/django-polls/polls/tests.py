import datetime

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.test import TestCase, TransactionTestCase
from django.utils import timezone
from polls_site.testlog import record_database

from polls.models import Choice, Question


def create_question(text, days):
    return Question.objects.create(question_text=text, pub_date=timezone.now() + datetime.timedelta(days=days))


class QuestionModelTests(TestCase):
    def test_was_published_recently_with_future_question(self):
        self.assertIs(create_question("Future?", 30).was_published_recently(), False)

    def test_was_published_recently_with_old_question(self):
        self.assertIs(create_question("Old?", -2).was_published_recently(), False)

    def test_was_published_recently_with_recent_question(self):
        self.assertIs(create_question("Recent?", 0).was_published_recently(), True)

    def test_a_new_question_gets_a_unique_slug(self):
        first, second = create_question("Same text", 0), create_question("Same text", 0)
        self.assertNotEqual(first.slug, second.slug)
        self.assertTrue(first.slug.startswith("same-text-"))

    def test_slugs_are_unique_in_the_database(self):
        question = create_question("Taken", 0)
        with self.assertRaises(IntegrityError), transaction.atomic():
            Question.objects.create(question_text="Other", pub_date=timezone.now(), slug=question.slug)


class SeededPollTests(TestCase):
    """What the data migration polls.0003 left in every fresh database."""

    @classmethod
    def setUpTestData(cls):
        record_database("SeededPollTests")
        cls.sample = Question.objects.get(question_text="What's your favourite database?")

    def test_the_sample_poll_has_its_choices_in_order(self):
        self.assertEqual([c.choice_text for c in self.sample.choices.all()],
                         ["PostgreSQL", "SQLite", "Something else"])

    def test_the_sample_poll_was_given_a_slug(self):
        self.assertEqual(self.sample.slug, f"whats-your-favourite-database-{self.sample.pk}")

    def test_choices_are_ordered_by_position(self):
        question = create_question("Order?", 0)
        Choice.objects.create(question=question, choice_text="second", position=2)
        Choice.objects.create(question=question, choice_text="first", position=1)
        self.assertEqual([c.choice_text for c in question.choices.all()], ["first", "second"])

    def test_it_runs_on_postgresql(self):
        self.assertEqual(connection.vendor, "postgresql")


class VotingTests(TransactionTestCase):
    """Real commits (no test transaction): the database is flushed afterwards, and the seeded rows
    come back from the serialized copy Django keeps of the test database."""

    serialized_rollback = True

    def test_concurrent_votes_are_counted_in_the_database(self):
        record_database("VotingTests")
        choice = Choice.objects.filter(question__question_text__startswith="What's your favourite").first()
        for _ in range(3):
            with transaction.atomic():
                Choice.objects.filter(pk=choice.pk).update(votes=F("votes") + 1)
        choice.refresh_from_db()
        self.assertEqual(choice.votes, 3)
