"""Signs a user in for the benchmark: creates a Django session in the
session cache (as `django.contrib.auth.login` does) and prints the cookie
header value, with a CSRF cookie whose token the client sends back in
`X-CSRFToken` (DRF's SessionAuthentication checks CSRF on POSTs)."""

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.cache import SessionStore
from django.core.management.base import BaseCommand
from django.utils.crypto import get_random_string


class Command(BaseCommand):
    help = "Print `sessionid=...; csrftoken=...` and the CSRF token for a user"
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("email")

    def handle(self, *args, email, **options):
        user = get_user_model().objects.get(email=email)
        session = SessionStore()
        session[SESSION_KEY] = user._meta.pk.value_to_string(user)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        csrf = get_random_string(32)
        self.stdout.write(f"sessionid={session.session_key}; csrftoken={csrf} {csrf}")
