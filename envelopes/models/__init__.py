from envelopes.models.channels import Channel, ChannelInvite
from envelopes.models.deliveries import Delivery
from envelopes.models.envelope import Envelope
from envelopes.models.gate import GateApproval, GateApprovalState, GateExecution, SessionBudget
from envelopes.models.requests import Approval, ApprovalRequest, Tweak

__all__ = [
    "Approval",
    "ApprovalRequest",
    "Channel",
    "ChannelInvite",
    "Delivery",
    "Envelope",
    "GateApproval",
    "GateApprovalState",
    "GateExecution",
    "SessionBudget",
    "Tweak",
]
