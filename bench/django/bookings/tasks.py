from celery import shared_task
from django.core.mail import send_mail

from .models import Booking


# No result to keep: the email is the effect (and the Redis result backend
# would subscribe every caller to the task's result channel).
@shared_task(ignore_result=True)
def send_booking_confirmation(booking_id):
    booking = Booking.objects.select_related("guest", "property").get(pk=booking_id)
    send_mail(
        "Your StayAfrica booking",
        f"{booking.property.title}: {booking.check_in} to {booking.check_out}.",
        None,
        [booking.guest.email],
    )
