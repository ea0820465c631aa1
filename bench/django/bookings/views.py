"""The measured endpoints, written the way the guide writes them."""


from django.conf import settings
from django.db import IntegrityError, transaction
from django.shortcuts import get_object_or_404
from django.utils import timezone
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from utils.cache_helpers import (
    cache_query_result,
    cache_user_data,
    cache_view_result,
    get_user_data,
    increment_counter,
    invalidate_user_cache,
    is_rate_limited,
)

from .errors import error
from .models import Booking, Property
from .serializers import BookingCreateSerializer, BookingSerializer, PropertySerializer
from .tasks import send_booking_confirmation

MAX_NIGHTS = 90


def _rate(spec):
    """`5/hour` -> (5, 3600), DRF's format."""
    num, period = spec.split("/")
    return int(num), {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]


BOOKING_LIMIT, BOOKING_PERIOD = _rate(settings.THROTTLE_BOOKING)


@api_view(["GET"])
def health(request):
    return Response({"status": "ok"})


@api_view(["GET", "POST"])
@permission_classes([IsAuthenticated])
def bookings(request):
    if request.method == "GET":
        return _list_bookings(request)
    return create_booking(request)


def _list_bookings(request):
    page = int(request.query_params.get("page", 1))
    size = int(request.query_params.get("page_size", 20))
    qs = Booking.objects.filter(guest_id=request.user.id).order_by("-created_at", "-id")
    rows = qs[(page - 1) * size : page * size]
    return Response({"count": qs.count(), "page": page,
                     "results": BookingSerializer(rows, many=True).data})


def create_booking(request):
    # Limit booking attempts per user (the guide's example, its limit raised
    # by the benchmark like the Rust service's).
    if is_rate_limited(f"booking:{request.user.id}", limit=BOOKING_LIMIT, period=BOOKING_PERIOD):
        return error(429, "Too many booking attempts", headers={"Retry-After": str(BOOKING_PERIOD)})

    body = BookingCreateSerializer(data=request.data)
    if not body.is_valid():
        return error(400, "invalid request body", {k: str(v[0]) for k, v in body.errors.items()})
    data = body.validated_data
    check_in, check_out, guests = data["check_in"], data["check_out"], data["guests"]
    errors = {}
    if check_in < timezone.now().date():
        errors["check_in"] = "must be today or later"
    if check_out <= check_in:
        errors["check_out"] = "must be after check_in"
    elif (check_out - check_in).days > MAX_NIGHTS:
        errors["check_out"] = f"a stay is at most {MAX_NIGHTS} nights"

    try:
        with transaction.atomic():
            # The property row locked against a concurrent delete; overlapping
            # bookings are refused by the database's exclusion constraint.
            prop = (Property.objects.select_for_update()
                    .filter(pk=data["property_id"], deleted_at__isnull=True).first())
            if prop is None:
                errors["property_id"] = "no such property"
            elif prop.host_id == request.user.id:
                errors["property_id"] = "hosts cannot book their own property"
            elif not 1 <= guests <= prop.max_guests:
                errors["guests"] = f"must be between 1 and {prop.max_guests}"
            if errors:
                return error(422, "validation failed", errors)
            booking = Booking.objects.create(
                property_id=prop.id,
                guest_id=request.user.id,
                check_in=check_in,
                check_out=check_out,
                guests=guests,
                total_cents=prop.price_cents * (check_out - check_in).days,
                status="confirmed",
                created_at=timezone.now(),
            )
            # The confirmation email once the booking is committed (Celery).
            transaction.on_commit(lambda: send_booking_confirmation.delay(booking.id))
    except IntegrityError as e:
        if getattr(e.__cause__, "sqlstate", None) == "23P01":  # exclusion_violation
            return error(409, "these dates overlap an existing booking")
        raise

    invalidate_user_cache(request.user.id)
    return Response(BookingSerializer(booking).data, status=201)


@api_view(["GET"])
def featured(request):
    # Cache featured properties for 1 hour.
    data = cache_query_result(
        "featured_properties",
        lambda: PropertySerializer(
            Property.objects.filter(is_featured=True, deleted_at__isnull=True).order_by("id"),
            many=True,
        ).data,
        timeout=3600,
    )
    return Response(data)


@api_view(["GET"])
@cache_view_result(timeout=600, key_prefix="property_list")
def property_list(request):
    q = request.query_params
    page = int(q.get("page", 1))
    size = int(q.get("page_size", 20))
    qs = Property.objects.filter(deleted_at__isnull=True).order_by("id")
    if "city" in q:
        qs = qs.filter(city__iexact=q["city"])
    if "country" in q:
        qs = qs.filter(country__iexact=q["country"])
    rows = qs[(page - 1) * size : page * size]
    return Response({"count": qs.count(), "page": page,
                     "results": PropertySerializer(rows, many=True).data})


@cache_view_result(timeout=600, key_prefix="property_detail")
def _property_detail(request, property_id):
    prop = get_object_or_404(Property, id=property_id, deleted_at__isnull=True)
    return Response(PropertySerializer(prop).data)


@api_view(["GET"])
def property_detail(request, property_id):
    # Increment view counter.
    views = increment_counter(f"property_views:{property_id}")
    response = _property_detail(request, property_id)
    # Update database periodically (every 100 views).
    if views % 100 == 0:
        Property.objects.filter(id=property_id).update(view_count=views)
    return response


@api_view(["GET"])
@permission_classes([IsAuthenticated])
def get_user_dashboard(request):
    user_data = get_user_data(request.user.id)
    if user_data is None:
        user_data = {
            "bookings": fetch_user_bookings(request.user),
            "stats": calculate_user_stats(request.user),
            "recommendations": get_recommendations(request.user),
        }
        cache_user_data(request.user.id, user_data, timeout=3600)
    return Response(user_data)


def fetch_user_bookings(user):
    rows = Booking.objects.filter(guest_id=user.id).order_by("-created_at", "-id")[:10]
    return BookingSerializer(rows, many=True).data


def calculate_user_stats(user):
    today = timezone.now().date()
    confirmed = list(Booking.objects.filter(guest_id=user.id, status="confirmed"))
    spent = sum(b.total_cents for b in confirmed)
    return {
        "total_bookings": len(confirmed),
        "upcoming_bookings": sum(1 for b in confirmed if b.check_in >= today),
        "nights_booked": sum((b.check_out - b.check_in).days for b in confirmed),
        "total_spent": f"{spent // 100}.{spent % 100:02d}",
    }


def get_recommendations(user):
    booked = Booking.objects.filter(guest_id=user.id, status="confirmed")
    cities = set(booked.values_list("property__city", flat=True))
    featured = list(Property.objects.filter(is_featured=True, deleted_at__isnull=True)
                    .exclude(id__in=booked.values("property_id")).order_by("id"))
    featured.sort(key=lambda p: (p.city not in cities, p.id))
    return PropertySerializer(featured[:5], many=True).data
