from django.contrib.auth.models import Group, Permission, User
from django.test import TestCase
from polls_site.testlog import record_database

from accounts.models import Profile


class ProfileTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        record_database("ProfileTests")
        cls.user = User.objects.create_user("ada", "ada@example.com", "secret")

    def test_a_profile_defaults_to_utc(self):
        profile = Profile.objects.create(user=self.user, display_name="Ada")
        self.assertEqual(profile.timezone, "UTC")
        self.assertEqual(self.user.profile, profile)

    def test_the_moderators_group_exists(self):
        # created by the data migration accounts.0003
        group = Group.objects.get(name="moderators")
        self.user.groups.add(group)
        self.assertTrue(self.user.groups.filter(name="moderators").exists())

    def test_permissions_exist_for_the_projects_models(self):
        # created by Django's post_migrate handler, as in any migrated database
        codenames = set(Permission.objects.filter(content_type__app_label__in=["polls", "accounts", "tags"])
                        .values_list("codename", flat=True))
        self.assertLessEqual({"add_question", "change_choice", "view_profile", "delete_tag"}, codenames)
