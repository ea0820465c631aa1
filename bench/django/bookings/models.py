"""The Rust service's PostgreSQL schema (migrations/postgres), read and
written as it is: `managed = False`, so both systems serve the same rows."""

import builtins
from decimal import Decimal

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.db import models


class User(AbstractBaseUser):
    email = models.TextField(unique=True)
    password = models.TextField(db_column="password_hash")
    full_name = models.TextField()
    role = models.TextField()
    created_at = models.DateTimeField()
    last_login = None  # not in the schema

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["full_name"]
    objects = BaseUserManager()

    class Meta:
        managed = False
        db_table = "users"


class Property(models.Model):
    host = models.ForeignKey(User, models.DO_NOTHING, related_name="properties")
    title = models.TextField()
    description = models.TextField()
    city = models.TextField()
    country = models.TextField()
    price_cents = models.BigIntegerField()
    max_guests = models.IntegerField()
    is_featured = models.BooleanField(default=False)
    view_count = models.BigIntegerField(default=0)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "properties"

    @property
    def price_per_night(self):
        return Decimal(self.price_cents).scaleb(-2)


class Booking(models.Model):
    property = models.ForeignKey(Property, models.DO_NOTHING, related_name="bookings")
    guest = models.ForeignKey(User, models.DO_NOTHING, related_name="bookings")
    check_in = models.DateField()
    check_out = models.DateField()
    guests = models.IntegerField()
    total_cents = models.BigIntegerField()
    status = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "bookings"

    @builtins.property  # `property` is a field here
    def total_price(self):
        return Decimal(self.total_cents).scaleb(-2)
