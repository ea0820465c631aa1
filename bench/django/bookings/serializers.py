from rest_framework import serializers

from .models import Booking, Property


class MoneyField(serializers.DecimalField):
    def __init__(self, **kwargs):
        super().__init__(max_digits=12, decimal_places=2, read_only=True, **kwargs)


class PropertySerializer(serializers.ModelSerializer):
    host_id = serializers.IntegerField(read_only=True)
    price_per_night = MoneyField()

    class Meta:
        model = Property
        fields = ["id", "host_id", "title", "description", "city", "country", "price_per_night",
                  "max_guests", "is_featured", "view_count", "created_at", "updated_at"]


class BookingSerializer(serializers.ModelSerializer):
    property_id = serializers.IntegerField(read_only=True)
    guest_id = serializers.IntegerField(read_only=True)
    total_price = MoneyField()

    class Meta:
        model = Booking
        fields = ["id", "property_id", "guest_id", "check_in", "check_out", "guests",
                  "total_price", "status", "created_at"]


class BookingCreateSerializer(serializers.Serializer):
    """The request body of POST /api/v1/bookings (API.md)."""

    property_id = serializers.IntegerField(min_value=1)
    check_in = serializers.DateField(input_formats=["%Y-%m-%d"])
    check_out = serializers.DateField(input_formats=["%Y-%m-%d"])
    guests = serializers.IntegerField()
