from django.urls import path

from envelopes.requests.api.channels import ChannelRequestsView, RegisterChannelView, RequestDetailView, RequestWaitView

urlpatterns = [
    path("register-channel", RegisterChannelView.as_view(), name="register-channel"),
    path("channels/<str:channel_id>/requests", ChannelRequestsView.as_view(), name="channel-requests"),
    path("requests/<str:request_id>", RequestDetailView.as_view(), name="channel-request"),
    path("requests/<str:request_id>/wait", RequestWaitView.as_view(), name="channel-request-wait"),
]
