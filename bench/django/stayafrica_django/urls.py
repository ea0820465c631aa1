from django.urls import path

from bookings import views

urlpatterns = [
    path("api/v1/bookings", views.bookings),
    path("api/v1/properties", views.property_list),
    path("api/v1/properties/featured", views.featured),
    path("api/v1/properties/<int:property_id>", views.property_detail),
    path("api/v1/dashboard", views.get_user_dashboard),
    path("health", views.health),
]
